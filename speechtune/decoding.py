"""Recognize a test set with a trained model, two ways (the ``decode`` stage)::

    hyps, seconds = decode_cuts(model, loader, load_hlg(lang_dir, "target"), words, tokens, params)
    write_decode_dir(Path("exp/finetuned/decode/target_test"), hyps, seconds, cuts, run)

- ``hlg/``: the HLG 1-best -- ``k2.intersect_dense_pruned`` of the network's log-probs with the
  lang dir's ``lm_<domain>/HLG.pt``, then ``k2.shortest_path`` (icefall's 1best method);
- ``greedy/``: CTC greedy search without any LM (best token per frame, repeats merged, blanks
  removed, BPE pieces joined into words), for comparison. Lexicon (phone) units have no
  spelling to join, so they get ``hlg/`` only.

Each method's folder holds ``hyp.txt``, ``ref.txt`` and ``utt2spk`` (Kaldi ``text`` format, one
line per utterance, an empty hypothesis as the bare id) for :mod:`speechtune.scoring.wer`, and
``rtf.json``: the method's decoding seconds, including the network, per second of audio.
"""
import json
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import k2
import torch
from lhotse import CutSet
from lhotse.dataset import K2SpeechRecognitionDataset, SimpleCutSampler
from torch.utils.data import DataLoader
from tqdm import tqdm

from speechtune.data.cuts import load_cuts
from speechtune.data.tables import write_table
from speechtune.errors import StageError
from speechtune.lang.lang_dir import hlg_path
from speechtune.provenance import StageRun, atomic_dir
from speechtune.scoring.wer import ErrorCounts, score
from speechtune.training.batches import batch_log_probs
from speechtune.training.checkpoint import model_from_checkpoint

log = logging.getLogger("speechtune.decode")


def read_symbols(path: Path) -> k2.SymbolTable:
    """A lang dir's ``words.txt``/``tokens.txt``; ``table[id]`` is the symbol."""
    if not Path(path).is_file():
        raise StageError(f"{path} is missing: run the lang stage first")
    return k2.SymbolTable.from_file(path)


def load_hlg(lang_dir: Path, lm: str) -> k2.Fsa:
    path = hlg_path(lang_dir, lm)
    if not path.is_file():
        raise StageError(f"{path} is missing: run the lang stage with --lm-text {lm}=<cuts>")
    return k2.arc_sort(k2.Fsa.from_dict(torch.load(path, map_location="cpu")))


def greedy_words(log_probs: torch.Tensor, length: int, tokens: Mapping[int, str]) -> List[str]:
    """CTC greedy search of one utterance: argmax tokens, repeats merged, blanks (0) removed,
    sentencepiece's word-start marker turned back into spaces."""
    best = torch.unique_consecutive(log_probs[:length].argmax(dim=-1)).tolist()
    text = "".join(tokens[t] for t in best if t != 0)
    return text.replace("\u2581", " ").split()


