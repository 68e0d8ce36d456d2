"""The embedded default corpus: who says what, in which room, and its audio.

- **source** (pretraining): WordNet's example sentences (``local.source_text``) read, clean, by
  many kinds of voice: every family of ``local.voices`` the config lists under
  ``corpus.source.families``, each with many speakers (a voice of the family plus a value of
  each of its settings: rate, pitch, formant shift, ...).
- **target** (fine-tuning): smart-speaker commands (``local.target_grammar``) read by speakers
  of the same families that no source utterance has, through sox reverb and background noise.
  ``dev`` is read by the ``train`` speakers (it holds out sentences), ``test`` by speakers of
  its own, and ``test_unseen`` (the ``test`` sentences again) by a family that reads nothing
  else in either domain: a kind of voice no training data has.

A family's ``speakers`` mapping says how many speakers read each split. A setting belongs to
one domain by its hash (``_domain_of``), so the two domains, each planned from its own config
section, never share a speaker.

``plan_corpus`` turns a domain's config and a seed into one ``SplitPlan`` per split. A plan
says what its ``i``-th utterance is from ``i`` alone, so parallel synthesis gives the same
corpus however the work is scheduled; ``synthesize`` makes the audio::

    plans = plan_corpus("target", load_config([])["corpus"]["target"], seed=1234)
    utt = plans["test"].utterance(0)    # Utterance(id='tgt-flite-002-test-00000', ...)
    audio = synthesize(utt)             # float32, 16 kHz mono, |peak| <= 1

``write_corpus`` is the ``corpus`` stage (Kaldi data dirs of 16 kHz WAVs, one per split);
``write_noise`` the ``noise`` stage's recordings.
"""
import functools
import hashlib
import logging
import random
import shutil
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

import soundfile as sf
from lhotse import AudioSource, CutSet, Recording, RecordingSet
from tqdm import tqdm

from local.source_text import WORDNET_DIR, WORDNET_FILES, wordnet_sentences
from local.target_grammar import sample_sentences
from local.voices import (FAMILIES, SAMPLE_RATE, SOX, SOX_FLOAT_OUTPUT, Speaker, debian_version, install_hint,
                          run_command, speak)
from speechtune.data.tables import write_table
from speechtune.errors import ConfigError, StageError
from speechtune.provenance import StageRun, atomic_dir

DOMAINS = ("source", "target")
SPEAKER_PREFIX = {"source": "src", "target": "tgt"}
SPEAKERS_OF = {"dev": "train"}         # dev is read by the training speakers
SENTENCES_OF = {"test_unseen": "test"}  # the same sentences as test, by voices no split has
UNSEEN_SPLIT = "test_unseen"
SOX_FLOAT_INPUT = ("-t", "f32", "-r", str(SAMPLE_RATE), "-c", "1", "-")
NOISE_SECONDS = 60

log = logging.getLogger(__name__)


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
    seed: int = 0             # what the voice draws at random (piper's noise)


