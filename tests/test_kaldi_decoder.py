"""Decoding the Korean model's outputs with Kaldi's LatticeFasterDecoder (local.kaldi_ko.decoder) over
static and lookahead graphs, the MBR and Vosk's silence weighting (local.kaldi_ko.online), on hand-made
two-word graphs."""
import glob
import os
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from local.kaldi_ko.decoder import DecoderOptions, GraphSearch, compile_graph, read_graph, word_sequences
from local.kaldi_ko.mbr import mbr_decode
from local.kaldi_ko.online import SilenceWeighting

A, B = 1, 2  # words

# HCLG: from 0, tid 1 reads "a" (0.3) and tid 2 reads "b" (1.5); states 1 and 2 loop on their tid
# (0.1 each), end (0.2), or go back to 0 through an epsilon (1.5).
HCLG_TEXT = """0 1 1 1 0.3
0 2 2 2 1.5
1 1 1 0 0.1
1 0 0 0 1.5
2 2 2 0 0.1
2 0 0 0 1.5
1 0.2
2 0.2
"""


class _TransitionModel:
    """Transition-ids 1 and 2 read pdfs 0 and 1."""

    @staticmethod
    def transition_id_to_pdf() -> np.ndarray:
        return np.array([-1, 0, 1])


def _hclg(tmp_path: Path) -> object:
    compile_graph(HCLG_TEXT).write(str(tmp_path / "HCLG.fst"))
    (tmp_path / "words.txt").write_text("<eps> 0\na 1\nb 2\n")
    graph, words = read_graph(tmp_path)
    assert words == {0: "<eps>", 1: "a", 2: "b"} and not graph.is_lookahead
    return graph


def test_decodes_the_words_the_frames_say(tmp_path: Path) -> None:
    loglikes = np.array([[2.0, -2.0]] * 3 + [[-2.0, 2.0]] * 3)  # "a" frames, then "b" frames
    search = GraphSearch(_hclg(tmp_path), _TransitionModel(), DecoderOptions())
    search.advance(loglikes[:4])
    assert search.num_frames_decoded == 4
    transition_ids, tokens = search.traceback()
    assert transition_ids.tolist() == [1, 1, 1, 2]
    assert len(set(tokens.tolist())) == 4 and 0 not in tokens  # a token per frame
    search.advance(loglikes[4:])
    mbr, best = search.finish()
    assert best == [A, B] and mbr == [A, B]
    hypotheses = search.word_sequences()
    assert hypotheses[0][0] == [A, B]
    # graph: a (0.3), 2 self-loops (0.2), back (1.5), b (1.5), 2 self-loops (0.2), final (0.2),
    # times 0.9;
    # acoustic: minus the six frames' log-likelihoods of 2
    assert hypotheses[0][1] == pytest.approx(-(0.9 * 3.9 - 12.0), abs=1e-4)


def test_the_online_traceback_ignores_final_weights_as_kaldi_does() -> None:
    # tid 1 (cost 1) reaches a final state, tid 2 (cost 0) one that is not: Kaldi's
    # BestPathEnd(use_final_probs=false) takes the cheaper token, whatever is final
    search = GraphSearch(compile_graph("0 1 1 1 1.0\n0 2 2 2 0.0\n1 0.0\n"), _TransitionModel(), DecoderOptions())
    search.advance(np.zeros((1, 2)))
    assert search.traceback()[0].tolist() == [2]
    assert search.finish() == ([A], [A])  # only "a" ends in a final state
    assert search.best_path_transitions().tolist() == [1]  # once finished, final weights count


class _TwoAlignmentsOfA:
    """Transition-ids 1 and 3 read pdf 0, 2 reads pdf 1."""

    @staticmethod
    def transition_id_to_pdf() -> np.ndarray:
        return np.array([-1, 0, 1, 0])


@pytest.mark.parametrize("lattice_beam, expected", [(2.0, [([A], -0.45), ([B], -1.0)]), (0.4, [([A], -0.45)])])
def test_the_lattice_keeps_each_word_sequence_once_with_its_best_path(lattice_beam: float, expected: list) -> None:
    # "a" through tid 1 (graph 1.0) or tid 3 (graph 0.5), "b" through tid 2 (graph 0, pdf 1 at -1)
    graph = compile_graph("0 1 1 1 1.0\n0 1 3 1 0.5\n0 2 2 2 0.0\n1 0.0\n2 0.0\n")
    search = GraphSearch(graph, _TwoAlignmentsOfA(), DecoderOptions(lattice_beam=lattice_beam))
    search.advance(np.array([[0.0, -1.0]]))
    found = search.word_sequences()  # within the beam of the best (0.5) at graph scale 1
    assert [words for words, _ in found] == [words for words, _ in expected]
    assert [score for _, score in found] == pytest.approx([score for _, score in expected])  # graph x 0.9


