"""Training graphs for k2: CTC graphs per transcript, and the LF-MMI numerator and
denominator graphs built on a token bigram ``P`` estimated from training transcripts.

A lang dir (icefall layout) gives the tokens (the model's outputs: ``tokens.txt``, id 0 is the
blank ``<blk>``, ``#0``... disambiguation symbols are not outputs) and how words map to them:
``bpe.model`` (sentencepiece) where the lang dir has one, else ``lexicon.txt`` + ``L.pt``::

    compiler = build_graph_compiler(lang_dir, config["loss"], device)
    ctc_graphs = compiler.compile(["TURN ON THE LIGHTS", ...])            # CTC, one per text

    P = estimate_token_bigram(compiler.texts_to_ids(train_texts))      # LF-MMI
    save_fsa(P, exp_dir / "P.pt")
    den_graph = compile_den_graph(compiler.ctc_topo, P)                 # ctc_topo o P
    num_graphs = compile_num_graphs(den_graph, compiler.transcript_fsas(texts))

Graph labels are token ids with 0 = blank, ready for ``k2.intersect_dense`` against
``k2.DenseFsaVec(log_probs, ...)`` of a model with ``compiler.num_tokens`` outputs.
"""
import math
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Sequence, Union

import k2
import sentencepiece as spm
import torch

from speechtune.errors import StageError
from speechtune.provenance import atomic_file

Device = Union[str, torch.device]


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise StageError(f"{path}: missing ({what}); run the lang stage to write the lang dir")
    return path


def num_output_tokens(token_table: k2.SymbolTable) -> int:
    """How many outputs a model over this token table has: the disambiguation symbols
    (#0, #1, ...) only live in L_disambig/HLG, never in outputs."""
    return 1 + max(token_table[s] for s in token_table.symbols if not s.startswith("#"))


def output_tokens(lang_dir: Path) -> Dict[str, int]:
    """symbol -> id of a lang dir's model outputs: its tokens.txt without disambiguation symbols."""
    table = k2.SymbolTable.from_file(_require(Path(lang_dir) / "tokens.txt", "the token table"))
    return {table.get(i): i for i in range(num_output_tokens(table))}


class TrainingGraphCompiler:
    """What the CTC and BPE compilers share: the token table, the model's output count and
    the CTC topology over those tokens. Subclasses say how texts become token sequences."""

    def __init__(self, lang_dir: Path, device: Device = "cpu"):
        self.lang_dir = Path(lang_dir)
        self.device = torch.device(device)
        tokens_txt = _require(self.lang_dir / "tokens.txt", "the token table")
        self.token_table = k2.SymbolTable.from_file(tokens_txt)
        if self.token_table.get(0) not in ("<blk>", "<eps>"):
            raise StageError(f"{tokens_txt}: id 0 is {self.token_table.get(0)!r}; expected the blank '<blk>'")
        self.num_tokens = num_output_tokens(self.token_table)
        self.ctc_topo = k2.arc_sort(k2.ctc_topo(self.num_tokens - 1, modified=False, device=self.device))

    def texts_to_ids(self, texts: Sequence[str]) -> List[List[int]]:
        """One token-id sequence per text (the one P is estimated from)."""
        raise NotImplementedError

    def transcript_fsas(self, texts: Sequence[str]) -> k2.Fsa:
        """An FsaVec of token acceptors, one per text, arc-sorted, with epsilon self-loops so
        that it composes with ``ctc_topo`` (or ``ctc_topo o P``) with
        ``treat_epsilons_specially=False`` (the variant k2 also runs on GPU)."""
        raise NotImplementedError

    def compile(self, texts: Sequence[str]) -> k2.Fsa:
        """CTC training graphs: ``ctc_topo o transcript``, one per text."""
        return k2.compose(self.ctc_topo, self.transcript_fsas(texts), treat_epsilons_specially=False)


