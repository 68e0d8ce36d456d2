"""Any lhotse corpus as the corpus stage's Kaldi data dirs; and the recipe for a directory of
lhotse manifests (``corpus.<domain>.recipe: lhotse_manifests``).

lhotse's recipes (``lhotse.recipes.prepare_librispeech``, ``prepare_yesno``, ...) return
``{part: {"recordings": RecordingSet, "supervisions": SupervisionSet}}``.
:func:`write_lhotse_corpus` turns such parts into what the corpus stage promises the prepare
stage: one Kaldi data dir per split of ``corpus.<domain>.splits``, each taking the utterances
of the parts ``corpus.<domain>.parts`` names for it::

    manifests = prepare_librispeech("/data/LibriSpeech", dataset_parts=["dev-other", "test-other"])
    config = {"parts": {"dev": ["dev-other"], "test": ["test-other"]},
              "splits": {"dev": {"minutes": 30}, "test": {"minutes": 60}}, ...}
    write_lhotse_corpus(Path("data/corpus/target"), manifests, "librispeech", "target", config, run)

How the splits are drawn: a split takes its parts' utterances in a seeded order until it holds
``splits.<split>.minutes`` of audio (so ``minutes`` caps a split: a 20-minute target from a
500-hour part is the few-shot situation fine-tuning is for; a cap above the part's size takes
all of it). Splits that name the same part share it out, never one utterance twice: the held-out
splits (dev, test, ...) draw first and ``train`` takes from what they leave.

The audio stays where the corpus has it: ``wav.scp`` holds the absolute path of each file
(FLAC included: lhotse and soundfile read it as it is, where lhotse's own Kaldi exporter would
write an ffmpeg pipe). Audio that is not 16 kHz (yesno's 8 kHz WAVs), or that lhotse reaches
through something other than one plain file (a command, a URL, a transform), is written as a
16 kHz 16-bit WAV under ``out_dir/wav/<split>/``, resampled by sox. Supervisions that do not
span their whole recording become Kaldi ``segments``.

Bad input: an id with whitespace, or an utterance id twice among a split's parts, is a
StageError (a Kaldi key must be unique); a supervision without text, without its recording or
on a channel other than 0 is skipped, logged and counted in ``provenance.json``
(``skipped``), as are recordings no supervision uses.

A directory of lhotse manifests (what ``lhotse prepare <corpus>`` or a recipe's ``output_dir``
writes: ``<prefix>_recordings_<part>.jsonl.gz`` and ``<prefix>_supervisions_<part>.jsonl.gz``
per part, the prefix optional) needs no code of its own::

    corpus:
      target:
        recipe: lhotse_manifests
        corpus_dir: /data/manifests/librispeech   # the manifest directory
        parts: {train: [train-clean-5], dev: [dev-clean-2], test: [dev-clean-2]}
"""
import collections
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Counter, Dict, List, Mapping, Optional, Sequence, Tuple

import soundfile as sf
from lhotse import Recording, RecordingSet, SupervisionSegment, SupervisionSet, load_manifest

from local.asterisk import resample, sox_version
from speechtune.data.tables import write_table
from speechtune.errors import ConfigError, StageError
from speechtune.provenance import StageRun, atomic_dir

SAMPLE_RATE = 16000  # prepare.sample_rate's default: what the features and the pretrained model expect
OPENSLR = "http://www.openslr.org/resources"  # lhotse's default; download_url names a mirror instead
TRAIN = "train"

Parts = Mapping[str, Mapping[str, Any]]  # {part: {"recordings": RecordingSet, "supervisions": SupervisionSet}}

# Why an utterance or a recording is left out (the keys of provenance.json's "skipped").
NO_TEXT = "supervision without text"
NO_RECORDING = "supervision without its recording"
OTHER_CHANNEL = "supervision on a channel other than 0"
UNUSED_AUDIO = "recording no supervision uses"


# ---------------------------------------------------------------------------------------------
# The config


def corpus_dir(domain: str, config: Mapping[str, Any], what: str) -> Path:
    """``corpus.<domain>.corpus_dir`` as an absolute path (relative to the directory the stage
    runs in, as every path of the config); ``what`` says what it should hold."""
    value = config.get("corpus_dir")
    if not value:
        raise ConfigError(f"corpus.{domain}.corpus_dir is not set: recipe {config['recipe']} reads {what}; "
                          f"set it (config/librispeech.yaml shows how)")
    return Path(os.path.abspath(os.path.expanduser(str(value))))