def decode_cuts(
    model: torch.nn.Module, loader: DataLoader, hlg: k2.Fsa, words: Mapping[int, str],
    tokens: Optional[Mapping[int, str]], params: Mapping[str, Any],
) -> Tuple[Dict[str, Dict[str, List[str]]], Dict[str, float]]:
    """``({method: {cut_id: words}}, {method: seconds})`` over every batch of ``loader``, on the
    model's device."""
    device = next(model.parameters()).device
    hlg = hlg.to(device)
    hyps: Dict[str, Dict[str, List[str]]] = {"hlg": {}, "greedy": {}} if tokens else {"hlg": {}}
    seconds = {method: 0.0 for method in hyps}
    for batch in tqdm(loader, desc="decode", unit="batch"):
        supervisions = batch["supervisions"]
        cuts = supervisions["cut"]
        rows = supervisions["sequence_idx"].tolist()
        starts = [int(s) // model.subsampling_factor for s in supervisions["start_frame"]]
        started = time.time()
        with torch.no_grad():
            log_probs = batch_log_probs(model, batch, device)
        network_seconds = time.time() - started
        lengths = [min(model.output_lengths(int(n)), log_probs.size(1) - start)
                   for n, start in zip(supervisions["num_frames"], starts)]
        # k2 wants the segments sorted by decreasing length.
        order = sorted(range(len(cuts)), key=lambda i: -lengths[i])
        segments = torch.tensor([[rows[i], starts[i], lengths[i]] for i in order], dtype=torch.int32)
        started = time.time()
        lattice = k2.intersect_dense_pruned(
            hlg, k2.DenseFsaVec(log_probs, segments),
            search_beam=params["search_beam"], output_beam=params["output_beam"],
            min_active_states=params["min_active_states"], max_active_states=params["max_active_states"],
        )
        best = k2.shortest_path(lattice, use_double_scores=True)
        for i, ids in zip(order, k2.get_aux_labels(best)):
            hyps["hlg"][cuts[i].id] = [words[w] for w in ids]
        seconds["hlg"] += network_seconds + time.time() - started
        if tokens:
            started = time.time()
            for i, cut in enumerate(cuts):
                frames = log_probs[rows[i], starts[i]:]
                hyps["greedy"][cut.id] = greedy_words(frames, lengths[i], tokens)
            seconds["greedy"] += network_seconds + time.time() - started
    return hyps, seconds


def write_decode_dir(out_dir: Path, hyps: Mapping[str, Mapping[str, Sequence[str]]], seconds: Mapping[str, float],
                     test_cuts: CutSet, run: StageRun, **provenance: Any) -> None:
    """Write ``out_dir`` (atomically): per method ``hyp.txt``, ``ref.txt``, ``utt2spk`` and
    ``rtf.json``, and the decode's ``provenance.json``."""
    audio_seconds = sum(cut.duration for cut in test_cuts)
    refs = {cut.id: " ".join(cut.supervisions[0].text.split()) for cut in test_cuts}
    speakers = {cut.id: cut.supervisions[0].speaker or "unknown" for cut in test_cuts}
    with atomic_dir(out_dir) as tmp:
        for method, table in hyps.items():
            (tmp / method).mkdir()
            write_table(tmp / method / "hyp.txt", ((utt, " ".join(words)) for utt, words in sorted(table.items())))
            write_table(tmp / method / "ref.txt", sorted(refs.items()))
            write_table(tmp / method / "utt2spk", sorted(speakers.items()))
            rtf = seconds[method] / audio_seconds
            (tmp / method / "rtf.json").write_text(json.dumps(
                {"decode_seconds": round(seconds[method], 3), "audio_seconds": round(audio_seconds, 3),
                 "rtf": round(rtf, 5)}) + "\n")
            log.info("%s: %d utterances, RTF %.4f", method, len(table), rtf)
        run.write_provenance(tmp / "provenance.json", utterances=len(test_cuts), **provenance)


def decode_loader(cuts: CutSet, params: Mapping[str, Any]) -> DataLoader:
    """Batches of up to ``decode.max_duration`` seconds of ``cuts``, in order, with their cuts."""
    return DataLoader(K2SpeechRecognitionDataset(return_cuts=True),
                      sampler=SimpleCutSampler(cuts, max_duration=params["max_duration"]), batch_size=None)


def hlg_word_errors(model: torch.nn.Module, lang_dir: Path, lm: str, cuts: CutSet,
                    params: Mapping[str, Any]) -> ErrorCounts:
    """The HLG 1-best word errors of ``model`` on ``cuts`` (e.g. the dev set after an epoch)."""
    hyps, _ = decode_cuts(model.eval(), decode_loader(cuts, params), load_hlg(lang_dir, lm),
                          read_symbols(lang_dir / "words.txt"), None, params)
    refs = {cut.id: cut.supervisions[0].text.split() for cut in cuts}
    total, _, _ = score(refs, hyps["hlg"], {})
    return total


def decode_test_set(model_path: Path, lang_dir: Path, lm: str, cuts_path: Path, out_dir: Path,
                    params: Mapping[str, Any], run: StageRun, device: torch.device = torch.device("cpu")) -> None:
    """The ``decode`` stage: ``cuts_path`` recognized by the checkpoint ``model_path`` with
    ``lang_dir``'s HLG of ``lm`` (the test set's domain), on ``device``, into ``out_dir``."""
    model = model_from_checkpoint(model_path).to(device)
    model.select_domain(lm)  # a domain's adapters apply to its own test sets only
    cuts = load_cuts(cuts_path)
    hlg = load_hlg(lang_dir, lm)
    words = read_symbols(lang_dir / "words.txt")
    tokens = read_symbols(lang_dir / "tokens.txt") if (lang_dir / "bpe.model").is_file() else None
    hyps, seconds = decode_cuts(model, decode_loader(cuts, params), hlg, words, tokens, params)
    write_decode_dir(out_dir, hyps, seconds, cuts, run, model=str(model_path), lm=lm, cuts=str(cuts_path))
