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
and fix. Faults of one utterance skip that utterance, logged and counted in ``*_skipped.txt``
(one line each) and the provenance: audio missing, unreadable, truncated (a WAV whose header
promises more than the file holds), empty, with NaN/inf or out-of-range samples, or at the
wrong sample rate; a transcript that is not UTF-8 or empty after markup and normalization; no
speaker; a duration outside ``prepare.min_duration``..``max_duration``; more letters per second
than ``prepare.max_chars_per_second`` (a transcript the audio cannot hold). Every utterance
named in ``text`` (or ``segments``) is either kept or skipped, once. Kaldi markup
(``prepare.markup``: ``<unk>`` -> the OOV word, ``[laughter]``, ``<noise>`` dropped) is
replaced before normalization and counted. If more than ``prepare.max_skip_fraction`` of the
subset is skipped, the stage fails instead.
"""
import collections
import io
import logging
import re
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Counter, Dict, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np
import soundfile as sf
from lhotse import AudioSource, CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet
from lhotse.kaldi import export_to_kaldi
from lhotse.qa import validate_recordings_and_supervisions
from tqdm import tqdm

from speechtune.data.tables import read_table
from speechtune.errors import StageError
from speechtune.provenance import StageRun, atomic_file
from speechtune.text import apply_markup, normalize_text

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
    segments = read_segments(data_dir / "segments") if (data_dir / "segments").is_file() else None
    utt2spk = read_table(data_dir / "utt2spk")
    for utt, speaker in utt2spk.items():
        if len(speaker.split()) > 1:
            raise StageError(f"{data_dir / 'utt2spk'}: '{utt}' has {len(speaker.split())} fields after the id; "
                             f"utt2spk holds one speaker id per utterance")
    return KaldiDataDir(
        wav_scp=wav_scp,
        text=read_table(data_dir / "text", binary_values=True),
        utt2spk=utt2spk,
        segments=segments,
    )


def read_segments(path: Path) -> Dict[str, Segment]:
    """A data dir's ``segments``: ``{utt: Segment(recording, start, end)}``, end None for -1."""
    segments = {}
    for utt, value in read_table(path).items():
        fields = str(value).split()
        try:
            rec_id, start, end = fields[0], float(fields[1]), float(fields[2])
        except (IndexError, ValueError):
            raise StageError(f"{path}: '{utt}' should read '<utt> <recording> <start> <end>'") from None
        segments[utt] = Segment(rec_id, start, None if end == -1 else end)
    return segments


def wav_truncation(path: Path) -> str:
    """Why a RIFF/WAVE file is truncated (its ``data`` chunk declares more bytes than the file
    holds), or ``""``. libsndfile reads what is there without a word, so a cut-off file would
    otherwise pass with its whole transcript. Not a WAV, no data chunk found (the decoder will
    say what is wrong), or a streamed size (0 or 0xFFFFFFFF): "".
    """
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return ""
        position = 12
        while position + 8 <= size:
            f.seek(position)
            chunk, declared = struct.unpack("<4sI", f.read(8))
            if chunk == b"data":
                present = size - position - 8
                if declared not in (0, 0xFFFFFFFF) and present < declared:
                    return f"truncated WAV: its header declares {declared} bytes of audio, {present} are present"
                return ""
            position += 8 + declared + (declared & 1)
    return ""


def audio_problem(audio: np.ndarray, max_abs_sample: float) -> str:
    """Why decoded audio is unusable (empty, NaN/inf, or far beyond the [-1, 1] scale), or ``""``."""
    if audio.size == 0:
        return "empty audio"
    if not np.isfinite(audio).all():
        return f"non-finite samples: {int((~np.isfinite(audio)).sum())} NaN or inf"
    peak = float(np.abs(audio).max())
    if peak > max_abs_sample:
        return (f"samples out of range: peak {peak:.3g} beyond {max_abs_sample:g} "
                f"(prepare.max_abs_sample; audio is read on a [-1, 1] scale)")
    return ""


def _run_command(rec_id: str, command: str) -> Tuple[Optional[Recording], np.ndarray, str]:
    """Run a ``wav.scp`` command (a shell pipeline writing audio to stdout, as Kaldi's
    ``... |`` entries): the Recording (lhotse reruns the command to read it), its samples
    (channels, samples), and the reason when it fails."""
    result = subprocess.run(command, shell=True, capture_output=True)
    if result.returncode != 0:
        stderr = " ".join(result.stderr.decode("utf-8", "replace").split())[:120]
        return None, np.zeros(0), f"command failed (exit {result.returncode}: {stderr}): {command} |"
    audio, rate = sf.read(io.BytesIO(result.stdout), dtype="float32", always_2d=True)
    recording = Recording(
        id=rec_id, sources=[AudioSource(type="command", channels=list(range(audio.shape[1])), source=command)],
        sampling_rate=rate, num_samples=len(audio), duration=len(audio) / rate,
    )
    return recording, audio.T, ""