def split_parts(domain: str, config: Mapping[str, Any]) -> Dict[str, List[str]]:
    """``corpus.<domain>.parts``: the corpus parts each split reads, for exactly the splits of
    ``corpus.<domain>.splits`` (a preset removes a split with null)."""
    wanted = sorted(split for split, value in config["splits"].items() if value is not None)
    parts = config.get("parts") or {}
    if sorted(parts) != wanted:
        raise ConfigError(f"corpus.{domain}.parts names the splits {sorted(parts)}, but corpus.{domain}.splits "
                          f"asks for {wanted}: name the corpus parts of each, e.g. "
                          f"parts: {{train: [train-clean-100], ...}}")
    return {split: list(parts[split]) for split in wanted}


def download_url(config: Mapping[str, Any]) -> str:
    """Where ``download: true`` fetches from: ``download_url`` (an OpenSLR mirror), else OpenSLR."""
    return str(config.get("download_url") or OPENSLR).rstrip("/")


def check_known_parts(domain: str, corpus: str, parts: Mapping[str, Sequence[str]], known: Sequence[str]) -> None:
    """Every part named is one of the corpus's ``known`` parts."""
    unknown = sorted({part for names in parts.values() for part in names} - set(known))
    if unknown:
        raise ConfigError(f"corpus.{domain}.parts: {', '.join(unknown)} is no {corpus} part; "
                          f"{corpus}'s parts: {', '.join(known)}")


# ---------------------------------------------------------------------------------------------
# Splits


def _draw_order(seed: int, utt: str) -> str:
    # A hash, not random.shuffle: an utterance's place depends on the seed and its id alone, so
    # adding a part to a split does not reshuffle what the others drew.
    return hashlib.sha256(f"{seed}/{utt}".encode()).hexdigest()


def draw_splits(supervisions: Mapping[str, Sequence[SupervisionSegment]], parts: Mapping[str, Sequence[str]],
                minutes: Mapping[str, float], seed: int) -> Dict[str, List[SupervisionSegment]]:
    """Each split's supervisions (sorted by id): its parts' (``supervisions``: part -> usable
    supervisions) in a seeded order until it holds ``minutes[split]``; a part named by several
    splits is shared out, the held-out splits first, ``train`` last.

    >>> sup = lambda i: SupervisionSegment(f"u{i}", f"u{i}", 0.0, 30.0)
    >>> drawn = draw_splits({"a": [sup(i) for i in range(10)]}, {"train": ["a"], "dev": ["a"]},
    ...                     {"train": 100.0, "dev": 1.0}, seed=1)
    >>> len(drawn["dev"]), len(drawn["train"]), {s.id for s in drawn["dev"]}.isdisjoint(s.id for s in drawn["train"])
    (2, 8, True)
    """
    taken: set = set()
    drawn: Dict[str, List[SupervisionSegment]] = {}
    for split in sorted(parts, key=lambda s: (s == TRAIN, s)):
        owner: Dict[str, str] = {}
        pool: List[SupervisionSegment] = []
        for part in parts[split]:
            for sup in supervisions[part]:
                if sup.id in owner:
                    where = f"twice in part {part}" if owner[sup.id] == part else \
                        f"in parts {owner[sup.id]} and {part}, which split '{split}' reads together"
                    raise StageError(f"utterance id '{sup.id}' is {where}: a Kaldi data dir needs unique ids; "
                                     f"rename one of them in the corpus (or name one of the parts)")
                owner[sup.id] = part
                pool.append(sup)
        chosen, total, wanted = [], 0.0, minutes[split] * 60
        for sup in sorted(pool, key=lambda s: _draw_order(seed, s.id)):
            if total >= wanted:
                break
            if sup.id in taken:
                continue
            chosen.append(sup)
            total += sup.duration
        taken.update(sup.id for sup in chosen)
        drawn[split] = sorted(chosen, key=lambda s: s.id)
    return {split: drawn[split] for split in parts}


def usable_supervisions(name: str, manifests: Mapping[str, Any], skipped: Counter,
                        log: Any) -> Tuple[Dict[str, Recording], List[SupervisionSegment]]:
    """A part's recordings by id and the supervisions a Kaldi data dir can hold; the others
    are counted in ``skipped`` by reason and logged."""
    recordings = {r.id: r for r in manifests["recordings"]}
    kept, used = [], set()
    for sup in manifests["supervisions"]:
        for kind, value in (("utterance", sup.id), ("recording", sup.recording_id), ("speaker", sup.speaker or "")):
            if re.search(r"\s", value) or (kind != "speaker" and not value):
                raise StageError(f"part {name}: {kind} id {value!r} is empty or holds whitespace, which a Kaldi "
                                 f"table cannot key; rename it in the corpus's manifests")
        reason = ("" if (sup.text or "").strip() else NO_TEXT) or \
                 ("" if sup.recording_id in recordings else NO_RECORDING) or \
                 ("" if sup.channel in (0, [0]) else OTHER_CHANNEL)
        if reason:
            skipped[reason] += 1
            log.warning("%s: skipping %s: %s", name, sup.id, reason)
            continue
        kept.append(sup)
        used.add(sup.recording_id)
    unused = sorted(set(recordings) - used)
    if unused:
        skipped[UNUSED_AUDIO] += len(unused)
        log.warning("%s: %d recordings no supervision uses, left out: %s", name, len(unused),
                    ", ".join(unused[:10]) + (" ..." if len(unused) > 10 else ""))
    return recordings, kept


