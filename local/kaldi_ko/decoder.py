"""Decoding the Korean model's network outputs over its static HCLG with Kaldi's own decoders
(the ``kaldi-decoder`` package) and OpenFst (``kaldifst``), the way Vosk decodes::

    search = GraphSearch(read_hclg(graph_dir), transition_model, DecoderOptions())
    search.advance(loglikes)           # (frames, num_pdfs) network outputs, any number of times
    search.best_path_transitions()     # the best token's traceback (Vosk's silence weighting)
    mbr, best = search.finish()        # word ids: minimum Bayes risk, most likely

**Online search** (Kaldi's ``FasterDecoder``; beam, max-active and min-active as Vosk's
``LatticeIncrementalDecoder`` prunes): it advances as the network's chunks arrive, so that the
traceback Vosk's silence weighting reads mid-utterance is the one Kaldi's pruning gives. It runs
over a copy of HCLG without final weights (:class:`DecodingGraph`): Kaldi's
``FasterDecoder::GetBestPath`` takes final weights into account whenever any token sits in a
final state, whatever its ``use_final_probs`` says, and in this HCLG one always does; Vosk's
silence weighting traces back from the cheapest token, final weights ignored
(``BestPathEnd(use_final_probs=false)``). The search itself never reads final weights, so both
copies keep the same tokens. The network outputs pdfs, the graph's input labels are
transition-ids: column ``tid - 1`` of what ``DecodableCtc`` reads is the log-likelihood of
``pdf(tid)`` (acoustic scale 1, as chain models use).

**Result** (Vosk's ``GetResult``): Kaldi's ``LatticeSimpleDecoder`` decodes the utterance's
outputs again into a lattice (beam and lattice beam as Vosk's; it has no max-active), the graph
costs are scaled by ``graph_scale`` (Vosk: 0.9), and OpenFst's epsilon removal + determinization
keep each word sequence once, with its best path's cost. The most likely word sequence is Vosk's
``SetMaxAlternatives(1)``; the minimum-Bayes-risk one (:mod:`local.kaldi_ko.mbr`) is Vosk's
default. What stays ours, and why: the MBR (Kaldi's ``MinimumBayesRisk`` is in no maintained
package: ``kaldi-decoder`` and ``kaldifst`` stop at lattices) and the step from the decoder's
lattice to word sequences (``kaldifst`` reads lattices only as text).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from local.kaldi_ko.mbr import mbr_decode
from speechtune.kaldi.nnet3 import TransitionModel

GRAPH_FILE = "HCLG.fst"
WORDS_FILE = "words.txt"


@dataclass(frozen=True)
class DecoderOptions:
    """Kaldi's decoder numbers; defaults: Vosk's Korean ``conf/model.conf`` (beam 10,
    max-active 3000, min-active 200, lattice-beam 2) and Kaldi's beam-delta; ``graph_scale`` is
    the scale Vosk puts on the lattice's graph costs."""

    beam: float = 10.0
    max_active: int = 3000
    min_active: int = 200
    lattice_beam: float = 2.0
    beam_delta: float = 0.5
    graph_scale: float = 0.9


@dataclass
class DecodingGraph:
    """HCLG (a ``kaldifst.StdVectorFst``) and its copy without final weights, for the online
    traceback (module docstring)::

        graph = DecodingGraph.of(kaldifst.StdVectorFst.read("exp/kaldi_ko/graph/HCLG.fst"))
    """

    fst: object
    without_finals: object

    @classmethod
    def of(cls, fst: object) -> "DecodingGraph":
        import kaldifst

        zero = kaldifst.TropicalWeight.zero
        without_finals = fst.copy()  # type: ignore[attr-defined]
        for state in range(without_finals.num_states):
            if without_finals.final(state) != zero:
                without_finals.set_final(state, zero)
        return cls(fst, without_finals)


def read_hclg(graph_dir: Path) -> DecodingGraph:
    """``graph_dir/HCLG.fst`` (the Korean graph: ~25 s, 3.8 GB with its copy)."""
    import kaldifst

    path = Path(graph_dir) / GRAPH_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no decoding graph; build it with "
                                f"`snakemake {path}` (needs `make setup KALDI_KO=1`)")
    return DecodingGraph.of(kaldifst.StdVectorFst.read(str(path)))