def load_recording(rec_id: str, path_or_command: str, config: Mapping[str, Any]) -> Tuple[Optional[Recording], str]:
    """A validated Recording, or None and the reason to skip it. Decodes all the audio: a
    file with a sound header and broken data must fail here, not in feature extraction.
    ``... |`` entries are shell commands, run here and again by the features stage: a data dir
    with commands is code, so use only trusted ones. ``config``: ``sample_rate`` (None: any,
    for a caller that resamples) and ``max_abs_sample`` of the ``prepare`` section."""
    sample_rate = config["sample_rate"]
    try:
        audio: Optional[np.ndarray] = None
        if path_or_command.endswith("|"):
            recording, audio, reason = _run_command(rec_id, path_or_command[:-1].strip())
            if recording is None:
                return None, reason
        else:
            path = Path(path_or_command)
            if not path.is_file():
                return None, f"audio file missing: {path_or_command}"
            truncated = wav_truncation(path)
            if truncated:
                return None, f"{truncated}: {path_or_command}"
            recording = Recording.from_file(path_or_command, recording_id=rec_id)
        if sample_rate is not None and recording.sampling_rate != sample_rate:
            return None, (
                f"wrong sample rate: {recording.sampling_rate} Hz, expected {sample_rate} Hz (resample, e.g. "
                f"`sox in.wav -r {sample_rate} out.wav`, or in a command `... | sox -t wav - -t wav -r {sample_rate} - |`)"
                f": {path_or_command}"
            )
        if audio is None:
            audio = recording.load_audio()
    except Exception as e:  # lhotse/soundfile raise many types for a corrupt file
        return None, f"unreadable audio ({type(e).__name__}: {' '.join(str(e).split())[:120]}): {path_or_command}"
    problem = audio_problem(audio, config["max_abs_sample"])
    if problem:
        return None, f"{problem}: {path_or_command}"
    return recording, ""


def _transcript(raw: bytes, markup: Mapping[str, Any], counts: Counter) -> Tuple[str, str]:
    """(normalized text, "") or ("", why it is unusable); markup replacements are counted."""
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "", "transcript is not UTF-8"
    text, replaced = apply_markup(decoded, markup["oov"], markup["drop"])
    counts.update(replaced)
    text = normalize_text(text)
    return (text, "") if text else ("", "empty transcript")


def _segment_problem(duration: float, text: str, config: Mapping[str, Any]) -> str:
    """Why an utterance of ``duration`` seconds saying ``text`` cannot be trained on, or ``""``."""
    if duration < config["min_duration"]:
        return f"too short: {duration:.3f} s, under prepare.min_duration={config['min_duration']} s"
    if duration > config["max_duration"]:
        return f"too long: {duration:.1f} s, over prepare.max_duration={config['max_duration']} s"
    letters = sum(ch.isalnum() for ch in text)
    if letters / duration > config["max_chars_per_second"]:
        return (f"transcript too long for its audio: {letters} letters in {duration:.2f} s, over "
                f"prepare.max_chars_per_second={config['max_chars_per_second']}")
    return ""


@dataclass
class Manifests:
    """What :func:`build_manifests` makes of a data dir: the usable recordings and
    supervisions, (id, reason) per skipped utterance, and counts of what was changed on the way
    (markup replaced, multi-channel recordings read on channel 0)."""

    recordings: RecordingSet
    supervisions: SupervisionSet
    skipped: List[Tuple[str, str]]
    notes: Counter


