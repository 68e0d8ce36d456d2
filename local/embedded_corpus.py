"""The embedded default corpus: who says what, in which room, and its audio.

- **source**: WordNet's example sentences (``local.source_text``) read, clean, by espeak-ng.
  A speaker is an accent + variant (``-v en-us+m3``), a rate (``-s``) and a pitch (``-p``);
  test speakers use accent + variant pairs no training speaker has.
- **target**: smart-speaker commands (``local.target_grammar``) read by flite voices, through
  sox reverb and background noise. A speaker is a voice + ``duration_stretch`` +
  ``int_f0_target_mean``; train and dev share the training voices' speakers, test has the
  held-out voices and fresh settings of the training voices.

``plan_corpus`` turns a domain's config and a seed into one ``SplitPlan`` per split. A plan
says what its ``i``-th utterance is from ``i`` alone, so parallel synthesis gives the same
corpus however the work is scheduled; ``synthesize`` makes the audio::

    plans = plan_corpus("target", load_config([])["corpus"]["target"], seed=1234)
    utt = plans["test"].utterance(0)    # Utterance(id='tgt-spk07-test-00000', ...)
    audio = synthesize(utt)             # float32, 16 kHz mono, |peak| <= 1

``write_corpus`` is the ``corpus`` stage (Kaldi data dirs of 16 kHz WAVs, one per split);
``write_noise`` the ``noise`` stage's recordings.
"""
import functools
import random
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from shlex import join as shell_join
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

import soundfile as sf
from lhotse import AudioSource, CutSet, Recording, RecordingSet
from tqdm import tqdm

from local.source_text import WORDNET_DIR, WORDNET_FILES, wordnet_sentences
from local.target_grammar import sample_sentences
from speechtune.data.tables import write_table
from speechtune.errors import ConfigError, StageError
from speechtune.provenance import StageRun, atomic_dir

SAMPLE_RATE = 16000
SPLITS = {"source": ("train", "test"), "target": ("train", "dev", "test")}
TOOLS = {"source": ("espeak-ng", "sox"), "target": ("flite", "sox")}
DEBIAN_PACKAGE = {"espeak-ng": "espeak-ng", "flite": "flite", "sox": "sox"}

# -R seeds sox's random generators (dither, noise), so a rerun is byte-identical;
# -G lowers the gain where reverb or resampling would clip.
SOX = ("sox", "-R", "-G")
SOX_FLOAT_OUTPUT = ("-t", "f32", "-r", str(SAMPLE_RATE), "-c", "1", "-")
NOISE_SECONDS = 60


@dataclass(frozen=True)
class Speaker:
    id: str                   # Kaldi speaker id, e.g. "src-spk03"
    voice: str                # what spk2voice says, e.g. "espeak-ng voice=en-us+m3 rate=160 pitch=45"
    command: Tuple[str, ...]  # the synthesizer's command line; the text goes last


@dataclass(frozen=True)
class Room:
    reverberance: float       # sox reverb, percent
    room_scale: float         # sox reverb, percent
    noise_type: str           # sox synth noise type
    snr_db: float
    noise_offset: float       # where the noise starts in its recording, 0..1 of the free length


@dataclass(frozen=True)
class Utterance:
    id: str
    speaker: Speaker
    text: str                 # the normalized transcript
    room: Optional[Room]      # None: clean