@dataclass(frozen=True)
class SplitPlan:
    """What a split's utterances are drawn from: its speakers (in turn order), its sentences in
    reading order, and the domain config's room ranges: a ``room_fraction`` of the utterances is
    read in a room drawn from them (reverb and background noise), the rest clean."""

    domain: str
    split: str
    seed: int
    speakers: Sequence[Speaker]
    sentences: Sequence[str]
    room_ranges: Optional[Mapping[str, Any]] = None   # with room_fraction: the share read in a room

    def __post_init__(self) -> None:
        if not self.speakers or not self.sentences:
            raise ConfigError(
                f"corpus.{self.domain}: split '{self.split}' has {len(self.speakers)} speakers and "
                f"{len(self.sentences)} sentences; it needs some of each (raise a family's "
                f"speakers.{SPEAKERS_OF.get(self.split, self.split)} or test_sentence_fraction)"
            )

    def utterance(self, i: int) -> Utterance:
        """The ``i``-th utterance of the split; depends on the seed, the split and ``i`` only."""
        n_sentences = len(self.sentences)
        # Speakers take turns, so every one is heard; the turn shifts each time the sentences
        # wrap around, so a repeated sentence gets a new reader.
        speaker = self.speakers[(i + i // n_sentences) % len(self.speakers)]
        rng = random.Random(f"{self.seed}/{self.domain}/{self.split}/{i}")
        voice_seed = rng.getrandbits(32)
        in_room = self.room_ranges is not None and rng.random() < self.room_ranges["room_fraction"]
        room = _draw_room(self.room_ranges, rng) if in_room else None
        text = self.sentences[i % n_sentences]
        return Utterance(f"{speaker.id}-{self.split}-{i:05d}", speaker, text, room, voice_seed)


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


def families(config: Mapping[str, Any]) -> Dict[str, Mapping[str, Any]]:
    """The families of a domain's config that read something: ``{name: family config}``
    (a preset drops one with null or zero speakers)."""
    return {name: family for name, family in sorted(config["families"].items())
            if family is not None and any(family["speakers"].values())}


def check_environment(domain: str, config: Mapping[str, Any]) -> Dict[str, str]:
    """The optional families to leave out, ``{name: what is missing}``; fail, naming the
    Debian or pip package to install, when a required family's engine, sox or WordNet is
    missing, or when leaving out optional families would leave a split with no speakers."""
    skipped = {}
    for name, family_config in families(config).items():
        family = FAMILIES.get(name)()
        problem = family.missing(family.voices(family_config))
        if problem is None:
            continue
        if not family_config["optional"]:
            raise StageError(f"corpus.{domain}.families.{name}: {problem}")
        log.warning("corpus.%s.families.%s is optional and left out: %s", domain, name, problem)
        skipped[name] = problem
    for split in config["splits"]:
        readers = [name for name, family in families(config).items()
                   if family["speakers"].get(SPEAKERS_OF.get(split, split))]
        if readers and set(readers) <= set(skipped):
            raise StageError(f"corpus.{domain}: split '{split}' is read by {', '.join(readers)} only, "
                             f"and {readers[0]} is missing: {skipped[readers[0]]}")
    if shutil.which("sox") is None:
        raise StageError(install_hint("sox not found", "sox"))
    if domain == "source":
        for name in WORDNET_FILES:
            if not (WORDNET_DIR / name).is_file():
                raise StageError(install_hint(f"{WORDNET_DIR / name} not found", "wordnet-base"))
    return skipped


def _unseen_families(target: Mapping[str, Any]) -> List[str]:
    """The target families that read ``test_unseen``."""
    return [name for name, family in families(target).items() if family["speakers"].get(UNSEEN_SPLIT)]


def _check_unseen(domain: str, config: Mapping[str, Any], unseen: Collection[str]) -> None:
    for name, family in families(config).items():
        others = sorted(split for split, n in family["speakers"].items() if n and split != UNSEEN_SPLIT)
        if name in unseen and others:
            raise ConfigError(
                f"corpus.{domain}.families.{name} reads {', '.join(others)}, but it reads target "
                f"{UNSEEN_SPLIT}, a kind of voice no training data may have: set its other speakers to 0 "
                f"or choose another family for {UNSEEN_SPLIT}"
            )


def check_unseen_split(corpus: Mapping[str, Any]) -> None:
    """The families that read target ``test_unseen`` read nothing else, in either domain
    (``corpus`` is the whole ``corpus`` section: each corpus stage sees one domain only, and
    checks its own)::

        check_unseen_split(load_config([])["corpus"])   # a ConfigError naming the family if not
    """
    unseen = _unseen_families(corpus["target"])
    for domain in DOMAINS:
        _check_unseen(domain, corpus[domain], unseen)


def tool_versions(names: Iterable[str]) -> Dict[str, List[str]]:
    """The installed versions of what each family runs (and sox), for provenance."""
    return {"sox": [debian_version("sox")], **{name: FAMILIES.get(name)().versions() for name in names}}


# ---------------------------------------------------------------------------------------------
# Speakers


def _domain_of(speaker: Speaker) -> str:
    """The one domain a voice setting may read, from its hash: a function of the setting alone,
    so a target speaker is never a source speaker whatever either config says."""
    return DOMAINS[hashlib.sha256(speaker.description.encode()).digest()[0] % len(DOMAINS)]


def _round(value: float, decimals: int) -> float:
    return round(value, decimals) if decimals else round(value)


def _family_speakers(domain: str, name: str, config: Mapping[str, Any], seed: int) -> Dict[str, List[Speaker]]:
    """``{split: speakers}`` of one family. Speakers take the family's voices in turn (shuffled),
    so test speakers hear voices no training speaker has where the family has enough voices,
    and fresh settings of known ones where it has not."""
    family = FAMILIES.get(name)()
    rng = random.Random(f"{seed}/{domain}/voices/{name}")
    voices = family.voices(config)
    rng.shuffle(voices)
    drawn = set()
    speakers: Dict[str, List[Speaker]] = defaultdict(list)
    for split, count in sorted(config["speakers"].items()):  # sorted: JSON and YAML order keys differently
        for _ in range(count):
            k = len(drawn)
            voice = voices[k % len(voices)]
            for _attempt in range(1000):
                settings = tuple((setting, _round(rng.uniform(*config[f"{setting}_range"]), decimals))
                                 for setting, decimals in family.settings.items())
                speaker = Speaker(f"{SPEAKER_PREFIX[domain]}-{name}-{k + 1:03d}", name, voice, settings)
                # Rounding could repeat a setting; a repeat would be the same speaker twice.
                if speaker.description not in drawn and _domain_of(speaker) == domain:
                    break
            else:
                raise ConfigError(
                    f"corpus.{domain}.families.{name}: no {sum(config['speakers'].values())} distinct "
                    f"{domain} speakers in its voices and ranges: widen the ranges or ask for fewer speakers"
                )
            drawn.add(speaker.description)
            speakers[split].append(speaker)
    return speakers


def plan_speakers(
    domain: str, config: Mapping[str, Any], seed: int, skip: Collection[str] = ()
) -> Dict[str, List[Speaker]]:
    """``{split: speakers}`` of a domain, over its families but those in ``skip``; a family's
    speakers do not depend on which other families there are."""
    readers = {split for split in config["splits"] if split not in SPEAKERS_OF}
    speakers: Dict[str, List[Speaker]] = defaultdict(list)
    for name, family_config in families(config).items():
        wrong = sorted(split for split, n in family_config["speakers"].items() if n and split not in readers)
        if wrong:
            raise ConfigError(f"corpus.{domain}.families.{name}.speakers.{wrong[0]}: corpus.{domain}.splits "
                              f"has no split '{wrong[0]}' read by speakers of its own ({', '.join(sorted(readers))})")
        if name not in skip:
            for split, family_speakers in _family_speakers(domain, name, family_config, seed).items():
                speakers[split] += family_speakers
    _check_unseen(domain, config, _unseen_families(config))
    return {split: speakers[SPEAKERS_OF.get(split, split)] for split in config["splits"]}


# ---------------------------------------------------------------------------------------------
# Plans


def plan_corpus(domain: str, config: Mapping[str, Any], seed: int, skip: Collection[str] = ()) -> Dict[str, SplitPlan]:
    """One ``SplitPlan`` per split of ``domain``, from its config section ``corpus.<domain>``,
    leaving out the families in ``skip`` (optional ones whose engine is missing)."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    sentences = _source_sentences(config, seed) if domain == "source" else target_sentences(config, seed)
    plans = {}
    for split, speakers in plan_speakers(domain, config, seed, skip).items():
        order = list(speakers)
        random.Random(f"{seed}/{domain}/{split}/speakers").shuffle(order)  # families take turns too
        pool = sentences[SENTENCES_OF.get(split, split)]
        plans[split] = SplitPlan(domain, split, seed, order, pool, config)
    return plans


def _source_sentences(config: Mapping[str, Any], seed: int) -> Dict[str, List[str]]:
    sentences = wordnet_sentences(config["min_words"], config["max_words"], config["vocabulary_size"])
    random.Random(f"{seed}/source/sentences").shuffle(sentences)
    test, train = _hold_out(sentences, config["test_sentence_fraction"])
    return {"train": train, "test": test}


def target_sentences(config: Mapping[str, Any], seed: int) -> Dict[str, List[str]]:
    # Held out per intent, so dev and test ask for timers and weather as often as train does.
    pools: Dict[str, List[str]] = {"train": [], "dev": [], "test": []}
    for sentences in sample_sentences(seed).values():
        held, kept = _hold_out(sentences, config["test_sentence_fraction"])
        pools["train"] += kept
        pools["dev"] += held[0::2]
        pools["test"] += held[1::2]
    for split, pool in pools.items():
        random.Random(f"{seed}/target/{split}/order").shuffle(pool)  # interleave the intents
    return pools


# ---------------------------------------------------------------------------------------------
# Audio


def synthesize(utt: Utterance) -> np.ndarray:
    """The utterance's audio: float32, 16 kHz mono, peak at most 1."""
    audio = speak(utt.speaker, utt.text, utt.seed)
    if utt.room is not None:
        reverb = ["reverb", str(utt.room.reverberance), "50", str(utt.room.room_scale)]
        audio = np.frombuffer(run_command([*SOX, *SOX_FLOAT_INPUT, *SOX_FLOAT_OUTPUT, *reverb], stdin=audio.tobytes()),
                              np.float32)
        audio = mix_at_snr(audio, noise_clip(utt.room, len(audio)), utt.room.snr_db)
    peak = float(np.max(np.abs(audio)))
    return audio / peak if peak > 1 else audio


@functools.lru_cache(maxsize=None)
def noise_recording(noise_type: str) -> np.ndarray:
    """``NOISE_SECONDS`` of sox's ``noise_type`` at 16 kHz, the same on every run (sox -R)."""
    return np.frombuffer(
        run_command([*SOX, "-n", *SOX_FLOAT_OUTPUT, "synth", str(NOISE_SECONDS), noise_type]), np.float32
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
    write_table(data_dir / "spk2voice", [(s.id, s.description) for s in speakers])


def write_corpus(domain: str, config: Mapping[str, Any], out_dir: Path, jobs: int, run: StageRun) -> None:
    """Synthesize ``domain``'s splits into ``out_dir`` (atomically): a Kaldi data dir per split,
    its WAVs under ``wav/<split>/`` and ``provenance.json`` (the ``corpus`` stage), which
    records per split the utterances, seconds, speakers and seconds per family, and the
    optional families left out for a missing engine."""
    skipped = check_environment(domain, config)
    plans = plan_corpus(domain, config, run.seed, skip=skipped)
    splits: Dict[str, Dict[str, Any]] = {}
    with atomic_dir(out_dir) as tmp:
        for split, plan in plans.items():
            utterances = synthesize_split(plan, config["splits"][split]["minutes"], tmp / "wav" / split, jobs)
            write_kaldi_dir(tmp / split, utterances, out_dir / "wav" / split)
            seconds = sum(duration for _, duration in utterances)
            per_family: Dict[str, float] = defaultdict(float)
            for utt, duration in utterances:
                per_family[utt.speaker.family] += duration
            speakers = len({utt.speaker.id for utt, _ in utterances})
            splits[split] = {"utterances": len(utterances), "seconds": round(seconds, 3), "speakers": speakers,
                             "family_seconds": {name: round(s, 3) for name, s in sorted(per_family.items())}}
            by_family = ", ".join(f"{name} {s / 60:.1f} min" for name, s in sorted(per_family.items()))
            run.log.info("%s/%s: %d utterances, %.2f minutes, %d speakers (%s)",
                         domain, split, len(utterances), seconds / 60, speakers, by_family)
        used = sorted(set(families(config)) - set(skipped))
        run.write_provenance(tmp / "provenance.json", domain=domain, tools=tool_versions(used), splits=splits,
                             families=used, skipped_families=skipped)


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
