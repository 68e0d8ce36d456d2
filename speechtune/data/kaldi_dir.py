"""Kaldi data dirs <-> validated lhotse manifests: what the ``prepare`` stage does.

Import reads ``wav.scp``, ``text``, ``utt2spk`` and, where present, ``segments`` (Kaldi's
formats; ``wav.scp`` entries may be files or ``... |`` commands), and writes, e.g. in
``data/manifests/``::

    target_train_recordings.jsonl.gz   lhotse RecordingSet
    target_train_supervisions.jsonl.gz lhotse SupervisionSet (text normalized: speechtune.text)
    target_train_cuts.jsonl.gz         lhotse CutSet, one cut per supervision
    target_train_skipped.txt           one line per skipped utterance: id, reason
    target_train.provenance.json

    cuts = import_kaldi_data_dir(Path("data/corpus/target/train"), Path("data/manifests"),
                                 "target_train", config["prepare"], run)
    export_kaldi_data_dir(Path("data/manifests"), "target_test", Path("exp/kaldi/target_test"))

Bad input never becomes a silent wrong result. Structural faults of the data dir (a missing
``wav.scp`` or ``text``, a malformed line, a duplicate id) stop the stage with the file, line
and fix. Faults of one utterance (audio missing, unreadable, empty or at the wrong sample rate;
a transcript that is empty after normalization or not UTF-8; no speaker) skip that utterance,
logged and counted in ``*_skipped.txt`` and the provenance; if more than
``prepare.max_skip_fraction`` of the subset is skipped, the stage fails instead.
"""
import collections
import logging
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

from lhotse import AudioSource, CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.kaldi import export_to_kaldi, get_duration
from lhotse.qa import validate_recordings_and_supervisions
from tqdm import tqdm

from speechtune.data.tables import read_table
from speechtune.errors import StageError
from speechtune.provenance import StageRun, atomic_file
from speechtune.text import normalize_text

log = logging.getLogger("speechtune.prepare")


class Segment(NamedTuple):
    recording_id: str
    start: float
    end: Optional[float]  # None: to the end of the recording (Kaldi's -1)


class KaldiDataDir(NamedTuple):
    """The parsed index files of a Kaldi data dir; values are raw strings or bytes."""

    wav_scp: Dict[str, str]
    text: Dict[str, bytes]  # undecoded: a non-UTF-8 line skips one utterance, not the set
    utt2spk: Dict[str, str]
    segments: Optional[Dict[str, Segment]]


def read_kaldi_data_dir(data_dir: Path) -> KaldiDataDir:
    """Parse a Kaldi data dir's ``wav.scp``, ``text``, ``utt2spk`` and optional ``segments``."""
    data_dir = Path(data_dir)
    for required in ("wav.scp", "text", "utt2spk"):
        if not (data_dir / required).is_file():
            raise StageError(
                f"{data_dir / required} is missing: a Kaldi data dir needs wav.scp, text and "
                f"utt2spk (see https://kaldi-asr.org/doc/data_prep.html); check the path"
            )
    wav_scp = read_table(data_dir / "wav.scp")
    for rec_id, value in wav_scp.items():
        if not value:
            raise StageError(f"{data_dir / 'wav.scp'}: '{rec_id}' has no path or command")
    segments = None
    if (data_dir / "segments").is_file():
        segments = {}
        for utt, value in read_table(data_dir / "segments").items():
            fields = str(value).split()
            try:
                rec_id, start, end = fields[0], float(fields[1]), float(fields[2])
            except (IndexError, ValueError):
                raise StageError(
                    f"{data_dir / 'segments'}: '{utt}' should read '<utt> <recording> <start> <end>'"
                ) from None
            segments[utt] = Segment(rec_id, start, None if end == -1 else end)
    return KaldiDataDir(
        wav_scp=wav_scp,
        text=read_table(data_dir / "text", binary_values=True),
        utt2spk=read_table(data_dir / "utt2spk"),
        segments=segments,
    )


def _load_recording(rec_id: str, path_or_command: str, sample_rate: int) -> Tuple[Optional[Recording], str]:
    """A validated Recording, or None and the reason to skip it. Decodes all the audio: a
    file with a sound header and broken data must fail here, not in feature extraction."""
    try:
        if path_or_command.endswith("|"):
            duration = get_duration(path_or_command)
            if duration is None:
                return None, f"command failed: {path_or_command}"
            recording = Recording(
                id=rec_id,
                sources=[AudioSource(type="command", channels=[0], source=path_or_command[:-1])],
                sampling_rate=sample_rate,
                num_samples=round(duration * sample_rate),
                duration=duration,
            )
        else:
            if not Path(path_or_command).is_file():
                return None, f"audio file missing: {path_or_command}"
            recording = Recording.from_file(path_or_command, recording_id=rec_id)
            if recording.sampling_rate != sample_rate:
                return None, (
                    f"sample rate {recording.sampling_rate} Hz, expected {sample_rate} Hz "
                    f"(resample, e.g. `sox in.wav -r {sample_rate} out.wav`): {path_or_command}"
                )
        audio = recording.load_audio()
    except Exception as e:  # lhotse/soundfile raise many types for a corrupt file
        return None, f"unreadable audio ({type(e).__name__}: {str(e)[:120]}): {path_or_command}"
    if audio.size == 0:
        return None, f"empty audio: {path_or_command}"
    return recording, ""


