"""A Kaldi-style lattice decoder over Vosk's graph, composing ``HCL o G`` as it goes the way
Vosk does (OpenFst's lookahead ``ComposeFst`` under ``LatticeIncrementalDecoder``), in numpy::

    decoder = LazyDecoder(read_graph(model_dir), transition_model, DecoderOptions())
    decoder.advance(loglikes)              # (frames, num_pdfs) log-likelihoods, any number of times
    decoder.best_path_transitions()        # traceback of the best token (Vosk's silence weighting)
    mbr, best = decoder.finish()           # word ids: minimum Bayes risk, most likely

**The composed graph.** A state is (HCL state h, G state g) and, as in OpenFst's
``PushWeightsComposeFilter``, a pushed look-ahead weight: reading an HCL arc without a word
keeps g and is allowed only where g has arcs for words h can output next (or h can end and g
is final); the arc then carries ``lookahead(h', g)`` minus the weight pushed so far
(:meth:`local.kaldi_ko.graph.Graph.lookahead`). An HCL arc with a word takes g's own arc for
it (G's cost; the pushed weight drops to 0). G's back-off arcs are epsilon moves of their own,
``(h, g) -> (h, back-off of g)``, allowed and pushed the same way. Paths keep their costs
(pushed weights cancel, final weights subtract the last one); what the pushing changes is which
tokens pruning keeps, as in Vosk. Not reproduced: OpenFst's label pushing (it moves where G
advances, not what paths cost) and its epsilon-sequencing filter (it removes duplicate paths).

**Search** (``LatticeFasterDecoder``): per frame, tokens above the cutoff (best + ``beam``,
tightened to the ``max_active``-th best cost, loosened to the ``min_active``-th; the beam that
results is the "adaptive beam") are expanded along emitting arcs (input label = transition-id,
acoustic cost = minus the network output of its pdf, acoustic scale 1 as chain models use); new
tokens cheaper than the best new cost plus the adaptive beam are kept, then epsilon arcs
(disambiguation symbols, G's back-off) are followed within the frame.

**Result** (Vosk's ``GetResult``): the lattice of every arc kept, as Kaldi's determinized lattice
holds it (each word sequence within ``lattice_beam`` of the best path, with its best path's graph
and acoustic costs), graph costs scaled by ``graph_scale`` (Vosk: 0.9), then the minimum-Bayes-risk
word sequence (:mod:`local.kaldi_ko.mbr`; Vosk's default) or the most likely one (Vosk's
``SetMaxAlternatives(1)``). Not reproduced: the word-boundary alignment Vosk applies first (it
gives word times; it only changes the lattice's shape).
"""
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np

from local.kaldi_ko.graph import Graph
from local.kaldi_ko.mbr import mbr_decode
from speechtune.kaldi.nnet3 import TransitionModel


@dataclass(frozen=True)
class DecoderOptions:
    """Kaldi's ``LatticeFasterDecoderConfig`` numbers; defaults: Vosk's Korean
    ``conf/model.conf`` (beam 10, max-active 3000, min-active 200, lattice-beam 2) and Kaldi's
    beam-delta; ``graph_scale`` is the scale Vosk puts on the lattice's graph costs."""

    beam: float = 10.0
    max_active: int = 3000
    min_active: int = 200
    lattice_beam: float = 2.0
    beam_delta: float = 0.5
    graph_scale: float = 0.9