def read_words(graph_dir: Path) -> Dict[int, str]:
    """``graph_dir/words.txt``: word id -> word."""
    words: Dict[int, str] = {}
    with open(Path(graph_dir) / WORDS_FILE, encoding="utf-8") as f:
        for line in f:
            word, index = line.split()
            words[int(index)] = word
    return words


Arc = Tuple[int, int, int, int, float, float]  # src, dst, ilabel, olabel, graph cost, acoustic cost


def _fst_text(text: str) -> Tuple[List[Tuple[int, int, int, int, str]], Dict[int, str]]:
    """OpenFst's text form (``to_str()``): arcs (src, dst, ilabel, olabel, weight) and final
    states' weights, the weights as printed ("" for One). The start state's lines come first."""
    arcs: List[Tuple[int, int, int, int, str]] = []
    finals: Dict[int, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 4:
            arcs.append((int(fields[0]), int(fields[1]), int(fields[2]), int(fields[3]),
                         fields[4] if len(fields) == 5 else ""))
        elif fields:
            finals[int(fields[0])] = fields[1] if len(fields) == 2 else ""
    return arcs, finals


def _lattice_weight(printed: str) -> Tuple[float, float]:
    """A Kaldi ``LatticeWeight`` as printed, "graph,acoustic": (graph, acoustic)."""
    graph, acoustic = printed.split(",") if printed else ("0", "0")
    return float(graph), float(acoustic)


def parse_lattice(text: str) -> Tuple[List[Arc], Dict[int, Tuple[float, float]]]:
    """A Kaldi ``Lattice`` in OpenFst's text form (``kaldifst.Lattice.to_str()``): its arcs
    and its final states with their (graph, acoustic) costs."""
    arcs, finals = _fst_text(text)
    return ([(s, d, i, o, *_lattice_weight(w)) for s, d, i, o, w in arcs],
            {s: _lattice_weight(w) for s, w in finals.items()})


def word_sequences(text: str, graph_scale: float, beam: float) -> List[Tuple[List[int], float]]:
    """The word sequences of a state-level lattice (``Lattice.to_str()``) whose best path
    costs at most ``beam`` more than the lattice's best, each once with its best path's
    log-likelihood ``-(graph_scale * graph + acoustic)``, best first. OpenFst removes the
    epsilons and determinizes (tropical: a word sequence keeps its cheapest path)."""
    import kaldifst

    def scaled(printed: str) -> float:
        graph, acoustic = _lattice_weight(printed)
        return graph_scale * graph + acoustic

    arcs, finals = _fst_text(text)
    if not finals:
        return []  # no final state: no path
    # arcs in printed order, the start state's first, as OpenFst's text form needs
    lines = [f"{s} {d} {o} {o} {scaled(w)!r}" for s, d, _, o, w in arcs]
    lines += [f"{state} {scaled(w)!r}" for state, w in finals.items()]
    fst = kaldifst.compile("\n".join(lines) + "\n")
    kaldifst.rmepsilon(fst)
    det = kaldifst.determinize(fst)
    det_arcs: Dict[int, List[Tuple[int, int, float]]] = {}
    arcs, finals = _fst_text(det.to_str())
    for src, dst, _, word, weight in arcs:
        det_arcs.setdefault(src, []).append((dst, word, float(weight or 0.0)))
    det_finals = {state: float(weight or 0.0) for state, weight in finals.items()}
    to_end = _costs_to_end(det.start, det_arcs, det_finals)
    limit = to_end[det.start] + beam + 1e-4
    found: List[Tuple[List[int], float]] = []
    stack: List[Tuple[int, float, Tuple[int, ...]]] = [(det.start, 0.0, ())]
    while stack:
        state, cost, words = stack.pop()
        if state in det_finals and cost + det_finals[state] <= limit:
            found.append((list(words), -(cost + det_finals[state])))
        for dst, word, weight in det_arcs.get(state, []):
            if cost + weight + to_end.get(dst, np.inf) <= limit:
                stack.append((dst, cost + weight, words + (word,) if word else words))
    return sorted(found, key=lambda h: -h[1])


def _costs_to_end(start: int, arcs: Dict[int, List[Tuple[int, int, float]]],
                  finals: Dict[int, float]) -> Dict[int, float]:
    """Cheapest cost from each state of an acyclic FST to a final state."""
    order: List[int] = []
    seen = {start}
    stack = [(start, iter(arcs.get(start, [])))]
    while stack:  # depth-first post-order = reverse topological order
        state, it = stack[-1]
        for dst, _, _ in it:
            if dst not in seen:
                seen.add(dst)
                stack.append((dst, iter(arcs.get(dst, []))))
                break
        else:
            order.append(state)
            stack.pop()
    cost: Dict[int, float] = {}
    for state in order:
        best = finals.get(state, np.inf)
        for dst, _, weight in arcs.get(state, []):
            best = min(best, weight + cost.get(dst, np.inf))
        cost[state] = best
    return cost


class GraphSearch:
    """One utterance's search over HCLG (module docstring)."""

    def __init__(self, graph: DecodingGraph, transition_model: TransitionModel,
                 options: DecoderOptions = DecoderOptions()):
        import kaldi_decoder

        self._kaldi_decoder = kaldi_decoder
        self.graph, self.options = graph, options
        self.tid_to_pdf = transition_model.transition_id_to_pdf().astype(np.int64)
        self.decoder = kaldi_decoder.FasterDecoder(graph.without_finals, kaldi_decoder.FasterDecoderOptions(
            beam=options.beam, max_active=options.max_active, min_active=options.min_active,
            beam_delta=options.beam_delta))
        self.decoder.init_decoding()
        self.loglikes = np.zeros((0, len(self.tid_to_pdf) - 1), dtype=np.float32)

    @property
    def num_frames_decoded(self) -> int:
        return int(self.decoder.num_frames_decoded())

    def advance(self, pdf_loglikes: np.ndarray) -> None:
        """Decode the next frames' network outputs (frames, num_pdfs)."""
        pdf_loglikes = np.asarray(pdf_loglikes, dtype=np.float32)
        if pdf_loglikes.ndim != 2 or pdf_loglikes.shape[1] <= self.tid_to_pdf.max():
            raise ValueError(f"network outputs of shape {pdf_loglikes.shape}: the transition model "
                             f"has pdfs up to {self.tid_to_pdf.max()}")
        self.loglikes = np.ascontiguousarray(np.concatenate([self.loglikes, pdf_loglikes[:, self.tid_to_pdf[1:]]]))
        self.decoder.advance_decoding(self._kaldi_decoder.DecodableCtc(self.loglikes))

    def best_path_transitions(self) -> np.ndarray:
        """The transition-ids, one per decoded frame, of the cheapest token's traceback, final
        weights ignored (Kaldi's ``BestPathEnd(use_final_probs=false)``, what Vosk's silence
        weighting reads)."""
        if self.num_frames_decoded == 0:
            return np.zeros(0, dtype=np.int64)
        _, path = self.decoder.get_best_path(use_final_probs=False)
        arcs, _ = parse_lattice(path.to_str())
        arcs.sort(key=lambda arc: arc[0])  # a linear lattice, states numbered along it
        return np.array([arc[2] for arc in arcs if arc[2] > 0], dtype=np.int64)

    def finish(self) -> Tuple[List[int], List[int]]:
        """The results (word ids): the minimum-Bayes-risk words (Vosk's default result) and the
        most likely word sequence; both empty if nothing was decoded."""
        hypotheses = self.word_sequences()
        if not hypotheses:
            return [], []
        return mbr_decode(hypotheses), hypotheses[0][0]

    def word_sequences(self) -> List[Tuple[List[int], float]]:
        """The lattice's word sequences within ``lattice_beam`` (:func:`word_sequences`)."""
        if len(self.loglikes) == 0:
            return []
        kd, o = self._kaldi_decoder, self.options
        decoder = kd.LatticeSimpleDecoder(self.graph.fst, kd.LatticeSimpleDecoderConfig(
            beam=o.beam, lattice_beam=o.lattice_beam))
        decoder.decode(kd.DecodableCtc(self.loglikes))
        _, lattice = decoder.get_raw_lattice(use_final_probs=True)
        return word_sequences(lattice.to_str(), o.graph_scale, o.lattice_beam)

