"""Recognize audio with a trained system exactly as the decode stage recognizes a test set
(``speechtune recognize``)::

    system = find_system(load_config([DEFAULT_CONFIG_PATH]), "finetuned")
    hyps = recognize([Path("kitchen.flac"), Path("my_data_dir")], system)
    # {"kitchen": ["TURN", "ON", "THE", "KITCHEN", "LIGHTS"], "<utt of my_data_dir>": [...], ...}
    write_text(Path("out"), hyps)                         # out/text, Kaldi's text format

Inputs are audio files in any format lhotse reads (``Recording.from_file``: WAV, FLAC, OGG, ...)
or Kaldi data dirs (``wav.scp`` with files or ``cmd |`` pipes, optional ``segments``; ``text``
and ``utt2spk`` are not needed). A file's id is its name without the extension (spaces as ``_``); a data dir's are
its utterance ids. Each recording is checked as the prepare stage checks it (missing,
truncated, unreadable, empty, NaN or out-of-range samples: an error naming the file), read on
channel 0, and resampled to the pipeline's sample rate with lhotse's ``Recording.resample``.

Long inputs are split, not refused: lhotse's ``cut_into_windows`` cuts each one into windows of
``window`` seconds (a last piece under :data:`MIN_WINDOW_SECONDS` is dropped) and their words
are joined in order. Windows are cut blindly, so a word across a boundary can be lost or
recognized twice: keep ``window`` well above an utterance's length where the audio allows.

From there on it is the pipeline's own code: the features stage's extractor
(:func:`~speechtune.features.extract.stage_extractor`) and storage
(:func:`~speechtune.features.extract.compute_features`, lilcom-compressed as the test sets'
features are), into a temporary directory; the decode stage's batches and HLG 1-best
(:func:`~speechtune.decoding.decode_cuts` with the config's ``decode`` beams) with the checkpoint
``exp/<system>/model.pt`` and ``lm_<domain>/HLG.pt`` of the domain's lang dir. So a test set's
data dir recognized here gives the decode stage's ``hyp.txt`` (tested).
"""
import logging
import tempfile
import time
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
from lhotse import CutSet, Recording, SupervisionSegment
from lhotse.cut import Cut, MonoCut
from lhotse.utils import fastcopy
from tqdm import tqdm

from speechtune.data.kaldi_dir import Segment, load_recording, read_segments
from speechtune.data.tables import read_table, write_table
from speechtune.decoding import decode_cuts, decode_loader, load_hlg, read_symbols
from speechtune.deployment.system import DeployedSystem
from speechtune.errors import StageError
from speechtune.features.extract import compute_features
from speechtune.provenance import atomic_file
from speechtune.training.checkpoint import model_from_checkpoint

log = logging.getLogger("speechtune.recognize")

DEFAULT_WINDOW_SECONDS = 20.0
# A last window shorter than this holds no word (prepare.min_duration's default, for the same
# reason) and may be too short for one feature frame.
MIN_WINDOW_SECONDS = 0.1
READ_FIX = ("leave the file out, or repair or convert it (WAV, FLAC or any other format lhotse reads; e.g. "
            "`sox in.mp3 out.wav`)")


class AudioInput(NamedTuple):
    """One utterance to recognize: its id, where its audio is (a path or a ``cmd |``), where
    that was named (for messages), and its segment of the recording (None: all of it)."""

    utt_id: str
    audio: str
    named_in: str
    segment: Optional[Segment]


def list_inputs(paths: Sequence[Path]) -> List[AudioInput]:
    """The utterances of ``paths`` (audio files and Kaldi data dirs), in order: a data dir's
    sorted by id, as the prepare stage orders them."""
    found: List[AudioInput] = []
    for path in map(Path, paths):
        if path.is_dir():
            found += _data_dir_inputs(path)
        elif path.is_file():
            # Kaldi ids hold no whitespace.
            found.append(AudioInput("_".join(path.stem.split()), str(path), str(path), None))
        else:
            raise StageError(f"{path}: no such file or directory; pass audio files (WAV, FLAC, ...) or Kaldi data "
                             "dirs holding a wav.scp")
    seen: Dict[str, str] = {}
    for item in found:
        if item.utt_id in seen:
            raise StageError(f"{item.named_in} and {seen[item.utt_id]} both give the id '{item.utt_id}' (a file's id "
                             "is its name without the extension): rename one, or recognize them in separate calls")
        seen[item.utt_id] = item.named_in
    return found


def _data_dir_inputs(data_dir: Path) -> List[AudioInput]:
    wav_scp = read_table(data_dir / "wav.scp", missing=f"{data_dir} is a directory but no Kaldi data dir: "
                         "pass audio files, or a data dir with a wav.scp (and optionally segments)")
    if not wav_scp:
        raise StageError(f"{data_dir / 'wav.scp'} is empty: list the recordings, '<id> <path>' per line")
    if not (data_dir / "segments").is_file():
        return [AudioInput(rec, wav_scp[rec], f"{data_dir / 'wav.scp'} '{rec}'", None) for rec in sorted(wav_scp)]
    inputs = []
    for utt, segment in sorted(read_segments(data_dir / "segments").items()):
        if segment.recording_id not in wav_scp:
            raise StageError(f"{data_dir / 'segments'}: '{utt}' is in recording '{segment.recording_id}', which "
                             f"{data_dir / 'wav.scp'} does not list; add it there or drop the segment")
        inputs.append(AudioInput(utt, wav_scp[segment.recording_id], f"{data_dir / 'segments'} '{utt}'", segment))
    return inputs