@dataclass(frozen=True)
class SplitPlan:
    """What a split's utterances are drawn from: its speakers, its sentences in reading
    order and, for a noisy domain, the config's room ranges."""

    domain: str
    split: str
    seed: int
    speakers: Sequence[Speaker]
    sentences: Sequence[str]
    room_ranges: Optional[Mapping[str, Any]] = None

    def __post_init__(self) -> None:
        if not self.speakers or not self.sentences:
            raise ConfigError(
                f"corpus.{self.domain}: split '{self.split}' has {len(self.speakers)} speakers and "
                f"{len(self.sentences)} sentences; it needs some of each (raise the voice counts "
                f"or test_sentence_fraction)"
            )

    def utterance(self, i: int) -> Utterance:
        """The ``i``-th utterance of the split; depends on the seed, the split and ``i`` only."""
        n_sentences = len(self.sentences)
        # Speakers take turns, so every one is heard; the turn shifts each time the sentences
        # wrap around, so a repeated sentence gets a new reader.
        speaker = self.speakers[(i + i // n_sentences) % len(self.speakers)]
        room = None
        if self.room_ranges is not None:
            room = _draw_room(self.room_ranges, random.Random(f"{self.seed}/{self.domain}/{self.split}/{i}"))
        return Utterance(f"{speaker.id}-{self.split}-{i:05d}", speaker, self.sentences[i % n_sentences], room)


def _draw_room(ranges: Mapping[str, Any], rng: random.Random) -> Room:
    return Room(
        reverberance=round(rng.uniform(*ranges["reverberance_range"]), 1),
        room_scale=round(rng.uniform(*ranges["room_scale_range"]), 1),
        noise_type=rng.choice(ranges["noise_types"]),
        snr_db=round(rng.uniform(*ranges["snr_db_range"]), 2),
        noise_offset=rng.random(),
    )


def _hold_out(sentences: Sequence[str], fraction: float) -> Tuple[List[str], List[str]]:
    """(held out, kept): the first ``fraction`` of ``sentences`` (already in random order)."""
    n = round(fraction * len(sentences))
    return list(sentences[:n]), list(sentences[n:])


# ---------------------------------------------------------------------------------------------
# Environment


def check_environment(domain: str, config: Mapping[str, Any]) -> None:
    """Fail early, naming the Debian package to install, when a synthesizer or WordNet is
    missing, and when the config names a flite voice this flite lacks (flite would silently
    read with its default voice instead)."""
    for tool in TOOLS[domain]:
        if shutil.which(tool) is None:
            raise StageError(_install_hint(f"{tool} not found", DEBIAN_PACKAGE[tool]))
    if domain == "source":
        for name in WORDNET_FILES:
            if not (WORDNET_DIR / name).is_file():
                raise StageError(_install_hint(f"{WORDNET_DIR / name} not found", "wordnet-base"))
    else:
        # `flite -lv` prints "Voices available: kal awb_time kal16 awb rms slt".
        available = _run(["flite", "-lv"]).decode().split(":", 1)[1].split()
        for voice in [*config["train_voices"], *config["test_voices"]]:
            if voice not in available:
                raise ConfigError(
                    f"corpus.target: flite has no voice '{voice}'; it has {', '.join(available)}"
                )


def _install_hint(problem: str, package: str) -> str:
    return f"{problem}: install the Debian package with `apt-get install {package}` (or run `make setup`)"


def tool_versions(domain: str) -> Dict[str, str]:
    """What each synthesizer says with ``--version``, for provenance."""
    # Not _run: `flite --version` prints its version and exits with status 1.
    return {
        tool: " ".join(subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.split())
        for tool in TOOLS[domain]
    }


# ---------------------------------------------------------------------------------------------
# Speakers


def _source_speakers(config: Mapping[str, Any], seed: int) -> Tuple[List[Speaker], List[Speaker]]:
    """(train speakers, test speakers): distinct accent + variant pairs for all of them, so no
    test speaker shares one with a training speaker."""
    n_train, n_test = config["train_voices"], config["test_voices"]
    pairs = [(accent, variant) for accent in config["accents"] for variant in config["variants"]]
    if n_train + n_test > len(pairs):
        raise ConfigError(
            f"corpus.source: {n_train} + {n_test} voices need as many accent+variant pairs, and "
            f"accents x variants gives {len(pairs)}: add accents or variants, or ask for fewer voices"
        )
    rng = random.Random(f"{seed}/source/voices")
    speakers = []
    for k, (accent, variant) in enumerate(rng.sample(pairs, n_train + n_test), start=1):
        rate = rng.randint(*map(int, config["rate_range"]))
        pitch = rng.randint(*map(int, config["pitch_range"]))
        speakers.append(Speaker(
            id=f"src-spk{k:02d}",
            voice=f"espeak-ng voice={accent}+{variant} rate={rate} pitch={pitch}",
            command=("espeak-ng", "-v", f"{accent}+{variant}", "-s", str(rate), "-p", str(pitch), "--stdout"),
        ))
    return speakers[:n_train], speakers[n_train:]


def _target_speakers(config: Mapping[str, Any], seed: int) -> Tuple[List[Speaker], List[Speaker]]:
    """(train/dev speakers, test speakers): ``settings_per_voice`` settings of each training
    voice; then the same of each held-out voice plus fresh settings of the training voices.

    Checked with flite 2.2: ``duration_stretch`` changes every voice but awb_time (a
    limited-domain voice); ``int_f0_target_mean`` sets the measured median F0 of kal, kal16,
    awb and slt, and rms ignores it (so rms speakers differ by stretch only).
    """
    train_voices, test_voices = config["train_voices"], config["test_voices"]
    overlap = sorted(set(train_voices) & set(test_voices))
    if overlap:
        raise ConfigError(f"corpus.target: test_voices must be held out, but {overlap} are train_voices too")
    n = config["settings_per_voice"]
    rng = random.Random(f"{seed}/target/voices")
    drawn = set()

    def fresh_setting(voice: str) -> Tuple[str, float, int]:
        while True:  # rounding could repeat a setting; a repeat would be the same speaker twice
            setting = (voice, round(rng.uniform(*config["duration_stretch_range"]), 2),
                       round(rng.uniform(*config["f0_mean_range"])))
            if setting not in drawn:
                drawn.add(setting)
                return setting

    train = [fresh_setting(v) for v in train_voices for _ in range(n)]
    test = [fresh_setting(v) for v in [*test_voices, *train_voices] for _ in range(n)]
    speakers = [
        Speaker(
            id=f"tgt-spk{k:02d}",
            voice=f"flite voice={voice} duration_stretch={stretch} int_f0_target_mean={f0}",
            command=("flite", "-voice", voice, "--setf", f"duration_stretch={stretch}",
                     "--setf", f"int_f0_target_mean={f0}", "-o", "/dev/stdout", "-t"),
        )
        for k, (voice, stretch, f0) in enumerate(train + test, start=1)
    ]
    return speakers[:len(train)], speakers[len(train):]


# ---------------------------------------------------------------------------------------------
# Plans


def plan_corpus(domain: str, config: Mapping[str, Any], seed: int) -> Dict[str, SplitPlan]:
    """One ``SplitPlan`` per split of ``domain``, from its config section ``corpus.<domain>``."""
    if domain == "source":
        return _plan_source(config, seed)
    if domain == "target":
        return _plan_target(config, seed)
    raise ValueError(f"unknown domain {domain!r}; expected one of {sorted(SPLITS)}")


def _plan_source(config: Mapping[str, Any], seed: int) -> Dict[str, SplitPlan]:
    sentences = wordnet_sentences(config["min_words"], config["max_words"], config["vocabulary_size"])
    random.Random(f"{seed}/source/sentences").shuffle(sentences)
    test_sentences, train_sentences = _hold_out(sentences, config["test_sentence_fraction"])
    train_speakers, test_speakers = _source_speakers(config, seed)
    return {
        "train": SplitPlan("source", "train", seed, train_speakers, train_sentences),
        "test": SplitPlan("source", "test", seed, test_speakers, test_sentences),
    }


def _plan_target(config: Mapping[str, Any], seed: int) -> Dict[str, SplitPlan]:
    # Held out per intent, so dev and test ask for timers and weather as often as train does.
    pools: Dict[str, List[str]] = {"train": [], "dev": [], "test": []}
    for sentences in sample_sentences(seed).values():
        held, kept = _hold_out(sentences, config["test_sentence_fraction"])
        pools["train"] += kept
        pools["dev"] += held[0::2]
        pools["test"] += held[1::2]
    for split, pool in pools.items():
        random.Random(f"{seed}/target/{split}/order").shuffle(pool)  # interleave the intents
    train_speakers, test_speakers = _target_speakers(config, seed)
    speakers = {"train": train_speakers, "dev": train_speakers, "test": test_speakers}
    return {split: SplitPlan("target", split, seed, speakers[split], pools[split], config) for split in pools}


# ---------------------------------------------------------------------------------------------
# Audio


def _run(command: Sequence[str], stdin: Optional[bytes] = None) -> bytes:
    """Run ``command`` and return its stdout; a failure or no output is a StageError that
    shows the command and its stderr."""
    proc = subprocess.run(list(command), input=stdin, capture_output=True)
    if proc.returncode != 0 or not proc.stdout:
        raise StageError(
            f"`{shell_join(command)}` failed (exit status {proc.returncode}, "
            f"{len(proc.stdout)} bytes of output): {proc.stderr.decode(errors='replace').strip()}"
        )
    return proc.stdout


def synthesize(utt: Utterance) -> np.ndarray:
    """The utterance's audio: float32, 16 kHz mono, peak at most 1."""
    # Lower case: both synthesizers spell out words written in capitals ("US" as "U S").
    wav = _run([*utt.speaker.command, utt.text.lower()])
    effects = []
    if utt.room is not None:
        effects = ["reverb", str(utt.room.reverberance), "50", str(utt.room.room_scale)]
    audio = np.frombuffer(_run([*SOX, "-t", "wav", "-", *SOX_FLOAT_OUTPUT, *effects], stdin=wav), np.float32)
    if utt.room is not None:
        audio = mix_at_snr(audio, noise_clip(utt.room, len(audio)), utt.room.snr_db)
    peak = float(np.max(np.abs(audio)))
    return audio / peak if peak > 1 else audio


@functools.lru_cache(maxsize=None)
def noise_recording(noise_type: str) -> np.ndarray:
    """``NOISE_SECONDS`` of sox's ``noise_type`` at 16 kHz, the same on every run (sox -R)."""
    return np.frombuffer(
        _run([*SOX, "-n", *SOX_FLOAT_OUTPUT, "synth", str(NOISE_SECONDS), noise_type]), np.float32
    )


def noise_clip(room: Room, num_samples: int) -> np.ndarray:
    """``num_samples`` of the room's noise, from ``room.noise_offset`` into its recording."""
    recording = noise_recording(room.noise_type)
    start = int(room.noise_offset * max(0, len(recording) - num_samples))
    return np.resize(recording[start:], num_samples)  # repeats the recording if it is too short


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech`` plus ``noise`` scaled so that the mixture's SNR, from powers over the whole
    utterance, is exactly ``snr_db``.

    >>> rng = np.random.default_rng(0)
    >>> speech, noise = rng.standard_normal(16000), rng.standard_normal(16000)
    >>> mixed = mix_at_snr(speech, noise, snr_db=10.0)
    >>> round(10 * np.log10(np.mean(speech ** 2) / np.mean((mixed - speech) ** 2)), 3)
    10.0
    """
    speech_power = np.mean(np.square(speech, dtype=np.float64))
    noise_power = np.mean(np.square(noise, dtype=np.float64))
    gain = np.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    return (speech + gain * noise).astype(speech.dtype)


def synthesize_split(
    plan: SplitPlan, minutes: float, wav_dir: Path, workers: int
) -> List[Tuple[Utterance, float]]:
    """Synthesize ``plan``'s utterances 0, 1, 2, ... into ``wav_dir`` until they add up to
    ``minutes``; return each kept utterance with its duration in seconds.

    Workers synthesize a chunk at a time, and the stopping point is decided in utterance order,
    so the result does not depend on which worker finished first; files synthesized past the
    stopping point are removed.
    """
    wanted = minutes * 60
    kept: List[Tuple[Utterance, float]] = []
    total = 0.0
    next_index = 0

    def write(utt: Utterance) -> float:
        audio = synthesize(utt)
        sf.write(wav_dir / f"{utt.id}.wav", audio, SAMPLE_RATE, subtype="PCM_16")
        return len(audio) / SAMPLE_RATE

    wav_dir.mkdir(parents=True)
    progress_format = "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}]"
    with ThreadPoolExecutor(workers) as pool, \
            tqdm(total=wanted, desc=f"{plan.domain}/{plan.split}", bar_format=progress_format) as progress:
        while total < wanted:
            chunk = [plan.utterance(i) for i in range(next_index, next_index + 4 * workers)]
            next_index += len(chunk)
            for utt, seconds in zip(chunk, pool.map(write, chunk)):
                if total >= wanted:
                    (wav_dir / f"{utt.id}.wav").unlink()
                    continue
                kept.append((utt, seconds))
                total += seconds
                progress.update(min(seconds, wanted - progress.n))
    return kept


def write_kaldi_dir(data_dir: Path, utterances: Iterable[Tuple[Utterance, float]], wav_dir: Path) -> None:
    """Write ``wav.scp``, ``text``, ``utt2spk``, ``spk2utt`` and ``spk2voice``, sorted as Kaldi
    requires; ``wav_dir`` is where the audio will finally be."""
    utts = sorted((utt for utt, _ in utterances), key=lambda u: u.id)
    speakers = sorted({utt.speaker for utt in utts}, key=lambda s: s.id)
    data_dir.mkdir(parents=True)
    write_table(data_dir / "wav.scp", [(u.id, str(wav_dir / f"{u.id}.wav")) for u in utts])
    write_table(data_dir / "text", [(u.id, u.text) for u in utts])
    write_table(data_dir / "utt2spk", [(u.id, u.speaker.id) for u in utts])
    write_table(data_dir / "spk2utt", [
        (s.id, " ".join(u.id for u in utts if u.speaker == s)) for s in speakers
    ])
    write_table(data_dir / "spk2voice", [(s.id, s.voice) for s in speakers])


def write_corpus(domain: str, config: Mapping[str, Any], out_dir: Path, jobs: int, run: StageRun) -> None:
    """Synthesize ``domain``'s splits into ``out_dir`` (atomically): a Kaldi data dir per split,
    its WAVs under ``wav/<split>/`` and ``provenance.json`` (the ``corpus`` stage)."""
    check_environment(domain, config)
    plans = plan_corpus(domain, config, run.seed)
    splits: Dict[str, Dict[str, float]] = {}
    with atomic_dir(out_dir) as tmp:
        for split, plan in plans.items():
            utterances = synthesize_split(plan, config["splits"][split]["minutes"], tmp / "wav" / split, jobs)
            write_kaldi_dir(tmp / split, utterances, out_dir / "wav" / split)
            seconds = sum(duration for _, duration in utterances)
            speakers = len({utt.speaker.id for utt, _ in utterances})
            splits[split] = {"utterances": len(utterances), "seconds": round(seconds, 3), "speakers": speakers}
            run.log.info("%s/%s: %d utterances, %.2f minutes, %d speakers",
                         domain, split, len(utterances), seconds / 60, speakers)
        run.write_provenance(tmp / "provenance.json", domain=domain, tools=tool_versions(domain), splits=splits)


def write_noise(noise_dir: Path, noise_types: Sequence[str]) -> Path:
    """One WAV per noise type and their cuts in ``noise_dir``; returns the cuts manifest."""
    with atomic_dir(noise_dir) as tmp:
        recordings = []
        for noise_type in noise_types:
            audio = noise_recording(noise_type)
            sf.write(str(tmp / f"{noise_type}.wav"), audio, SAMPLE_RATE, subtype="PCM_16")
            recordings.append(Recording(  # named by the path it has once the directory is in place
                id=f"noise-{noise_type}", sampling_rate=SAMPLE_RATE, num_samples=len(audio),
                duration=len(audio) / SAMPLE_RATE,
                sources=[AudioSource(type="file", channels=[0], source=str(noise_dir / f"{noise_type}.wav"))],
            ))
        CutSet.from_manifests(recordings=RecordingSet.from_recordings(recordings)).to_file(tmp / "noise_cuts.jsonl.gz")
    return noise_dir / "noise_cuts.jsonl.gz"