# ---------------------------------------------------------------------------------------------
# Kaldi data dirs


def _plain_file(recording: Recording) -> Optional[Path]:
    """The one file lhotse reads ``recording`` from as it is, or None."""
    if len(recording.sources) != 1 or recording.transforms:
        return None
    source = recording.sources[0]
    return Path(os.path.abspath(source.source)) if source.type == "file" else None


def kaldi_audio(recording: Recording, tmp_wav_dir: Path, final_wav_dir: Path) -> Tuple[str, bool]:
    """What ``wav.scp`` holds for ``recording`` (its file, or a 16 kHz WAV copy written into
    ``tmp_wav_dir`` and named by its place in ``final_wav_dir``), and whether a copy was made."""
    plain = _plain_file(recording)
    if plain is not None and recording.sampling_rate == SAMPLE_RATE:
        return str(plain), False
    name = recording.id.replace(os.sep, "_") + ".wav"
    tmp_wav_dir.mkdir(parents=True, exist_ok=True)
    if plain is not None:
        resample(plain, tmp_wav_dir / name)
    else:  # a command, a URL, a transform: let lhotse read it, then resample the file it gives
        with tempfile.TemporaryDirectory(dir=tmp_wav_dir) as scratch:
            native = Path(scratch) / name
            sf.write(str(native), recording.load_audio()[0], recording.sampling_rate, subtype="PCM_16")
            resample(native, tmp_wav_dir / name)
    return str(final_wav_dir / name), True


def _spans_recording(sup: SupervisionSegment, duration: float) -> bool:
    # 1 ms of slack: lhotse rounds durations it computes from sample counts
    return sup.id == sup.recording_id and sup.start <= 1e-3 and abs(sup.end - duration) <= 1e-3


def write_kaldi_split(data_dir: Path, supervisions: Sequence[SupervisionSegment], audio: Mapping[str, str],
                      durations: Mapping[str, float]) -> None:
    """``wav.scp``, ``text``, ``utt2spk``, ``spk2utt`` and, where a supervision is not its whole
    recording, ``segments``, sorted as Kaldi requires (``audio`` and ``durations``: by
    recording id, what wav.scp holds and the seconds). A supervision without a speaker is its
    own speaker, Kaldi's convention."""
    data_dir.mkdir(parents=True)
    speaker = {sup.id: sup.speaker or sup.id for sup in supervisions}
    if not all(_spans_recording(sup, durations[sup.recording_id]) for sup in supervisions):
        write_table(data_dir / "segments",
                    [(s.id, f"{s.recording_id} {s.start:.3f} {s.end:.3f}") for s in supervisions])
    write_table(data_dir / "wav.scp", sorted((rec, audio[rec]) for rec in {s.recording_id for s in supervisions}))
    write_table(data_dir / "text", [(s.id, " ".join(s.text.split())) for s in supervisions])
    write_table(data_dir / "utt2spk", [(s.id, speaker[s.id]) for s in supervisions])
    by_speaker: Dict[str, List[str]] = collections.defaultdict(list)
    for sup in supervisions:
        by_speaker[speaker[sup.id]].append(sup.id)
    write_table(data_dir / "spk2utt", [(spk, " ".join(utts)) for spk, utts in sorted(by_speaker.items())])