def input_cut(item: AudioInput, sample_rate: int, max_abs_sample: float,
              recordings: Optional[Dict[str, Recording]] = None) -> Cut:
    """The checked audio of ``item`` as one cut at ``sample_rate`` (channel 0); ``recordings``
    caches them by source, so a recording with several segments is read once."""
    recording = (recordings or {}).get(item.audio)
    if recording is None:
        recording, reason = load_recording(item.utt_id, item.audio, {"sample_rate": None, "max_abs_sample": max_abs_sample})
        if recording is None:
            where = f" ({item.named_in})" if item.named_in != item.audio else ""
            raise StageError(f"{reason}{where}; {READ_FIX}")
        if recording.num_channels > 1:
            log.warning("%s: %d channels; channel 0 is recognized (Kaldi's convention)", item.audio, recording.num_channels)
        if recording.sampling_rate != sample_rate:
            recording = recording.resample(sample_rate)
        if recordings is not None:
            recordings[item.audio] = recording
    cut = MonoCut(id=item.utt_id, start=0.0, duration=recording.duration, channel=recording.channel_ids[0],
                  recording=recording)
    if item.segment is not None:
        end = recording.duration if item.segment.end is None else item.segment.end
        if not 0 <= item.segment.start < end <= recording.duration + 0.01:
            raise StageError(f"{item.named_in}: segment [{item.segment.start}, {end}] is outside its recording "
                             f"({recording.duration:.2f} s); fix the segments file")
        cut = cut.truncate(offset=item.segment.start, duration=min(end, recording.duration) - item.segment.start)
    if cut.duration < MIN_WINDOW_SECONDS:
        raise StageError(f"{item.named_in}: {cut.duration:.3f} s of audio, too short to hold a word (under "
                         f"{MIN_WINDOW_SECONDS} s); leave it out")
    return cut


def windows(cut: Cut, window: float) -> List[Cut]:
    """``cut`` in windows of ``window`` seconds, in order, each with one supervision over all of
    it (what the decode stage's batches decode), ids ``<cut id>#<i>``."""
    pieces = [w for w in cut.cut_into_windows(duration=window) if w.duration >= MIN_WINDOW_SECONDS]
    return [fastcopy(w, id=f"{cut.id}#{i}", supervisions=[SupervisionSegment(
        id=f"{cut.id}#{i}", recording_id=w.recording_id, start=0.0, duration=w.duration, channel=w.channel, text="")])
        for i, w in enumerate(pieces)]


def recognize(paths: Sequence[Path], system: DeployedSystem, device: torch.device = torch.device("cpu"),
              window: float = DEFAULT_WINDOW_SECONDS, model: Optional[torch.nn.Module] = None) -> Dict[str, List[str]]:
    """``{id: words}`` for every utterance of ``paths``, in their order (module docstring).
    ``model``: an acoustic model to use instead of the system's checkpoint (e.g. its ONNX
    export, :class:`~speechtune.deployment.onnx_export.OnnxAcousticModel`)."""
    if window < 1.0:
        raise StageError(f"--window {window:g}: a window must be at least 1 second long")
    items = list_inputs(paths)
    started = time.perf_counter()
    recordings: Dict[str, Recording] = {}
    order: List[Tuple[str, List[str]]] = []
    pieces: List[Cut] = []
    for item in tqdm(items, desc="read audio", unit="file", disable=len(items) < 10):
        cut_windows = windows(input_cut(item, system.sample_rate, system.max_abs_sample, recordings), window)
        order.append((item.utt_id, [w.id for w in cut_windows]))
        pieces += cut_windows
    audio_seconds = sum(cut.duration for cut in pieces)
    if model is None:
        model = model_from_checkpoint(system.model_path)
        model.select_domain(system.domain)  # a domain's adapters apply to its own audio only
    model = model.to(device).eval()
    with tempfile.TemporaryDirectory(prefix="speechtune-recognize-") as tmp:
        archive = Path(tmp) / "feats.lca"
        cuts = compute_features(CutSet.from_cuts(pieces), system.extractor, archive, archive, num_jobs=1)
        hyps, _ = decode_cuts(model, decode_loader(cuts, system.decode), load_hlg(system.lang_dir, system.domain),
                              read_symbols(system.lang_dir / "words.txt"), None, system.decode)
    seconds = time.perf_counter() - started
    log.info("%d utterances, %d windows, %.1f s of audio in %.1f s (RTF %.3f)", len(items), len(pieces),
             audio_seconds, seconds, seconds / max(audio_seconds, 1e-9))
    return {utt: [word for piece in ids for word in hyps["hlg"][piece]] for utt, ids in order}


def write_text(out_dir: Path, hyps: Dict[str, List[str]]) -> Path:
    """``out_dir/text``: the hypotheses in Kaldi's ``text`` format, sorted by id as Kaldi's
    tools want it, written atomically."""
    path = Path(out_dir) / "text"
    with atomic_file(path) as tmp:
        write_table(tmp, ((utt, " ".join(words)) for utt, words in sorted(hyps.items())))
    return path