def test_outputs_of_the_wrong_width_are_refused(tmp_path: Path) -> None:
    search = GraphSearch(_hclg(tmp_path), _TransitionModel(), DecoderOptions())
    with pytest.raises(ValueError, match="pdfs up to 1"):
        search.advance(np.zeros((3, 1)))


def test_a_missing_graph_names_the_files_looked_for(tmp_path: Path) -> None:
    (tmp_path / "HCLr.fst").write_text("")  # half a lookahead graph
    with pytest.raises(FileNotFoundError, match="expected HCLG.fst, or HCLr.fst, Gr.fst, disambig_tid.int"):
        read_graph(tmp_path)


def test_word_sequences_read_a_word_lattice_from_its_start_state() -> None:
    lattice = "0 1 1 1 1,2\n0 2 2 2 0,4\n1 0,0\n2 0,0\n"  # "a" (graph 1, acoustic 2), "b" (0, 4)
    assert word_sequences(lattice, graph_scale=0.5) == [([A], pytest.approx(-2.5)), ([B], pytest.approx(-4.0))]
    assert word_sequences("0 1 1 1 1,2\n", graph_scale=1.0) == []  # no final state
    # a lattice need not start at state 0: OpenFst prints the start state first
    later_start = "2 0 1 1 1,2\n0 1 2 2 0,1\n1 0,0.5\n"
    assert word_sequences(later_start, graph_scale=1.0) == [([A, B], pytest.approx(-4.5))]


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
    weighting.set_traceback(np.array([1, 2]), np.array([10, 11]))  # frame 0 silence, frame 1 speech
    deltas = dict(weighting.delta_weights(num_frames_ready=9))
    # frame 0 stays silence (no change given); frame 1 becomes speech; frame 2, not decoded yet,
    # copies frame 1
    assert [deltas.get(t) for t in range(9)] == [None] * 3 + [1 - 1e-3] * 3 + [1.0] * 3


def test_silence_weighting_stops_its_traceback_where_kaldi_does() -> None:
    weighting = SilenceWeighting(np.array([0, 1, 5]), silence_phones=[1], silence_weight=1e-3,
                                 frame_subsampling_factor=3)
    weighting.set_traceback(np.array([1, 2, 2]), np.array([10, 11, 12]))
    # a new best path: frame 2 from another token, frame 1 from the same token 11 by another arc
    # (tid 1), frame 0 changed too; Kaldi stops at frame 1's token: frames 0 and 1 keep theirs
    weighting.set_traceback(np.array([2, 1, 1]), np.array([20, 11, 13]))
    assert weighting.transition_id == [1, 2, 1]
    assert weighting.token == [10, 11, 13]


# HCL: tid 1 reads "a" (then loops on 1, 0.1), and the disambiguation tid 3 goes back to the start;
# tid 2 reads "b" (loops 0.1), an epsilon goes back
HCL_TEXT = "0 1 1 1\n1 1 1 0 0.1\n1 0 3 0\n0 2 2 2\n2 2 2 0 0.1\n2 0 0 0\n0\n"
# G, a bigram in OpenFst's n-gram form: the unigram state 0, the start state 1 (<s>) backing off
# to it; "a" (0.5) and "b" (0.7) from the unigram state, "b" after "a" (0.2)
G_TEXT = "1 0 <eps> <eps> 0.1\n0 2 a a 0.5\n0 3 b b 0.7\n2 3 b b 0.2\n2 0 <eps> <eps> 0.2\n3 0 <eps> <eps> 0.3\n2 0.4\n3 0.6\n"
WORDS_TEXT = "<eps> 0\na 1\nb 2\n"


class _DisambiguationReadsAPdf:
    """Transition-ids 1 and 2 read pdfs 0 and 1; the disambiguation tid 3 would read pdf 1 if it
    were not removed."""

    @staticmethod
    def transition_id_to_pdf() -> np.ndarray:
        return np.array([-1, 0, 1, 1])


def _fst_tool(command: List[str], env: Dict[str, str]) -> None:
    subprocess.run(command, check=True, env=env, capture_output=True)


def _decode(graph: object) -> Tuple[List[int], List[Tuple[List[int], float]]]:
    search = GraphSearch(graph, _DisambiguationReadsAPdf(), DecoderOptions())
    search.advance(np.array([[2.0, -2.0]] * 3 + [[-2.0, 2.0]] * 3))  # "a" frames, then "b" frames
    hypotheses = search.word_sequences()
    return search.best_path_transitions().tolist(), hypotheses