def write_lhotse_corpus(out_dir: Path, manifests: Parts, corpus: str, domain: str, config: Mapping[str, Any],
                        run: StageRun, skipped: Optional[Counter] = None, **facts: Any) -> None:
    """Write ``manifests``' parts as the splits of ``config`` (``corpus.<domain>``), atomically:
    ``out_dir/<split>/`` Kaldi data dirs, 16 kHz copies under ``out_dir/wav/<split>/`` where
    needed, ``out_dir/provenance.json`` (per split: parts, utterances, seconds, speakers,
    copies; what was skipped and why, with the recipe's own ``skipped`` counts; ``facts``)."""
    out_dir = Path(out_dir)
    parts = split_parts(domain, config)
    skipped = collections.Counter(skipped or {})
    recordings: Dict[str, Recording] = {}
    usable: Dict[str, List[SupervisionSegment]] = {}
    for part in sorted({p for names in parts.values() for p in names}):
        if part not in manifests:
            raise StageError(f"{corpus} has no part '{part}' (corpus.{domain}.parts); "
                             f"it has: {', '.join(sorted(manifests)) or 'none'}")
        part_recordings, usable[part] = usable_supervisions(part, manifests[part], skipped, run.log)
        recordings.update(part_recordings)
    minutes = {split: config["splits"][split]["minutes"] for split in parts}
    drawn = draw_splits(usable, parts, minutes, run.seed)
    summary: Dict[str, Dict[str, Any]] = {}
    with atomic_dir(out_dir) as tmp:
        for split, supervisions in drawn.items():
            if not supervisions:  # an empty data dir would stop prepare, later and less clearly
                raise StageError(f"{corpus}: split '{split}' gets no utterance from parts {', '.join(parts[split])} "
                                 f"(each is logged above if skipped); name other parts in corpus.{domain}.parts")
            audio, copies = {}, 0
            for rec_id in sorted({s.recording_id for s in supervisions}):
                audio[rec_id], copied = kaldi_audio(recordings[rec_id], tmp / "wav" / split, out_dir / "wav" / split)
                copies += copied
            write_kaldi_split(tmp / split, supervisions, audio, {r: recordings[r].duration for r in audio})
            seconds = sum(s.duration for s in supervisions)
            speakers = len({s.speaker or s.id for s in supervisions})
            summary[split] = {"parts": parts[split], "utterances": len(supervisions), "seconds": round(seconds, 3),
                              "speakers": speakers, "resampled_copies": copies}
            run.log.info("%s/%s: %d utterances, %.2f minutes, %d speakers from %s%s", corpus, split,
                         len(supervisions), seconds / 60, speakers, ", ".join(parts[split]),
                         f"; {copies} recordings resampled to {SAMPLE_RATE} Hz" if copies else "")
        resampled = any(s["resampled_copies"] for s in summary.values())
        run.write_provenance(tmp / "provenance.json", corpus=corpus, domain=domain, splits=summary,
                             skipped=dict(sorted(skipped.items())),
                             tools={"sox": sox_version()} if resampled else {}, **facts)


# ---------------------------------------------------------------------------------------------
# A directory of lhotse manifests

SUFFIX = ".jsonl.gz"


def find_manifest(manifest_dir: Path, kind: str, part: str) -> Path:
    """``manifest_dir``'s ``[<prefix>_]<kind>_<part>.jsonl.gz``: exactly one must exist."""
    found = sorted(p for p in manifest_dir.glob(f"*{kind}_{part}{SUFFIX}")
                   if p.name == f"{kind}_{part}{SUFFIX}" or p.name.endswith(f"_{kind}_{part}{SUFFIX}"))
    if len(found) != 1:
        held = sorted(p.name for p in manifest_dir.glob(f"*{SUFFIX}"))
        problem = "none" if not found else f"{len(found)} ({', '.join(p.name for p in found)})"
        raise StageError(f"{manifest_dir}: expected one [<prefix>_]{kind}_{part}{SUFFIX} for part '{part}', found "
                         f"{problem}; it holds: {', '.join(held[:12]) or 'no manifests'}. Point corpus_dir at the "
                         f"directory `lhotse prepare` wrote, or name the parts it has")
    return found[0]


def read_manifest_dir(manifest_dir: Path, parts: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """``{part: {"recordings", "supervisions"}}`` read from ``manifest_dir``."""
    if not manifest_dir.is_dir():
        raise StageError(f"{manifest_dir} is not a directory: point corpus_dir at a directory of lhotse manifests "
                         f"(recordings_<part>{SUFFIX} and supervisions_<part>{SUFFIX} per part)")
    manifests: Dict[str, Dict[str, Any]] = {}
    for part in parts:
        manifests[part] = {}
        for kind, cls in (("recordings", RecordingSet), ("supervisions", SupervisionSet)):
            path = find_manifest(manifest_dir, kind, part)
            try:
                manifest = load_manifest(path)
            except Exception as e:  # lhotse raises what json, gzip or its own classes raise
                raise StageError(f"{path}: not a lhotse manifest ({type(e).__name__}: {e})") from None
            if not isinstance(manifest, cls):
                raise StageError(f"{path}: holds a {type(manifest).__name__}, expected a {cls.__name__}")
            manifests[part][kind] = manifest
    return manifests


def write_manifest_corpus(domain: str, config: Mapping[str, Any], out_dir: Path, jobs: int, run: StageRun) -> None:
    """The ``lhotse_manifests`` recipe: the parts of the manifest directory ``corpus_dir``."""
    if config.get("download"):
        raise ConfigError(f"corpus.{domain}.download: a directory of manifests has nothing to download; "
                          f"set download: false (the recipes librispeech, mini_librispeech and yesno download)")
    manifest_dir = corpus_dir(domain, config, "a directory of lhotse manifests")
    parts = split_parts(domain, config)
    manifests = read_manifest_dir(manifest_dir, sorted({p for names in parts.values() for p in names}))
    write_lhotse_corpus(out_dir, manifests, "lhotse manifests", domain, config, run, corpus_dir=str(manifest_dir))