def build_manifests(data: KaldiDataDir, config: Mapping[str, Any], data_dir: Path) -> Manifests:
    """Recordings and supervisions for every usable utterance of ``data`` (``config``: the
    ``prepare`` section), and why each other one was skipped: every utterance of ``text`` or
    ``segments`` is kept or skipped, once."""
    skipped: List[Tuple[str, str]] = []
    recordings: Dict[str, Recording] = {}
    unusable: Dict[str, str] = {}
    notes: Counter = collections.Counter()
    for rec_id, path_or_command in tqdm(
        sorted(data.wav_scp.items()), desc=f"prepare {data_dir}", unit="rec", mininterval=2
    ):
        recording, reason = load_recording(rec_id, path_or_command, config)
        if recording is None:
            unusable[rec_id] = reason
        else:
            recordings[rec_id] = recording
            if recording.num_channels > 1:
                log.warning("%s: %d channels; channel 0 is used (Kaldi's convention)", rec_id, recording.num_channels)
                notes["multi-channel recordings, channel 0 used"] += 1

    if data.segments is None:
        segments = {rec_id: Segment(rec_id, 0.0, None) for rec_id in data.wav_scp}
        # An utterance of text that wav.scp lacks is one that was asked for: count it.
        segments.update({utt: Segment(utt, 0.0, None) for utt in data.text if utt not in segments})
    else:
        segments = data.segments
    supervisions = []
    for utt, segment in sorted(segments.items()):
        if segment.recording_id in unusable:
            reason = unusable[segment.recording_id]
            skipped.append((utt, reason if utt == segment.recording_id
                            else f"recording skipped ({segment.recording_id}: {reason})"))
            continue
        recording = recordings.get(segment.recording_id)
        if recording is None:
            skipped.append((utt, f"recording not in wav.scp: '{segment.recording_id}'"))
            continue
        raw_text = data.text.get(utt)
        if raw_text is None:
            skipped.append((utt, "no line in text"))
            continue
        text, reason = _transcript(raw_text, config["markup"], notes)
        if reason:
            skipped.append((utt, reason))
            continue
        speaker = data.utt2spk.get(utt)
        if not speaker:
            skipped.append((utt, "no line in utt2spk"))
            continue
        end = recording.duration if segment.end is None else segment.end
        if not 0 <= segment.start < end <= recording.duration + 0.01:
            skipped.append((utt, f"segment [{segment.start}, {end}] outside the recording"))
            continue
        duration = min(end, recording.duration) - segment.start
        reason = _segment_problem(duration, text, config)
        if reason:
            skipped.append((utt, reason))
            continue
        supervisions.append(
            SupervisionSegment(
                id=utt, recording_id=recording.id, start=segment.start, duration=duration,
                channel=0, text=text, speaker=speaker, language="English",
            )
        )
    used = {s.recording_id for s in supervisions}
    recording_set = RecordingSet.from_recordings(r for r in recordings.values() if r.id in used)
    return Manifests(recording_set, SupervisionSet.from_segments(supervisions), skipped, notes)


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
    """Import one Kaldi data dir as the manifests of ``subset``; see the module docstring. A
    subset is a name (letters, digits, ``_.-``), never a path: nothing is written outside
    ``manifest_dir``."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", subset) or ".." in subset:
        raise StageError(f"subset {subset!r}: use a name of letters, digits and _.- (e.g. target_train), not a path")
    data = read_kaldi_data_dir(data_dir)
    built = build_manifests(data, config, data_dir)
    recordings, supervisions, skipped = built.recordings, built.supervisions, built.skipped
    total = len(supervisions) + len(skipped)
    if built.notes:
        log.info("%s: %s", data_dir, dict(built.notes))
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
        # One skip per line, always: a reason never spans lines.
        tmp.write_text("".join(f"{utt} {' '.join(reason.splitlines())}\n" for utt, reason in skipped), encoding="utf-8")
    hours = sum(s.duration for s in supervisions) / 3600
    log.info("%s: %d utterances (%.3f h), %d skipped %s", subset, len(supervisions), hours, len(skipped), dict(reasons))
    run.write_provenance(
        paths["provenance"], data_dir=str(data_dir), utterances=len(supervisions),
        hours=round(hours, 4), skipped=len(skipped), skipped_reasons=dict(reasons), notes=dict(built.notes),
    )
    return cuts


def export_kaldi_data_dir(manifest_dir: Path, subset: str, out_dir: Path) -> None:
    """Write ``subset``'s manifests back as a Kaldi data dir (wav.scp, text, utt2spk, ...)."""
    paths = manifest_paths(manifest_dir, subset)
    for name in ("recordings", "supervisions"):
        if not paths[name].is_file():
            raise StageError(f"{paths[name]} is missing: run `prepare import` for {subset} first")
    recordings = RecordingSet.from_file(paths["recordings"])
    multi = [r.id for r in recordings if r.num_channels > 1]
    if multi and shutil.which("ffmpeg") is None:
        raise StageError(f"{paths['recordings']}: {len(multi)} recordings have several channels (first: {multi[0]}); "
                         "lhotse's exporter writes ffmpeg pipes for them and ffmpeg is not installed: "
                         "`apt-get install ffmpeg`, or export mono recordings")
    export_to_kaldi(
        recordings,
        SupervisionSet.from_file(paths["supervisions"]),
        output_dir=out_dir,
        map_underscores_to=None,
        prefix_spk_id=False,
    )