class CtcTrainingGraphCompiler(TrainingGraphCompiler):
    """Words to tokens through the lexicon FST ``L.pt`` (every pronunciation of a word is a
    path); words not in ``words.txt`` become ``oov``. As icefall's CtcTrainingGraphCompiler."""

    def __init__(self, lang_dir: Path, device: Device = "cpu", oov: str = "<UNK>"):
        super().__init__(lang_dir, device)
        self.word_table = k2.SymbolTable.from_file(_require(self.lang_dir / "words.txt", "the word table"))
        L = k2.Fsa.from_dict(torch.load(_require(self.lang_dir / "L.pt", "the lexicon FST"), map_location="cpu"))
        self.L_inv = k2.arc_sort(L.invert()).to(self.device)
        self.lexicon = _read_lexicon(_require(self.lang_dir / "lexicon.txt", "the lexicon"))
        self.oov = oov

    def _word(self, word: str, known: Iterable[str]) -> str:
        if word in known:
            return word
        if self.oov not in known:
            raise StageError(
                f"{self.lang_dir}: word {word!r} is not in the lexicon and the OOV word "
                f"{self.oov!r} (loss.oov) is not either; add one of them to the lang dir"
            )
        return self.oov

    def texts_to_ids(self, texts: Sequence[str]) -> List[List[int]]:
        """Each word's first pronunciation in ``lexicon.txt`` (as icefall's
        convert_transcript_words_to_tokens.py does for estimating P)."""
        ids = []
        for text in texts:
            tokens = [t for w in text.split() for t in self.lexicon[self._word(w, self.lexicon)]]
            ids.append([self.token_table[t] for t in tokens])
        return ids

    def transcript_fsas(self, texts: Sequence[str]) -> k2.Fsa:
        word_ids = [[self.word_table[self._word(w, self.word_table)] for w in text.split()] for text in texts]
        words = k2.add_epsilon_self_loops(k2.linear_fsa(word_ids, self.device))
        # L_inv maps words (labels) to tokens (aux_labels); invert to get token labels.
        transcripts = k2.intersect(self.L_inv, words, treat_epsilons_specially=False).invert_()
        del transcripts.aux_labels
        return k2.arc_sort(k2.remove_epsilon_and_add_self_loops(transcripts))


class BpeCtcTrainingGraphCompiler(TrainingGraphCompiler):
    """Words to tokens with the lang dir's sentencepiece model ``bpe.model``, whose piece ids
    are the token ids of ``tokens.txt``. As icefall's BpeCtcTrainingGraphCompiler."""

    def __init__(self, lang_dir: Path, device: Device = "cpu"):
        super().__init__(lang_dir, device)
        self.sp = spm.SentencePieceProcessor()
        self.sp.load(str(_require(self.lang_dir / "bpe.model", "the sentencepiece model")))
        if self.sp.get_piece_size() != self.num_tokens:
            raise StageError(
                f"{self.lang_dir}: bpe.model has {self.sp.get_piece_size()} pieces but tokens.txt "
                f"has {self.num_tokens} output tokens; rebuild the lang dir"
            )

    def texts_to_ids(self, texts: Sequence[str]) -> List[List[int]]:
        return self.sp.encode(list(texts), out_type=int)

    def transcript_fsas(self, texts: Sequence[str]) -> k2.Fsa:
        linear = k2.linear_fsa(self.texts_to_ids(texts), self.device)
        return k2.arc_sort(k2.add_epsilon_self_loops(linear))

    def compile(self, texts: Sequence[str]) -> k2.Fsa:
        # The same graphs as ctc_topo o transcript, built directly from the ids: faster.
        return k2.ctc_graph(self.texts_to_ids(texts), modified=False, device=self.device)


def _read_lexicon(path: Path) -> Dict[str, List[str]]:
    """``word token1 token2 ...`` per line; the first pronunciation of a word wins."""
    lexicon: Dict[str, List[str]] = {}
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise StageError(f"{path}:{line_number}: expected 'word token ...', got {line.strip()!r}")
            lexicon.setdefault(fields[0], fields[1:])
    return lexicon


