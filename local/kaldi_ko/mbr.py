"""Minimum-Bayes-risk decoding of a word lattice: Kaldi's ``MinimumBayesRisk`` (lat/sausages.cc;
Xu et al., 2011, "Minimum Bayes risk decoding and system combination based on a recursion for
edit distance"), the word sequence Vosk reports by default::

    words = mbr_decode(hypotheses)     # [(word ids, log-likelihood), ...] -> word ids

The lattice is given as its word sequences with their log-likelihoods (Vosk: minus graph cost
times 0.9 minus acoustic cost of each sequence's best alignment, as lattice determinization
keeps them); they are arranged as a prefix tree whose leaves lead to one super-final state.
Starting from the most likely sequence, each iteration computes, for every position of the
current hypothesis (with an epsilon slot between words), the posterior of each word being
aligned there under the minimum-edit-distance recursion, and replaces each position by its most
likely word (epsilon drops it), until nothing changes. Kaldi runs the same recursion on its
determinized lattice, whose states can merge different histories; on a prefix tree the
recursion's expected edit distances are exact, so near ties can come out differently.
"""
import math
from typing import Dict, List, Sequence, Tuple

import numpy as np

_DELTA = 1.0e-05  # Kaldi's delta(): a small penalty on epsilon arcs against non-epsilons


def _cost(a: int, b: int, penalize: bool = False) -> float:
    if a == b:
        return 0.0
    return 1.0 + _DELTA if penalize else 1.0


def _log_add(x: float, y: float) -> float:
    if x < y:
        x, y = y, x
    if y == -math.inf:
        return x
    return x + math.log1p(math.exp(y - x))


class _Lattice:
    """Arcs (start, end, word, loglike) between states 1..N, N the super-final state, every arc
    from a lower to a higher state; ``pre[n]``: the arcs into state n."""

    def __init__(self, hypotheses: Sequence[Tuple[Sequence[int], float]]):
        children: List[Dict[int, int]] = [{}, {}]  # state 1 is the root; index 0 unused
        ends: List[Tuple[int, float]] = []
        arcs: List[Tuple[int, int, int, float]] = []
        for words, loglike in hypotheses:
            state = 1
            for word in words:
                if word not in children[state]:
                    children.append({})
                    children[state][word] = len(children) - 1
                    arcs.append((state, len(children) - 1, word, 0.0))
                state = children[state][word]
            ends.append((state, loglike))
        self.num_states = len(children)  # the super-final state: the next number
        arcs.extend((state, self.num_states, 0, loglike) for state, loglike in ends)
        self.arcs = arcs
        self.pre: List[List[int]] = [[] for _ in range(self.num_states + 1)]
        for i, (_, end, _, _) in enumerate(arcs):
            self.pre[end].append(i)


def _normalize_eps(words: Sequence[int]) -> List[int]:
    """``[0, w1, 0, w2, ..., 0]``: the words with an epsilon slot around each."""
    out = [0]
    for w in words:
        if w != 0:
            out.extend([w, 0])
    return out


