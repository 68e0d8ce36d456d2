"""Are our network's per-frame log-likelihoods Kaldi's? Vosk (Kaldi's online pipeline: MFCC,
online i-vectors with silence weighting, the looped network) decodes graphs that force our best
path's transition-ids; the costs it reports are sums of Kaldi's log-likelihoods::

    check = frame_check(model_dir, wav)   # {"per_frame": [...], "max_abs_diff": ...}

The probes (each a linear HCLG of the utterance's length, decoded by Vosk, no dither):

- ``chain``: every frame forced to our alignment ``a``, the model's own silence phones. Vosk's
  best-path confidence is ``sum_t ll(t, a_t)``; as the path is the only one, Vosk's silence
  weighting sees the same traceback ours does, so this checks MFCC, i-vectors with silence
  weighting, and network end to end.
- ``free k`` for every frame ``k``: frame ``k`` may take any pdf (one transition-id per pdf),
  the others stay forced; its confidence minus the chain's is ``max_p ll(k, p) - ll(k, a_k)``:
  Kaldi's log-likelihoods of frame ``k``, per frame. Silence weighting would now follow Vosk's
  choice at frame ``k``, so these probes and our side declare as silence a phone no
  transition-id has: every decoded frame weighs 1 on both sides.
"""
import importlib.util
import json
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from local.kaldi_ko.agreement import VOSK_MISSING, import_vosk, in_own_process, read_pcm, undithered_copy
from local.kaldi_ko.decoder import compile_graph
from speechtune.errors import StageError

TOLERANCE = 1e-3  # per frame; Vosk prints confidences with 6 significant digits


def _probe_model(model_dir: Path, into: Path, graph_text: str, silence_phones: str) -> Path:
    """A view of the Vosk model ``model_dir`` in ``into``: no dither, ``silence_phones`` for
    silence weighting, and the graph ``graph_text``."""
    undithered_copy(model_dir, into, ["conf/model.conf", "graph"])
    conf = [line for line in (model_dir / "conf" / "model.conf").read_text().splitlines()
            if not line.startswith("--endpoint.silence-phones")]
    (into / "conf" / "model.conf").write_text("\n".join(conf + [f"--endpoint.silence-phones={silence_phones}"]) + "\n")
    (into / "graph").mkdir()
    compile_graph(graph_text).write(str(into / "graph" / "HCLG.fst"))
    (into / "graph" / "words.txt").write_text("<eps> 0\n<utt> 1\n")
    return into


def _graph_text(alignment: Sequence[int], free_frame: int = -1, free_tids: Sequence[int] = ()) -> str:
    """A linear graph over ``alignment`` (one word at the start), frame ``free_frame`` open to
    every transition-id of ``free_tids``."""
    lines = ["0 1 0 1"]
    for frame, tid in enumerate(alignment):
        for choice in (free_tids if frame == free_frame else [tid]):
            lines.append(f"{frame + 1} {frame + 2} {choice} 0")
    lines.append(str(len(alignment) + 1))
    return "\n".join(lines) + "\n"


def vosk_confidences(views: Dict[str, Path], pcm: bytes, rate: int) -> Dict[str, float]:
    """Vosk's best-path confidence for 16-bit PCM ``pcm`` under each probe model view (meant for
    :func:`in_own_process`); a StageError where Vosk finds no path through a probe graph."""
    vosk = import_vosk()
    confidences: Dict[str, float] = {}
    for name, view in views.items():
        recognizer = vosk.KaldiRecognizer(vosk.Model(str(view)), rate)
        recognizer.SetMaxAlternatives(1)
        recognizer.AcceptWaveform(pcm)
        alternatives = json.loads(recognizer.FinalResult())["alternatives"]
        if not alternatives or alternatives[0]["text"] != "<utt>":
            raise StageError(f"Vosk found no path through the probe graph {view}: the utterance's "
                             f"frame count differs from ours")
        confidences[name] = float(alternatives[0]["confidence"])
    return confidences


def frame_check(model_dir: Path, wav: Path) -> Dict[str, object]:
    """The probes of the module docstring on one utterance (16-bit PCM ``wav``); JSON-ready.
    Vosk runs in a process of its own (:func:`local.kaldi_ko.agreement.in_own_process`)."""
    from local.kaldi_ko.online import load_vosk_model, recognize

    if importlib.util.find_spec("vosk") is None:
        raise StageError(VOSK_MISSING)
    started = time.time()
    samples, rate = read_pcm(wav)
    pcm, floats = samples.tobytes(), samples.astype(np.float32) / 32768
    model = load_vosk_model(model_dir)
    silence_phones = ":".join(str(p) for p in model.silence_phones)
    tid_to_pdf = model.transition_model.transition_id_to_pdf()
    tid_to_phone = model.transition_model.transition_id_to_phone()
    # a phone no transition-id has (a disambiguation symbol): silence weighting with no silence
    phones = [int(line.split()[1]) for line in (model_dir / "graph" / "phones.txt").read_text().splitlines() if line]
    unused_phone = max(set(phones) - set(tid_to_phone.tolist()))
    one_tid_per_pdf = [int(np.flatnonzero(tid_to_pdf == pdf)[0]) for pdf in range(int(tid_to_pdf.max()) + 1)]

    alignment = recognize(model, floats, "online", None).alignment
    # ours over the same linear graph, so that our silence weighting reads Vosk's traceback
    model.graph = compile_graph(_graph_text(alignment))
    chain_loglikes = recognize(model, floats, "online", None).loglikes
    ours_chain = float(sum(chain_loglikes[t, tid - 1] for t, tid in enumerate(alignment)))
    model.silence_phones = (unused_phone,)
    neutral = recognize(model, floats, "online", None).loglikes
    ours_forced = np.array([neutral[t, tid - 1] for t, tid in enumerate(alignment)])
    ours_gap = neutral.max(axis=1) - ours_forced

    with tempfile.TemporaryDirectory(prefix="vosk-probe-") as tmp:
        views = {"chain": _probe_model(model_dir, Path(tmp) / "chain", _graph_text(alignment), silence_phones),
                 "forced": _probe_model(model_dir, Path(tmp) / "forced", _graph_text(alignment), str(unused_phone))}
        for k in range(len(alignment)):
            views[f"free{k}"] = _probe_model(model_dir, Path(tmp) / f"free{k}",
                                             _graph_text(alignment, k, one_tid_per_pdf), str(unused_phone))
        kaldi = in_own_process(vosk_confidences, views, pcm, rate)
    per_frame: List[Dict[str, float]] = []
    for k in range(len(alignment)):
        kaldi_gap = kaldi[f"free{k}"] - kaldi["forced"]
        per_frame.append({"frame": k, "kaldi": round(kaldi_gap, 6), "ours": round(float(ours_gap[k]), 6),
                          "diff": round(float(ours_gap[k]) - kaldi_gap, 6)})
    max_abs = max(abs(f["diff"]) for f in per_frame)
    return {
        "utterance": wav.stem, "frames": len(alignment), "tolerance_per_frame": TOLERANCE,
        "chain": {"kaldi": kaldi["chain"], "ours": round(ours_chain, 6), "diff": round(ours_chain - kaldi["chain"], 6)},
        "forced_no_silence_weighting": {"kaldi": kaldi["forced"], "ours": round(float(ours_forced.sum()), 6)},
        "max_abs_diff": round(max_abs, 6), "within_tolerance": bool(max_abs <= TOLERANCE),
        "seconds": round(time.time() - started, 1), "per_frame": per_frame,
    }