def build_graph_compiler(
    lang_dir: Path, params: Mapping[str, Any], device: Device = "cpu"
) -> TrainingGraphCompiler:
    """The compiler for a lang dir: BPE where it has ``bpe.model``, else lexicon-based.
    ``params`` is the config's ``loss`` section (``oov``: the word unknown words become)."""
    if (Path(lang_dir) / "bpe.model").is_file():
        return BpeCtcTrainingGraphCompiler(lang_dir, device)
    return CtcTrainingGraphCompiler(lang_dir, device, oov=params["oov"])


def estimate_token_bigram(token_ids: Iterable[Sequence[int]]) -> k2.Fsa:
    """A maximum-likelihood token bigram acceptor P, from token-id sequences.

    States: 0 is the sentence start, then one state per token ("the previous token was t"),
    then the final state. An arc ``prev -> t`` (label t) scores ``log c(prev, t) / c(prev)``,
    and the arc into the final state (label -1) scores the sentence-end probability.
    Only bigrams seen in the texts get an arc: P has no backoff, so the denominator graph
    ``ctc_topo o P`` grows with the number of seen bigrams rather than with num_tokens^2 (a
    backoff bigram, epsilon-removed, is dense). A transcript with an unseen bigram is not
    accepted by ``ctc_topo o P``: estimate P from the texts you train on.
    """
    START, END = 0, -1  # 0 is the blank, never a token of a transcript: free to mean "start"
    counts: Dict[int, Counter] = defaultdict(Counter)
    for ids in token_ids:
        for prev, token in zip([START] + list(ids), list(ids) + [END]):
            counts[prev][token] += 1
    if not counts:
        raise ValueError("estimate_token_bigram: no transcripts to estimate P from")
    tokens = sorted(t for t in counts if t != START)
    state = {START: 0, **{t: i + 1 for i, t in enumerate(tokens)}}
    final_state = len(state)
    lines = []
    for prev in [START] + tokens:
        total = sum(counts[prev].values())
        for token, count in sorted(counts[prev].items()):
            dest = final_state if token == END else state[token]
            lines.append(f"{state[prev]} {dest} {token} {math.log(count / total)!r}")
    lines.append(str(final_state))
    return k2.arc_sort(k2.Fsa.from_str("\n".join(lines), acceptor=True))


def compile_den_graph(ctc_topo: k2.Fsa, P: k2.Fsa) -> k2.Fsa:
    """The LF-MMI denominator graph ``ctc_topo o P`` (labels: model outputs incl. blank;
    aux_labels: tokens), as icefall's MmiTrainingGraphCompiler builds ``ctc_topo_P``."""
    P = k2.add_epsilon_self_loops(P.to(ctc_topo.device))
    ctc_topo_inv = k2.arc_sort(ctc_topo.invert())
    ctc_topo_P = k2.intersect(ctc_topo_inv, P, treat_epsilons_specially=False).invert()
    return k2.arc_sort(k2.connect(ctc_topo_P))


def compile_num_graphs(den_graph: k2.Fsa, transcripts: k2.Fsa) -> k2.Fsa:
    """LF-MMI numerator graphs ``(ctc_topo o P) o transcript``: the reference's paths with the
    same P scores the denominator gives them, so numerator <= denominator (as Kaldi's chain
    numerator composed with its normalization FST). Empty where P rejects a transcript."""
    return k2.connect(k2.compose(den_graph, transcripts, treat_epsilons_specially=False))


def save_fsa(fsa: k2.Fsa, path: Path) -> None:
    """Write ``fsa.as_dict()`` atomically (the lang dir's ``*.pt`` format, e.g. ``P.pt``)."""
    with atomic_file(Path(path)) as tmp:
        torch.save(fsa.as_dict(), tmp)


def load_fsa(path: Path, device: Device = "cpu") -> k2.Fsa:
    """Read an FSA written by :func:`save_fsa` (or by icefall/k2 as ``as_dict()``)."""
    return k2.Fsa.from_dict(torch.load(_require(Path(path), "a saved k2 FSA"), map_location="cpu")).to(device)
