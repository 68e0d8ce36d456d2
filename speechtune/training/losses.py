"""Sequence losses with k2 on a model's log-probs: CTC, and LF-MMI (Kaldi's chain objective
with a CTC topology, as icefall's LFMMILoss) with an optional CTC regularizer.

A training loop does::

    compiler = build_graph_compiler(lang_dir, config["loss"], device)
    loss_fn = build_loss(config["loss"], compiler, model.subsampling_factor, train_texts=texts)
    if config["loss"]["type"] == "mmi":
        save_fsa(loss_fn.bigram, exp_dir / "P.pt")       # the den graph's P, for reuse
    ...
    # feature_lens: valid frames per cut (num_frames, where a cut has one supervision)
    log_probs = model(batch["inputs"], feature_lens)       # (N, T', num_tokens)
    loss, info = loss_fn(log_probs, batch["supervisions"])
    loss.backward()                                      # loss: summed over utterances
    # info: {"loss": sum, "frames": output frames, "utterances": n, "skipped": n, ...}
    # log info["loss"] / info["frames"], Kaldi's per-frame objective

``batch["supervisions"]`` is what lhotse's K2SpeechRecognitionDataset gives: ``sequence_idx``,
``start_frame``, ``num_frames`` (input frames) and ``text``. Utterances whose graph cannot
align with their frames (too few output frames for the transcript, or for LF-MMI a transcript
with a token bigram P has never seen) have an infinite loss; they are left out of the sum
and counted in ``info["skipped"]``, so one bad utterance does not end a run.
"""
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import k2
import torch
from torch import nn

from speechtune.lang.graphs import (
    TrainingGraphCompiler,
    compile_den_graph,
    compile_num_graphs,
    estimate_token_bigram,
)
from speechtune.models.layers import output_lengths

LOSS_TYPES = ("ctc", "mmi")


def encode_supervisions(
    supervisions: Mapping[str, Any], subsampling_factor: int, num_output_frames: int
) -> Tuple[torch.Tensor, List[str]]:
    """Supervision segments at the model's output frame rate, sorted as k2 needs them.

    Returns ``(segments, texts)``: ``segments`` is an int32 CPU tensor of rows
    ``(sequence_idx, start_frame // s, ceil(num_frames / s))`` (the model's
    :func:`~speechtune.models.layers.output_lengths`, capped at the output's end), sorted by decreasing
    duration (``k2.intersect_dense`` requires it; ties keep batch order), and ``texts`` the
    transcripts in the same order. As icefall's ``encode_supervisions``, except that a duration
    rounds up as the model's output does, rather than down.
    """
    start = supervisions["start_frame"].cpu() // subsampling_factor
    duration = output_lengths(supervisions["num_frames"].cpu(), subsampling_factor)
    duration = torch.minimum(duration, num_output_frames - start)
    segments = torch.stack([supervisions["sequence_idx"].cpu(), start, duration], dim=1).to(torch.int32)
    order = torch.sort(segments[:, 2], descending=True, stable=True).indices
    texts = [supervisions["text"][i] for i in order.tolist()]
    return segments[order], texts


def _summed(
    total: torch.Tensor, segments: torch.Tensor, parts: Mapping[str, torch.Tensor]
) -> Tuple[torch.Tensor, Dict[str, float]]:
    """Sum per-utterance losses over the utterances whose total is finite; count them."""
    finite = torch.isfinite(total)
    frames = segments[:, 2].to(finite.device)
    loss = total[finite].sum()
    info = {
        "loss": float(loss),
        "frames": int(frames[finite].sum()),
        "utterances": int(finite.sum()),
        "skipped": int((~finite).sum()),
    }
    info.update({name: float(value[finite].sum()) for name, value in parts.items()})
    return loss, info


