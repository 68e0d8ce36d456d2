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

LF-MMI's denominator is computed exactly, unpruned as Kaldi's chain denominator: a
forward-backward over every path of ``ctc_topo o P`` (:class:`DenominatorForward`), not a k2
lattice pruned to ``output_beam`` (as before; ``MmiLoss(..., exact_den=False)``). On a bigram P
over 500 tokens the pruned lattice held millions of arcs per batch (an untrained model's
near-uniform outputs keep most of them within the beam) and cost most of the step, while
leaving out several nats of the denominator's mass per utterance (docs/benchmarks.md).
"""
import warnings
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


class DenominatorForward:
    """The exact log-likelihood of the LF-MMI denominator graph ``ctc_topo o P`` given the
    output frames: the sum over all its paths, as ``k2.intersect_dense`` with an unbounded
    ``output_beam`` followed by ``get_tot_scores(log_semiring=True, use_double_scores=True)``
    gives it, without building the lattice.

    Every arc of ``ctc_topo o P`` entering a state has the same label (a state of ctc_topo is
    the label last read), so the graph is an HMM: ``alpha_t = (A^T alpha_{t-1}) * e_t[label]``,
    with A the states' transition probabilities (sparse: P's seen bigrams) and ``e_t`` the
    output probabilities of frame t; the final arcs (label -1) weigh the last frame's states.
    Forward and backward (``alpha``, ``beta``: the gradient is the state posteriors summed per
    label) run in float64 with per-frame renormalization, as Kaldi's chain denominator does.
    """

    def __init__(self, den_graph: k2.Fsa):
        arcs = den_graph.arcs.values()[:, :3].long()
        src, dst, label = arcs.unbind(1)
        scores = den_graph.scores.detach().to(torch.float64)
        num_states = den_graph.shape[0]
        final = label == -1
        inner = ~final
        state_label = torch.full((num_states,), -1, dtype=torch.long, device=src.device)
        state_label[dst[inner]] = label[inner]
        if not torch.equal(state_label[dst[inner]], label[inner]):
            raise ValueError("DenominatorForward: arcs entering a state carry different labels; "
                             "expected ctc_topo o P (a state per label last read)")
        self.num_states = num_states
        self.start = 0
        self.state_label = state_label.clamp(min=0)  # states nothing enters: never occupied after t=0
        self.final_weights = torch.zeros(num_states, dtype=torch.float64, device=src.device).index_add_(
            0, src[final], scores[final].exp())
        probs = scores[inner].exp()
        # Parallel arcs add up in coalesce: the sum of their probabilities, as the log semiring.
        A = torch.sparse_coo_tensor(torch.stack([src[inner], dst[inner]]), probs, (num_states, num_states)).coalesce()
        # CSR: forward + backward on bench/losses.py's batch, source bigram (996 states), 2
        # threads: 24 ms, vs 192 ms with COO and 126 ms dense (measured once, under some load).
        # torch 1.13 calls its CSR support beta.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.A = A.to_sparse_csr()
            self.A_t = A.t().coalesce().to_sparse_csr()

    def __call__(self, log_probs: torch.Tensor, segments: torch.Tensor) -> torch.Tensor:
        """Per-segment denominator log-likelihoods (float64; -inf where the graph accepts no
        path of that many frames). ``segments``: rows (sequence_idx, start_frame, duration) at
        the output frame rate, as for ``k2.DenseFsaVec``."""
        return _DenominatorFunction.apply(log_probs, segments.to(log_probs.device).long(), self)


class _DenominatorFunction(torch.autograd.Function):
    """Forward: per-segment log-likelihoods; backward: the state posteriors summed per label."""

    @staticmethod
    def forward(ctx, log_probs: torch.Tensor, segments: torch.Tensor, den: DenominatorForward) -> torch.Tensor:
        sequence, start, duration = segments.unbind(1)
        num_segments = len(duration)
        num_frames = int(duration.max()) if num_segments else 0
        device = log_probs.device
        frame = start[:, None] + torch.arange(num_frames, device=device)[None, :]
        frame = frame.clamp(max=log_probs.size(1) - 1)  # past a segment's end: never used (posterior 0)
        lp = log_probs.detach()[sequence[:, None], frame].to(torch.float64)  # (U, T, V)
        shift = lp.max(dim=-1, keepdim=True).values
        shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
        # (T, S, U): each state's output probability per frame and segment, shifted so the best is 1.
        emit = (lp - shift).exp()[:, :, den.state_label].permute(1, 2, 0).contiguous()
        # alpha[t]: the states' forward probabilities after t frames, each frame's renormalized to sum 1.
        alpha = torch.zeros(num_frames + 1, den.num_states, num_segments, dtype=torch.float64, device=device)
        alpha[0, den.start] = 1.0
        norm = torch.ones(num_frames, num_segments, dtype=torch.float64, device=device)
        for t in range(num_frames):
            a = (den.A_t @ alpha[t]) * emit[t]
            z = a.sum(dim=0)
            norm[t] = torch.where(z > 0, z, torch.ones_like(z))  # a segment with no path stays all 0
            alpha[t + 1] = a / norm[t]
        segment = torch.arange(num_segments, device=device)
        final = alpha[duration, :, segment] @ den.final_weights  # (U,): 0 where no path ends in time
        log_norm = torch.cat([torch.zeros(1, num_segments, dtype=torch.float64, device=device),
                              (norm.log() + shift.squeeze(-1).t()).cumsum(dim=0)])
        tot = log_norm[duration, segment] + final.log()
        ctx.den = den
        ctx.log_probs_shape = log_probs.shape
        ctx.log_probs_dtype = log_probs.dtype
        ctx.save_for_backward(alpha, emit, norm, final, sequence, frame, duration)
        return tot

    @staticmethod
    def backward(ctx, grad_tot: torch.Tensor):
        den = ctx.den
        alpha, emit, norm, final, sequence, frame, duration = ctx.saved_tensors
        num_frames, num_states, num_segments = emit.shape
        # At a segment's last frame, beta = final weights / the segment's likelihood (times the
        # incoming gradient); then back one frame at a time, renormalized as alpha was, so that
        # alpha[t] * beta is frame t's state posterior (summing to 1 per frame).
        alive = final > 0
        inject = torch.where(alive, grad_tot.to(torch.float64) / torch.where(alive, final, torch.ones_like(final)),
                             torch.zeros_like(final))
        beta = torch.zeros(num_states, num_segments, dtype=torch.float64, device=emit.device)
        posterior = torch.empty_like(emit)  # (T, S, U)
        for t in range(num_frames, 0, -1):
            ends = duration == t
            if bool(ends.any()):
                beta = beta + den.final_weights[:, None] * torch.where(ends, inject, torch.zeros_like(inject))
            posterior[t - 1] = alpha[t] * beta
            beta = (den.A @ (emit[t - 1] * beta)) / norm[t - 1]
        num_labels = ctx.log_probs_shape[-1]
        per_label = torch.zeros(num_frames, num_labels, num_segments, dtype=torch.float64, device=emit.device)
        per_label.index_add_(1, den.state_label, posterior)
        grad = torch.zeros(ctx.log_probs_shape, dtype=torch.float64, device=emit.device)
        grad.index_put_((sequence[:, None], frame), per_label.permute(2, 0, 1), accumulate=True)
        return grad.to(ctx.log_probs_dtype), None, None


class MmiLoss(CtcLoss):
    """LF-MMI: ``-(log p(num) - den_scale * log p(den))`` per utterance, where
    num = ``(ctc_topo o P) o transcript`` intersected with the output frames (k2, pruned to
    ``output_beam`` around the best path, as CTC) and den = ``ctc_topo o P``, summed over all
    its paths (:class:`DenominatorForward`; ``exact_den=False``: a k2 lattice pruned to
    ``output_beam`` as the numerator, icefall's ``_compute_mmi_loss_exact_optimized``: the
    computation before the exact denominator, kept for comparison).

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
        exact_den: bool = True,
    ):
        super().__init__(compiler, subsampling_factor, output_beam)
        self.bigram = bigram
        self.den_graph = compile_den_graph(compiler.ctc_topo, bigram)
        self.den_forward = DenominatorForward(self.den_graph) if exact_den else None
        self.den_scale = den_scale
        self.ctc_weight = ctc_weight

    def _tot_scores(self, log_probs: torch.Tensor, segments: torch.Tensor, dense: k2.DenseFsaVec,
                    texts: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-utterance numerator and denominator log-likelihoods (float64)."""
        num_graphs = compile_num_graphs(self.den_graph, self.compiler.transcript_fsas(texts))
        if self.den_forward is not None:
            num_lattices = k2.intersect_dense(num_graphs, dense, output_beam=self.output_beam)
            num = num_lattices.get_tot_scores(log_semiring=True, use_double_scores=True)
            return num, self.den_forward(log_probs, segments)
        # One intersection for all: graphs (num_0, den, num_1, den, ...), each pair mapped to
        # its utterance's frames, so the den graph is shared rather than copied per utterance.
        n = len(texts)
        graphs = k2.cat([num_graphs, k2.create_fsa_vec([self.den_graph])])
        utterance = torch.arange(n, dtype=torch.int32, device=log_probs.device)
        pairs = torch.stack([utterance, torch.full_like(utterance, n)], dim=1).reshape(-1)
        lattices = k2.intersect_dense(k2.index_fsa(graphs, pairs), dense, output_beam=self.output_beam,
                                      a_to_b_map=utterance.repeat_interleave(2))
        tot_scores = lattices.get_tot_scores(log_semiring=True, use_double_scores=True)
        return tot_scores[0::2], tot_scores[1::2]

    def forward(
        self, log_probs: torch.Tensor, supervisions: Mapping[str, Any]
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """The summed loss of a batch, and its counts (see the module docstring)."""
        segments, texts, dense = self._dense(log_probs, supervisions)
        num, den = self._tot_scores(log_probs, segments, dense, texts)
        mmi = -(num - self.den_scale * den)

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