@pytest.mark.skipif(shutil.which("fstconvert") is None or not glob.glob("/usr/lib/*/fst/*/olabel_lookahead-fst.so"),
                    reason="OpenFst's tools and plugins are not installed (make setup)")
def test_a_lookahead_graph_decodes_as_its_static_composition(tmp_path: Path) -> None:
    # Vosk's lookahead graph as its recipe stores it: HCL as an olabel_lookahead FST (its output
    # labels relabeled for the lookahead, G's input labels relabeled to match), G as an n-gram FST
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.dirname(glob.glob("/usr/lib/*/fst/*/olabel_lookahead-fst.so")[0]))
    model, static = tmp_path / "graph", tmp_path / "static"
    model.mkdir()
    static.mkdir()
    (tmp_path / "words.txt").write_text(WORDS_TEXT)
    compile_graph(HCL_TEXT).write(str(tmp_path / "HCL.fst"))
    _fst_tool(["fstconvert", "--fst_type=olabel_lookahead", f"--save_relabel_opairs={tmp_path / 'relabel'}",
               str(tmp_path / "HCL.fst"), str(model / "HCLr.fst")], env)
    (tmp_path / "G.txt").write_text(G_TEXT)
    words = str(tmp_path / "words.txt")
    _fst_tool(["fstcompile", f"--isymbols={words}", f"--osymbols={words}", "--keep_isymbols", "--keep_osymbols",
               str(tmp_path / "G.txt"), str(tmp_path / "G.fst")], env)
    _fst_tool(["fstrelabel", f"--relabel_ipairs={tmp_path / 'relabel'}", str(tmp_path / "G.fst"),
               str(tmp_path / "G_relabeled.fst")], env)
    _fst_tool(["fstarcsort", str(tmp_path / "G_relabeled.fst"), str(tmp_path / "G_sorted.fst")], env)
    _fst_tool(["fstconvert", "--fst_type=ngram", str(tmp_path / "G_sorted.fst"), str(model / "Gr.fst")], env)
    (model / "disambig_tid.int").write_text("3\n")
    lookahead, lookahead_words = read_graph(model)
    assert lookahead.is_lookahead and lookahead_words == {0: "<eps>", 1: "a", 2: "b"}  # from G's symbols

    # the same graph composed once by OpenFst's tools, the disambiguation tid made epsilon
    _fst_tool(["fstsymbols", "--clear_isymbols", "--clear_osymbols", str(model / "Gr.fst"), str(tmp_path / "Gr_bare.fst")], env)
    _fst_tool(["fstcompose", str(model / "HCLr.fst"), str(tmp_path / "Gr_bare.fst"), str(tmp_path / "HCL_G.fst")], env)
    (tmp_path / "disambig_to_epsilon").write_text("3 0\n")
    _fst_tool(["fstrelabel", f"--relabel_ipairs={tmp_path / 'disambig_to_epsilon'}", str(tmp_path / "HCL_G.fst"),
               str(static / "HCLG.fst")], env)
    (static / "words.txt").write_text(WORDS_TEXT)
    hclg, _ = read_graph(static)

    transitions, hypotheses = _decode(lookahead)
    assert transitions == [1, 1, 1, 2, 2, 2]  # tid 3 read no frame
    assert [words for words, _ in hypotheses][0] == [A, B]
    # G: <s> backs off (0.1), a (0.5), b after a (0.2), final (0.6); HCL: four self-loops (0.4).
    # The lookahead filter pushes G's costs forward as quantized log-sums, which do not cancel
    # exactly (5e-4 here): Vosk's graph has the same rounding
    assert hypotheses[0][1] == pytest.approx(-(0.9 * 1.8 - 12.0), abs=1e-2)
    static_transitions, static_hypotheses = _decode(hclg)
    assert static_transitions == transitions
    assert [words for words, _ in static_hypotheses] == [words for words, _ in hypotheses]
    assert [score for _, score in static_hypotheses] == pytest.approx([score for _, score in hypotheses], abs=1e-4)


def test_frame_probe_graphs_force_the_alignment_and_open_one_frame() -> None:
    from local.kaldi_ko.frame_check import _graph_text

    forced = compile_graph(_graph_text([5, 6]))
    assert forced.num_states == 4
    free = [line.split() for line in _graph_text([5, 6], free_frame=1, free_tids=[1, 2, 3]).splitlines()]
    assert [f[2] for f in free if len(f) == 4 and f[0] == "2"] == ["1", "2", "3"]
    assert [f[2] for f in free if len(f) == 4 and f[0] == "1"] == ["5"]