class CtcLoss(nn.Module):
    """CTC with k2: ``k2.ctc_loss`` of the log-probs against ``compiler.compile(texts)``."""

    def __init__(self, compiler: TrainingGraphCompiler, subsampling_factor: int, output_beam: float):
        super().__init__()
        self.compiler = compiler
        self.subsampling_factor = subsampling_factor
        self.output_beam = output_beam

    def _dense(self, log_probs: torch.Tensor, supervisions: Mapping[str, Any]
               ) -> Tuple[torch.Tensor, List[str], k2.DenseFsaVec]:
        """The batch's segments and texts (k2's order) and its frames as a DenseFsaVec."""
        segments, texts = encode_supervisions(supervisions, self.subsampling_factor, log_probs.size(1))
        return segments, texts, k2.DenseFsaVec(log_probs, segments)

    def _ctc(self, dense: k2.DenseFsaVec, texts: Sequence[str]) -> torch.Tensor:
        """Per-utterance CTC losses (inf where the transcript cannot align)."""
        return k2.ctc_loss(self.compiler.compile(texts), dense, output_beam=self.output_beam,
                           reduction="none", use_double_scores=True)

    def forward(
        self, log_probs: torch.Tensor, supervisions: Mapping[str, Any]
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """The summed loss of a batch, and its counts (see the module docstring)."""
        segments, texts, dense = self._dense(log_probs, supervisions)
        return _summed(self._ctc(dense, texts), segments, {})


class MmiLoss(CtcLoss):
    """LF-MMI: ``-(log p(num) - den_scale * log p(den))`` per utterance, where
    num = ``(ctc_topo o P) o transcript`` and den = ``ctc_topo o P`` intersected with the
    output frames (full forward-backward, pruned to ``output_beam`` around the best path).

    With ``ctc_weight > 0`` the loss adds ``ctc_weight * CTC`` on the same output, the
    regularizer Kaldi's chain training gets from its cross-entropy branch. Kaldi's xent branch
    is a separate output head trained on numerator posteriors; here there is one head, and
    the regularizer is CTC against the transcript (no LM scores) on it.
    """

    def __init__(
        self,
        compiler: TrainingGraphCompiler,
        bigram: k2.Fsa,
        subsampling_factor: int,
        output_beam: float,
        den_scale: float,
        ctc_weight: float,
    ):
        super().__init__(compiler, subsampling_factor, output_beam)
        self.bigram = bigram
        self.den_graph = compile_den_graph(compiler.ctc_topo, bigram)
        self.den_scale = den_scale
        self.ctc_weight = ctc_weight

    def forward(
        self, log_probs: torch.Tensor, supervisions: Mapping[str, Any]
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """The summed loss of a batch, and its counts (see the module docstring)."""
        segments, texts, dense = self._dense(log_probs, supervisions)
        num_graphs = compile_num_graphs(self.den_graph, self.compiler.transcript_fsas(texts))

        # One intersection for all: graphs (num_0, den, num_1, den, ...), each pair mapped to
        # its utterance's frames, so the den graph is shared rather than copied per utterance.
        n = len(texts)
        graphs = k2.cat([num_graphs, k2.create_fsa_vec([self.den_graph])])
        device = log_probs.device
        utterance = torch.arange(n, dtype=torch.int32, device=device)
        pairs = torch.stack([utterance, torch.full_like(utterance, n)], dim=1).reshape(-1)
        lattices = k2.intersect_dense(k2.index_fsa(graphs, pairs), dense, output_beam=self.output_beam,
                                      a_to_b_map=utterance.repeat_interleave(2))
        tot_scores = lattices.get_tot_scores(log_semiring=True, use_double_scores=True)
        mmi = -(tot_scores[0::2] - self.den_scale * tot_scores[1::2])

        if self.ctc_weight == 0:
            return _summed(mmi, segments, {"mmi": mmi})
        ctc = self._ctc(dense, texts)
        return _summed(mmi + self.ctc_weight * ctc, segments, {"mmi": mmi, "ctc": ctc})


def build_loss(
    params: Mapping[str, Any],
    compiler: TrainingGraphCompiler,
    subsampling_factor: int,
    train_texts: Optional[Sequence[str]] = None,
    bigram: Optional[k2.Fsa] = None,
) -> nn.Module:
    """The loss the config's ``loss`` section asks for.

    For ``type: mmi`` the denominator's token bigram is ``bigram`` where given (a saved
    ``P.pt``, :func:`speechtune.lang.graphs.load_fsa`), else estimated from ``train_texts``; the
    loss keeps it as ``loss_fn.bigram``.
    """
    if params["type"] == "ctc":
        return CtcLoss(compiler, subsampling_factor, params["output_beam"])
    if params["type"] != "mmi":
        raise ValueError(f"loss type {params['type']!r}: expected one of {LOSS_TYPES}")
    if bigram is None:
        if train_texts is None:
            raise ValueError("an mmi loss needs train_texts to estimate its token bigram P, or a saved bigram")
        bigram = estimate_token_bigram(compiler.texts_to_ids(train_texts))
    return MmiLoss(
        compiler,
        bigram.to(compiler.device),
        subsampling_factor,
        output_beam=params["output_beam"],
        den_scale=params["den_scale"],
        ctc_weight=params["ctc_weight"],
    )