def _acc_stats(lat: _Lattice, R: List[int]) -> List[List[Tuple[int, float]]]:
    """Kaldi's ``AccStats``: per position of R, (word, posterior) pairs, most likely first."""
    N, Q = lat.num_states, len(R)
    alpha = [0.0] * (N + 1)
    alpha_dash = [[0.0] * (Q + 1) for _ in range(N + 1)]
    arc_dash = [0.0] * (Q + 1)
    alpha_dash[1][0] = 0.0
    for q in range(1, Q + 1):
        alpha_dash[1][q] = alpha_dash[1][q - 1] + _cost(0, R[q - 1])
    for n in range(2, N + 1):
        total = -math.inf
        for i in lat.pre[n]:
            s, _, _, p = lat.arcs[i]
            total = _log_add(total, alpha[s] + p)
        alpha[n] = total
        for i in lat.pre[n]:
            s, _, w, p = lat.arcs[i]
            weight = math.exp(alpha[s] + p - alpha[n])
            for q in range(Q + 1):
                if q == 0:
                    arc_dash[q] = alpha_dash[s][q] + _cost(w, 0, True)
                else:
                    r = R[q - 1]
                    arc_dash[q] = min(alpha_dash[s][q - 1] + _cost(w, r), alpha_dash[s][q] + _cost(w, 0, True),
                                      arc_dash[q - 1] + _cost(0, r))
                alpha_dash[n][q] += weight * arc_dash[q]
    beta_dash = [[0.0] * (Q + 1) for _ in range(N + 1)]
    beta_arc = [0.0] * (Q + 1)
    choice = [0] * (Q + 1)
    gamma: List[Dict[int, float]] = [{} for _ in range(Q + 1)]

    def add(q: int, word: int, value: float) -> None:
        if value != 0:
            gamma[q][word] = gamma[q].get(word, 0.0) + value

    beta_dash[N][Q] = 1.0
    for n in range(N, 1, -1):
        for i in lat.pre[n]:
            s, _, w, p = lat.arcs[i]
            arc_dash[0] = alpha_dash[s][0] + _cost(w, 0, True)
            for q in range(1, Q + 1):
                r = R[q - 1]
                a1 = alpha_dash[s][q - 1] + _cost(w, r)
                a2 = alpha_dash[s][q] + _cost(w, 0, True)
                a3 = arc_dash[q - 1] + _cost(0, r)
                if a1 <= a2:
                    choice[q], arc_dash[q] = (1, a1) if a1 <= a3 else (3, a3)
                else:
                    choice[q], arc_dash[q] = (2, a2) if a2 <= a3 else (3, a3)
            beta_arc = [0.0] * (Q + 1)
            weight = math.exp(alpha[s] + p - alpha[n])
            for q in range(Q, 0, -1):
                beta_arc[q] += weight * beta_dash[n][q]
                if choice[q] == 1:
                    beta_dash[s][q - 1] += beta_arc[q]
                    add(q, w, beta_arc[q])
                elif choice[q] == 2:
                    beta_dash[s][q] += beta_arc[q]
                else:
                    beta_arc[q - 1] += beta_arc[q]
                    add(q, 0, beta_arc[q])
            beta_arc[0] += weight * beta_dash[n][0]
            beta_dash[s][0] += beta_arc[0]
    beta_arc = [0.0] * (Q + 1)
    for q in range(Q, 0, -1):
        beta_arc[q] += beta_dash[1][q]
        beta_arc[q - 1] += beta_arc[q]
        add(q, 0, beta_arc[q])
    # Kaldi stores the posteriors as floats and sorts them, most likely first.
    return [sorted(((w, float(np.float32(v))) for w, v in sorted(gamma[q].items())), key=lambda x: -x[1])
            for q in range(1, Q + 1)]


def mbr_decode(hypotheses: Sequence[Tuple[Sequence[int], float]], max_iterations: int = 100) -> List[int]:
    """The minimum-Bayes-risk word sequence (Kaldi's ``MinimumBayesRisk::MbrDecode``, starting
    from the most likely hypothesis) of word sequences with their log-likelihoods::

        mbr_decode([([1, 2], -1.0), ([1, 3], -1.5), ([1, 3, 4], -1.2)])
    """
    if not hypotheses:
        return []
    lat = _Lattice(hypotheses)
    R = list(max(hypotheses, key=lambda h: h[1])[0])
    for _ in range(max_iterations + 1):
        R = _normalize_eps(R)
        gamma = _acc_stats(lat, R)
        changed = False
        for q, posts in enumerate(gamma):
            if not posts:
                continue
            if posts[0][1] != next((v for w, v in posts if w == R[q]), 0.0):
                changed = True
            R[q] = posts[0][0]
        if not changed:
            break
    return [w for w in R if w != 0]