def build_manifests(
    data: KaldiDataDir, sample_rate: int, data_dir: Path
) -> Tuple[RecordingSet, SupervisionSet, List[Tuple[str, str]]]:
    """Recordings and supervisions for every usable utterance, and (id, reason) per skip."""
    skipped: List[Tuple[str, str]] = []
    recordings: Dict[str, Recording] = {}
    for rec_id, path_or_command in tqdm(
        sorted(data.wav_scp.items()), desc=f"prepare {data_dir}", unit="rec", mininterval=2
    ):
        recording, reason = _load_recording(rec_id, path_or_command, sample_rate)
        if recording is None:
            skipped.append((rec_id, reason))
        else:
            recordings[rec_id] = recording
    skipped_recordings = {rec_id for rec_id, _ in skipped}

    if data.segments is None:
        segments = {rec_id: Segment(rec_id, 0.0, None) for rec_id in data.wav_scp}
    else:
        segments = data.segments
    supervisions = []
    for utt, segment in sorted(segments.items()):
        if segment.recording_id in skipped_recordings:
            if utt != segment.recording_id:
                skipped.append((utt, f"its recording {segment.recording_id} was skipped"))
            continue
        recording = recordings.get(segment.recording_id)
        if recording is None:
            skipped.append((utt, f"recording '{segment.recording_id}' is not in wav.scp"))
            continue
        raw_text = data.text.get(utt)
        if raw_text is None:
            skipped.append((utt, "no line in text"))
            continue
        try:
            text = normalize_text(raw_text.decode("utf-8"))
        except UnicodeDecodeError:
            skipped.append((utt, "transcript is not UTF-8"))
            continue
        if not text:
            skipped.append((utt, "empty transcript"))
            continue
        speaker = data.utt2spk.get(utt)
        if not speaker:
            skipped.append((utt, "no line in utt2spk"))
            continue
        end = recording.duration if segment.end is None else segment.end
        if not 0 <= segment.start < end <= recording.duration + 0.01:
            skipped.append((utt, f"segment [{segment.start}, {end}] outside the recording"))
            continue
        supervisions.append(
            SupervisionSegment(
                id=utt, recording_id=recording.id, start=segment.start,
                duration=min(end, recording.duration) - segment.start,
                channel=0, text=text, speaker=speaker, language="English",
            )
        )
    used = {s.recording_id for s in supervisions}
    recording_set = RecordingSet.from_recordings(r for r in recordings.values() if r.id in used)
    return recording_set, SupervisionSet.from_segments(supervisions), skipped


def manifest_paths(manifest_dir: Path, subset: str) -> Dict[str, Path]:
    """Where the manifests of ``subset`` live (the contract with ``features`` and later stages)."""
    manifest_dir = Path(manifest_dir)
    return {
        "recordings": manifest_dir / f"{subset}_recordings.jsonl.gz",
        "supervisions": manifest_dir / f"{subset}_supervisions.jsonl.gz",
        "cuts": manifest_dir / f"{subset}_cuts.jsonl.gz",
        "skipped": manifest_dir / f"{subset}_skipped.txt",
        "provenance": manifest_dir / f"{subset}.provenance.json",
    }


def import_kaldi_data_dir(
    data_dir: Path, manifest_dir: Path, subset: str, config: dict, run: StageRun
) -> CutSet:
    """Import one Kaldi data dir as the manifests of ``subset``; see the module docstring."""
    data = read_kaldi_data_dir(data_dir)
    recordings, supervisions, skipped = build_manifests(data, config["sample_rate"], data_dir)
    total = len(data.segments if data.segments is not None else data.wav_scp)
    reasons = collections.Counter(reason.split(" (")[0].split(":")[0] for _, reason in skipped)
    for utt, reason in skipped:
        log.warning("skipping %s: %s", utt, reason)
    paths = manifest_paths(manifest_dir, subset)
    if len(supervisions) == 0:
        raise StageError(f"{data_dir}: no usable utterance among {total}; reasons: {dict(reasons)}")
    if len(skipped) > config["max_skip_fraction"] * total:
        raise StageError(
            f"{data_dir}: {len(skipped)} of {total} utterances unusable, over "
            f"prepare.max_skip_fraction={config['max_skip_fraction']}; reasons: {dict(reasons)} "
            f"(each is logged above); fix the data or raise the fraction in the config"
        )
    validate_recordings_and_supervisions(recordings, supervisions)
    cuts = CutSet.from_manifests(recordings=recordings, supervisions=supervisions).trim_to_supervisions(
        keep_overlapping=False
    )
    for name, manifest in (("recordings", recordings), ("supervisions", supervisions), ("cuts", cuts)):
        with atomic_file(paths[name]) as tmp:
            manifest.to_file(tmp)
    with atomic_file(paths["skipped"]) as tmp:
        tmp.write_text("".join(f"{utt} {reason}\n" for utt, reason in skipped), encoding="utf-8")
    hours = sum(s.duration for s in supervisions) / 3600
    log.info("%s: %d utterances (%.3f h), %d skipped %s", subset, len(supervisions), hours, len(skipped), dict(reasons))
    run.write_provenance(
        paths["provenance"], data_dir=str(data_dir), utterances=len(supervisions),
        hours=round(hours, 4), skipped=len(skipped), skipped_reasons=dict(reasons),
    )
    return cuts


def export_kaldi_data_dir(manifest_dir: Path, subset: str, out_dir: Path) -> None:
    """Write ``subset``'s manifests back as a Kaldi data dir (wav.scp, text, utt2spk, ...)."""
    paths = manifest_paths(manifest_dir, subset)
    for name in ("recordings", "supervisions"):
        if not paths[name].is_file():
            raise StageError(f"{paths[name]} is missing: run `prepare import` for {subset} first")
    export_to_kaldi(
        RecordingSet.from_file(paths["recordings"]),
        SupervisionSet.from_file(paths["supervisions"]),
        output_dir=out_dir,
        map_underscores_to=None,
        prefix_spk_id=False,
    )