def _ragged_arange(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(start, start + count)`` for each pair."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(starts - np.cumsum(counts) + counts, counts)
    return offsets + np.arange(total)


@dataclass
class _Frame:
    """The tokens of one frame (after its epsilon arcs) and the links that reach them."""

    key: np.ndarray  # ((hcl_state * num_lm_states + lm_state) << 1) | (1 if a weight is pushed)
    cost: np.ndarray  # best cost from the start, plus the pushed look-ahead weight
    push: np.ndarray  # the pushed look-ahead weight
    back: np.ndarray  # best incoming link: index into emitting links (>= 0) or ~index of an epsilon link
    emit: Tuple[np.ndarray, ...]  # links from the previous frame: src, dst, graph, acoustic, word, tid
    eps: Tuple[np.ndarray, ...]  # epsilon links within the frame: src, dst, graph, word


_NO_LINK = -1 << 40


class LazyDecoder:
    """Token-passing Viterbi with lattice links over ``HCL o G``, composed lazily (module docstring)."""

    def __init__(self, graph: Graph, transition_model: TransitionModel,
                 options: DecoderOptions = DecoderOptions()):
        self.graph, self.options = graph, options
        self.hcl, self.lm = graph.hcl, graph.lm
        self.tid_to_pdf = transition_model.transition_id_to_pdf().astype(np.int64)
        if self.hcl.ilabel.max() >= len(self.tid_to_pdf):
            raise ValueError(f"the graph has transition-id {self.hcl.ilabel.max()} but the model only "
                             f"{len(self.tid_to_pdf) - 1}: graph and model do not belong together")
        self.num_lm_states = len(self.lm.parent)
        start_key = np.array([(self.hcl.start * self.num_lm_states + self.lm.start) << 1], dtype=np.int64)
        empty = np.zeros(0, dtype=np.int64)
        first = _Frame(start_key, np.zeros(1), np.zeros(1), np.array([_NO_LINK]), (empty,) * 6, (empty,) * 4)
        self.frames: List[_Frame] = [self._process_nonemitting(first, options.beam)]

    @property
    def num_frames_decoded(self) -> int:
        return len(self.frames) - 1

    def _get_cutoff(self, cost: np.ndarray) -> Tuple[float, float]:
        """Kaldi's ``GetCutoff``: (cutoff, adaptive beam)."""
        o = self.options
        best = float(cost.min())
        beam_cutoff = best + o.beam
        if len(cost) > o.max_active:
            max_active_cutoff = float(np.partition(cost, o.max_active)[o.max_active])
            if max_active_cutoff < beam_cutoff:
                return max_active_cutoff, max_active_cutoff - best + o.beam_delta
        if len(cost) > o.min_active:
            min_active_cutoff = best if o.min_active == 0 else float(np.partition(cost, o.min_active)[o.min_active])
            if min_active_cutoff > beam_cutoff:
                return min_active_cutoff, min_active_cutoff - best + o.beam_delta
        return beam_cutoff, o.beam

    def _split(self, key: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        state = key >> 1
        return state // self.num_lm_states, state % self.num_lm_states

    def _expand(self, frame_key: np.ndarray, frame_push: np.ndarray, tokens: np.ndarray, emitting: bool
                ) -> Tuple[np.ndarray, ...]:
        """The composed arcs out of ``tokens`` (indices into the frame), emitting or epsilon:
        (src token, next key, graph cost, word, transition-id, cost change, next pushed weight)."""
        h, g = self._split(frame_key[tokens])
        starts = self.hcl.first[h]
        counts = self.hcl.first[h + 1] - starts
        arcs = _ragged_arange(starts, counts)
        src, g = np.repeat(tokens, counts), np.repeat(g, counts)
        tid = self.hcl.ilabel[arcs].astype(np.int64)
        keep = tid > 0 if emitting else tid == 0
        arcs, src, g, tid = arcs[keep], src[keep], g[keep], tid[keep]
        next_h = self.hcl.nextstate[arcs].astype(np.int64)
        word = self.hcl.olabel[arcs].astype(np.int64)
        graph_cost = self.hcl.weight[arcs].astype(np.float64)
        push = np.zeros(len(arcs))
        has_word = word > 0
        index, found = self.lm.find_arcs(np.where(has_word, g, 0), np.where(has_word, word, 0))
        at = np.flatnonzero(has_word & found)
        g = g.copy()
        g[at] = self.lm.nextstate[index[at]]
        graph_cost[at] += self.lm.weights[index[at]]
        plain = np.flatnonzero(~has_word)
        push[plain] = self.graph.lookahead(next_h[plain], g[plain])
        ok = (has_word & found) | (~has_word & np.isfinite(push))
        flag = (~has_word).astype(np.int64)
        parts = [(src[ok], ((next_h[ok] * self.num_lm_states + g[ok]) << 1) | flag[ok], graph_cost[ok],
                  word[ok], tid[ok], push[ok])]
        if not emitting:  # G's back-off arcs, HCL staying where it is
            h, g = self._split(frame_key[tokens])
            parent = self.lm.parent[g]
            has = np.flatnonzero(parent >= 0)
            back_push = self.graph.lookahead(h[has], parent[has])
            ok = np.isfinite(back_push)
            has, back_push = has[ok], back_push[ok]
            parts.append((tokens[has], ((h[has] * self.num_lm_states + parent[has]) << 1) | 1,
                          self.lm.backoff[g[has]].astype(np.float64), np.zeros(len(has), dtype=np.int64),
                          np.zeros(len(has), dtype=np.int64), back_push))
        src, next_key, graph_cost, word, tid, push = (np.concatenate(x) for x in zip(*parts))
        change = graph_cost + push - frame_push[src]
        return src, next_key, graph_cost, word, tid, change, push

    def _process_nonemitting(self, frame: _Frame, cutoff: float) -> _Frame:
        """Follow epsilon arcs within the frame until no token improves (``ProcessNonemitting``)."""
        key, cost, push, back = frame.key.copy(), frame.cost.copy(), frame.push.copy(), frame.back.copy()
        links: List[Tuple[np.ndarray, ...]] = []
        frontier = np.flatnonzero(cost < cutoff)
        while frontier.size:
            src, next_key, graph_cost, word, _, change, next_push = self._expand(key, push, frontier, False)
            total = cost[src] + change
            ok = total < cutoff
            src, next_key, graph_cost, word, total, next_push = (
                src[ok], next_key[ok], graph_cost[ok], word[ok], total[ok], next_push[ok])
            if not src.size:
                break
            order = np.argsort(key, kind="stable")
            pos = np.minimum(np.searchsorted(key[order], next_key), len(key) - 1)
            found = key[order][pos] == next_key
            dst = np.where(found, order[pos], -1)
            new_keys, first_new, new_index = np.unique(next_key[~found], return_index=True, return_inverse=True)
            dst[~found] = len(key) + new_index.reshape(-1)
            key = np.concatenate([key, new_keys])
            cost = np.concatenate([cost, np.full(len(new_keys), np.inf)])
            push = np.concatenate([push, next_push[~found][first_new]])
            back = np.concatenate([back, np.full(len(new_keys), _NO_LINK)])
            first_link = sum(len(link[0]) for link in links)
            links.append((src, dst, graph_cost, word))
            best = np.lexsort((total, dst))
            best = best[np.r_[True, dst[best][1:] != dst[best][:-1]]]
            improved = best[total[best] < cost[dst[best]]]
            cost[dst[improved]] = total[improved]
            back[dst[improved]] = ~(first_link + improved)
            frontier = np.unique(dst[improved])
        eps = tuple(np.concatenate([frame.eps[i]] + [link[i] for link in links]) for i in range(4))
        return _Frame(key, cost, push, back, frame.emit, eps)

    def advance(self, loglikes: np.ndarray) -> None:
        """Decode ``loglikes`` (frames, num_pdfs), the network outputs of the next frames."""
        loglikes = np.asarray(loglikes, dtype=np.float64)
        for row in loglikes:
            prev = self.frames[-1]
            cutoff, adaptive_beam = self._get_cutoff(prev.cost)
            active = np.flatnonzero(prev.cost <= cutoff)
            src, next_key, graph_cost, word, tid, change, next_push = self._expand(prev.key, prev.push, active, True)
            acoustic = -row[self.tid_to_pdf[tid]]
            total = prev.cost[src] + change + acoustic
            next_cutoff = float(total.min()) + adaptive_beam if total.size else np.inf
            ok = total < next_cutoff
            src, next_key, graph_cost, word, tid, acoustic, total, next_push = (
                src[ok], next_key[ok], graph_cost[ok], word[ok], tid[ok], acoustic[ok], total[ok], next_push[ok])
            keys, first, dst = np.unique(next_key, return_index=True, return_inverse=True)
            dst = dst.reshape(-1)
            best = np.lexsort((total, dst))
            best = best[np.r_[True, dst[best][1:] != dst[best][:-1]]] if best.size else best
            cost = np.full(len(keys), np.inf)
            back = np.full(len(keys), _NO_LINK)
            cost[dst[best]] = total[best]
            back[dst[best]] = best
            empty = np.zeros(0, dtype=np.int64)
            frame = _Frame(keys, cost, next_push[first], back, (src, dst, graph_cost, acoustic, word, tid),
                           (empty, empty, np.zeros(0), empty))
            self.frames.append(self._process_nonemitting(frame, next_cutoff))
            if not len(self.frames[-1].key):
                raise RuntimeError(f"decoding failed at frame {self.num_frames_decoded}: no token survived")

    def best_path_transitions(self) -> np.ndarray:
        """The transition-ids, one per decoded frame, of the best token's traceback (Kaldi's
        ``BestPathEnd(use_final_probs=false)`` + ``TraceBackBestPath``)."""
        tids = np.zeros(self.num_frames_decoded, dtype=np.int64)
        t = self.num_frames_decoded
        if t == 0:
            return tids
        token = int(np.argmin(self.frames[t].cost))
        while t > 0:
            frame = self.frames[t]
            link = int(frame.back[token])
            if link < 0:
                token = int(frame.eps[0][~link])
                continue
            tids[t - 1] = frame.emit[5][link]
            token = int(frame.emit[0][link])
            t -= 1
        return tids

    def _true_cost(self, frame: _Frame) -> np.ndarray:
        """Tokens' best costs from the start, without the pushed weight."""
        return frame.cost - frame.push

    def _final_costs(self) -> np.ndarray:
        """Final costs of the last frame's tokens (HCL's and G's own; all 0 if none is final)."""
        h, g = self._split(self.frames[-1].key)
        final = self.hcl.final[h].astype(np.float64) + self.lm.final[g].astype(np.float64)
        return final if np.isfinite(final).any() else np.zeros(len(final))

    @staticmethod
    def _relax(values: np.ndarray, src: np.ndarray, dst: np.ndarray, cost: np.ndarray) -> np.ndarray:
        """Bellman-Ford along links ``src -> dst`` of ``cost`` (a frame's epsilon links):
        ``values[dst] = min(values[dst], values[src] + cost)`` until nothing improves."""
        values = values.copy()
        for _ in range(len(values) + 1):
            candidate = values[src] + cost
            better = np.flatnonzero(candidate < values[dst] - 1e-9)
            if not better.size:
                return values
            np.minimum.at(values, dst[better], candidate[better])
        raise RuntimeError("negative-cost cycle of epsilon arcs in the graph")

    def finish(self) -> Tuple[List[int], List[int]]:
        """The results (word ids) from the lattice, graph costs scaled by ``graph_scale``: the
        minimum-Bayes-risk words (Vosk's default result) and the most likely word sequence;
        both empty if no path survived."""
        hypotheses = self.word_sequences()
        if not hypotheses:
            return [], []
        scored = [(list(words), -(self.options.graph_scale * g + a)) for words, (g, a) in hypotheses.items()]
        return mbr_decode(scored), max(scored, key=lambda h: h[1])[0]

    def word_sequences(self) -> Dict[Tuple[int, ...], Tuple[float, float]]:
        """The lattice as Kaldi's determinized lattice holds it: every word sequence with a path
        within ``lattice_beam`` of the best (final costs included; none if no token is final),
        with the (graph cost, acoustic cost) of its best path."""
        num = self.num_frames_decoded
        final = self._final_costs()
        # backward costs, unscaled (epsilon links run backward: dst -> src)
        beta: List[np.ndarray] = [np.empty(0)] * (num + 1)
        for t in range(num, -1, -1):
            frame = self.frames[t]
            if t == num:
                b = final.copy()
            else:
                src, dst, graph_cost, acoustic = self.frames[t + 1].emit[:4]
                b = np.full(len(frame.key), np.inf)
                np.minimum.at(b, src, graph_cost + acoustic + beta[t + 1][dst])
            src, dst, graph_cost, _ = frame.eps
            beta[t] = self._relax(b, dst, src, graph_cost)
        limit = float(beta[0][0]) + self.options.lattice_beam + 1e-6
        if not np.isfinite(limit):
            return {}
        Paths = Dict[int, Dict[Tuple[int, ...], Tuple[float, float]]]

        def extend(paths: Paths, into: Paths, src: np.ndarray, dst: np.ndarray, graph_cost: np.ndarray,
                   acoustic: np.ndarray, word: np.ndarray, beta_dst: np.ndarray) -> bool:
            changed = False
            for i in range(len(src)):
                for prefix, (g, a) in paths.get(int(src[i]), {}).items():
                    g2, a2 = g + graph_cost[i], a + acoustic[i]
                    if g2 + a2 + beta_dst[dst[i]] > limit:
                        continue
                    key = prefix + (int(word[i]),) if word[i] > 0 else prefix
                    known = into.setdefault(int(dst[i]), {})
                    old = known.get(key)
                    if old is None or g2 + a2 < old[0] + old[1] - 1e-9:
                        known[key] = (g2, a2)
                        changed = True
            return changed

        paths: Paths = {0: {(): (0.0, 0.0)}}
        for t in range(num + 1):
            frame = self.frames[t]
            if t > 0:
                alpha = self._true_cost(self.frames[t - 1])
                src, dst, graph_cost, acoustic, word, _ = frame.emit
                kept = np.flatnonzero(alpha[src] + graph_cost + acoustic + beta[t][dst] <= limit)
                new: Paths = {}
                extend(paths, new, src[kept], dst[kept], graph_cost[kept], acoustic[kept], word[kept], beta[t])
                paths = new
            src, dst, graph_cost, word = frame.eps
            kept = np.flatnonzero(self._true_cost(frame)[src] + graph_cost + beta[t][dst] <= limit)
            for _ in range(len(frame.key) + 1):  # epsilon links within the frame, to a fixed point
                if not extend(paths, paths, src[kept], dst[kept], graph_cost[kept], np.zeros(len(kept)),
                              word[kept], beta[t]):
                    break
        result: Dict[Tuple[int, ...], Tuple[float, float]] = {}
        for token, known in paths.items():
            for words, (g, a) in known.items():
                g += final[token]
                old = result.get(words)
                if g + a <= limit and (old is None or g + a < old[0] + old[1]):
                    result[words] = (g, a)
        return result
