"""A Vosk model's decoding graph, read into numpy: ``graph/HCLr.fst`` (HCL, OpenFst
``olabel_lookahead`` around a ``const`` FST) and ``graph/Gr.fst`` (the n-gram LM G, OpenFst's
LOUDS-coded ``ngram`` FST), as Vosk reads them to compose ``HCL o G`` on the fly::

    graph = read_graph(model_dir)          # HCL + G + word symbols + disambiguation ids
    graph.hcl.first, graph.hcl.ilabel      # HCL's arcs as arrays (a state's at first[s]:first[s+1])
    graph.lm.find_arcs(states, words)      # G's own arcs for (state, word) pairs, vectorized
    graph.lookahead(hcl_states, lm_states) # OpenFst's look-ahead weights (see the decoder)
    graph.lm.symbols[word_id]              # the word (G's embedded symbol table)

Vosk composes ``HCL o G`` lazily with OpenFst's lookahead matcher; :mod:`local.kaldi_ko.decoder`
composes lazily too, as it decodes. A static HCLG is within reach all the same: OpenFst's own
``fstcompose`` (Debian's libfst-tools 1.7.9 with its lookahead and ngram plugins, G's symbol
tables cleared first) builds the Korean model's in 2.5 minutes and 3.2 GB (14.0M states, 44.8M
arcs, 0.9 GB on disk), which kaldifst reads in 6 s and kaldi-decoder's FasterDecoder runs on
(tried on random scores only): a way to Kaldi's own decoders in place of this reader and the
lazy decoder, not taken yet.

**Formats** (OpenFst, little-endian): a header (magic 2125659606, FST type, arc type, version,
flags, properties, start, #states, #arcs) then, when flags say so, input and output symbol tables.
A ``const`` FST (version 2, unaligned) follows with states (final weight float32, first arc,
#arcs, #input epsilons, #output epsilons: uint32) and arcs (ilabel, olabel int32, weight
float32, nextstate int32). ``olabel_lookahead`` is an add-on FST: its header, the add-on magic
446681434, the ``const`` FST (output labels already relabeled to match Gr.fst), then its
label-reachability data (add-on flags, reach-input, keep-relabel-data, [label map], final label,
then per state an int64 count of (begin, end) int32 intervals and an int32 total). An ``ngram`` FST (version 4) stores three
bitmaps (context tree in LOUDS order, futures, finals) and arrays of context words, future words,
back-off, final and future weights (``fst/extensions/ngram/ngram-fst.h``); its states are
numbered in the context tree's breadth-first order, state 0 being the unigram state and 1 the
start.

**Back-off.** G's back-off arcs are epsilons (as in Kaldi's G.fst); a word is read at a state
only through the state's own arc, so the decoder takes back-off arcs as moves of their own, as
composition with the ngram FST does. Disambiguation symbols (``graph/disambig_tid.int``) are
input epsilons of HCL, as Vosk's ``LookaheadComposeFst`` makes them. The lookahead FST's
label-reachability data (per HCL state, the intervals of word labels it can output next) give
OpenFst's look-ahead weights (:meth:`Graph.lookahead`).
"""
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from speechtune.errors import StageError

PathLike = Union[str, Path]

_FST_MAGIC = 2125659606
_SYMBOL_TABLE_MAGIC = 2125658996
_ADD_ON_MAGIC = 446681434
_HAS_ISYMBOLS, _HAS_OSYMBOLS, _IS_ALIGNED = 1, 2, 4
_KEY_SHIFT = 21  # (state << 21) | label: labels below 2 ** 21 (Korean model: 503 351 words)
_CACHE_LIMIT = 4_000_000  # look-ahead weights remembered


class FstFormatError(StageError):
    """An FST file this reader does not understand: names the file, offset and problem."""


@dataclass
class _Header:
    fst_type: str
    arc_type: str
    version: int
    flags: int
    start: int
    num_states: int
    num_arcs: int


class _Bytes:
    """Little-endian reading over a file's bytes, with errors naming the file and offset."""

    def __init__(self, data: bytes, path: str, pos: int = 0):
        self.data, self.path, self.pos = data, path, pos

    def error(self, what: str) -> FstFormatError:
        return FstFormatError(f"{self.path}: byte {self.pos}: {what}")

    def unpack(self, fmt: str) -> Tuple:
        size = struct.calcsize(fmt)
        if self.pos + size > len(self.data):
            raise self.error("unexpected end of file")
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return values

    def string(self) -> str:
        (size,) = self.unpack("<i")
        if size < 0 or self.pos + size > len(self.data):
            raise self.error(f"bad string length {size}")
        text = self.data[self.pos:self.pos + size].decode("utf-8")
        self.pos += size
        return text

    def array(self, dtype: np.dtype, count: int) -> np.ndarray:
        dtype = np.dtype(dtype)
        if count < 0 or self.pos + dtype.itemsize * count > len(self.data):
            raise self.error(f"array of {count} {dtype} runs past the end of the file")
        array = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += dtype.itemsize * count
        return array

    def header(self) -> _Header:
        (magic,) = self.unpack("<i")
        if magic != _FST_MAGIC:
            raise self.error(f"not an OpenFst file (magic {magic})")
        fst_type, arc_type = self.string(), self.string()
        version, flags, _properties, start, num_states, num_arcs = self.unpack("<iiQqqq")
        if arc_type != "standard":
            raise self.error(f"arc type {arc_type!r}: only 'standard' (tropical, float) is supported")
        return _Header(fst_type, arc_type, version, flags, start, num_states, num_arcs)

    def symbol_table(self) -> List[str]:
        (magic,) = self.unpack("<i")
        if magic != _SYMBOL_TABLE_MAGIC:
            raise self.error(f"expected a symbol table (magic {magic})")
        self.string()  # its name
        _available_key, size = self.unpack("<qq")
        pairs = []
        for _ in range(size):
            symbol = self.string()
            (key,) = self.unpack("<q")
            pairs.append((key, symbol))
        symbols = [""] * (max(k for k, _ in pairs) + 1 if pairs else 0)
        for key, symbol in pairs:
            symbols[key] = symbol
        return symbols


@dataclass
class ConstFst:
    """An OpenFst ``const`` FST as arrays: ``final[s]`` (inf: not final), arcs of state s at
    ``first[s]:first[s + 1]`` of ``ilabel``, ``olabel``, ``weight``, ``nextstate``."""

    start: int
    final: np.ndarray
    first: np.ndarray
    ilabel: np.ndarray
    olabel: np.ndarray
    weight: np.ndarray
    nextstate: np.ndarray

    @property
    def num_states(self) -> int:
        return len(self.final)


def _read_const_body(r: _Bytes, header: _Header) -> ConstFst:
    if header.fst_type != "const" or header.version != 2:
        raise r.error(f"expected a const FST of version 2, found {header.fst_type!r} version {header.version}")
    if header.flags & (_HAS_ISYMBOLS | _HAS_OSYMBOLS):
        if header.flags & _HAS_ISYMBOLS:
            r.symbol_table()
        if header.flags & _HAS_OSYMBOLS:
            r.symbol_table()
    if header.flags & _IS_ALIGNED:
        raise r.error("aligned const FSTs are not supported (write it with --fst_align=false)")
    states = r.array(np.dtype([("final", "<f4"), ("pos", "<u4"), ("narcs", "<u4"),
                               ("niepsilons", "<u4"), ("noepsilons", "<u4")]), header.num_states)
    arcs = r.array(np.dtype([("ilabel", "<i4"), ("olabel", "<i4"), ("weight", "<f4"),
                             ("nextstate", "<i4")]), header.num_arcs)
    first = np.append(states["pos"].astype(np.int64), header.num_arcs)
    if header.num_states and (np.any(np.diff(first) < 0) or not np.array_equal(
            first[:-1] + states["narcs"], first[1:])):
        raise r.error("const FST whose states' arcs are not stored in order")
    return ConstFst(int(header.start), states["final"].astype(np.float32), first,
                    arcs["ilabel"].copy(), arcs["olabel"].copy(), arcs["weight"].copy(),
                    arcs["nextstate"].copy())


@dataclass
class LabelReachability:
    """OpenFst's ``LabelReachableData`` of an ``olabel_lookahead`` FST: per state, the intervals
    ``[begin, end)`` of (relabeled) output labels that can come next on a path from it (at
    ``first[s]:first[s + 1]`` of ``begin``/``end``), ``final_label`` standing for "can end"."""

    first: np.ndarray
    begin: np.ndarray
    end: np.ndarray
    final_label: int

    def reaches_final(self) -> np.ndarray:
        """Per state: can it reach a final state before any further output label."""
        hit = (self.begin <= self.final_label) & (self.final_label < self.end)
        return np.add.reduceat(hit, self.first[:-1]) > 0 if len(hit) else np.zeros(len(self.first) - 1, bool)


def _read_label_reachability(r: _Bytes, num_states: int) -> LabelReachability:
    """The add-on after a lookahead FST's ``const`` FST: have-add-on flags, then (for the output
    side) reach_input, keep_relabel_data, [label2index], final_label, interval sets."""
    (have_pair,) = r.unpack("<?")
    have_input, have_output = r.unpack("<??") if have_pair else (False, False)
    if have_input or not have_output:
        raise r.error("expected output-label reachability only (an olabel_lookahead FST)")
    reach_input, keep_relabel = r.unpack("<??")
    if keep_relabel:
        (size,) = r.unpack("<q")
        r.array("<i4", 2 * size)
    (final_label,) = r.unpack("<i")
    (count,) = r.unpack("<q")
    if reach_input or count != num_states:
        raise r.error(f"label reachability for {count} states (input side: {reach_input}); "
                      f"the FST has {num_states}")
    data, pos = r.data, r.pos
    counts = np.empty(count, dtype=np.int64)
    starts = np.empty(count, dtype=np.int64)
    for s in range(count):  # each: int64 n, n (begin, end) int32 pairs, int32 count
        (n,) = struct.unpack_from("<q", data, pos)
        counts[s], starts[s] = n, pos + 8
        pos += 12 + 8 * n
    if pos > len(data):
        raise r.error("label reachability data runs past the end of the file")
    r.pos = pos
    pairs = np.frombuffer(data, dtype=np.uint8)
    index = np.repeat(starts - np.cumsum(counts) * 8 + counts * 8, counts * 8) + np.arange(int(counts.sum()) * 8)
    values = pairs[index].view("<i4").reshape(-1, 2) if len(index) else np.zeros((0, 2), dtype=np.int32)
    return LabelReachability(np.append(0, np.cumsum(counts)), values[:, 0].astype(np.int64),
                             values[:, 1].astype(np.int64), int(final_label))


def read_const_fst(path: PathLike) -> Tuple[ConstFst, Optional[LabelReachability]]:
    """A ``const`` FST, or the ``const`` FST inside an ``olabel_lookahead`` one (Vosk's
    ``HCLr.fst``) with its label reachability."""
    path = Path(path)
    if not path.is_file():
        raise FstFormatError(f"{path}: no such file")
    r = _Bytes(path.read_bytes(), str(path))
    header = r.header()
    if header.fst_type == "olabel_lookahead":
        (magic,) = r.unpack("<i")
        if magic != _ADD_ON_MAGIC:
            raise r.error(f"{header.fst_type} without its add-on magic number (found {magic})")
        fst = _read_const_body(r, r.header())
        return fst, _read_label_reachability(r, fst.num_states)
    return _read_const_body(r, header), None


def _bits(words: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` bits of OpenFst's BitmapIndex storage (bit i: word i / 64, bit i % 64)."""
    return np.unpackbits(words.view(np.uint8), bitorder="little")[:count].astype(bool)


@dataclass
class NgramLm:
    """G as arrays: per state its back-off state (``parent``, -1 for the unigram state 0) and
    weight, final weight (inf: not final), and its word arcs at ``first[s]:first[s + 1]`` of
    ``words`` (sorted), ``weights``, ``nextstate``; ``symbols[id]`` is the word of label id."""

    start: int
    parent: np.ndarray
    backoff: np.ndarray
    final: np.ndarray
    first: np.ndarray
    words: np.ndarray
    weights: np.ndarray
    nextstate: np.ndarray
    symbols: List[str]

    def __post_init__(self) -> None:
        states = np.repeat(np.arange(len(self.parent), dtype=np.int64), np.diff(self.first))
        self._keys = (states << _KEY_SHIFT) | self.words.astype(np.int64)

    def find_arcs(self, states: np.ndarray, words: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """For each (state, word): the index of the state's own arc for the word (no back-off)
        and whether there is one (the index is -1 where there is none)."""
        keys = (states.astype(np.int64) << _KEY_SHIFT) | words.astype(np.int64)
        index = np.minimum(np.searchsorted(self._keys, keys), len(self._keys) - 1)
        found = self._keys[index] == keys
        return np.where(found, index, -1), found


def read_ngram_fst(path: PathLike) -> NgramLm:
    """An OpenFst ``ngram`` FST (Vosk's ``Gr.fst``), with its symbol table."""
    path = Path(path)
    if not path.is_file():
        raise FstFormatError(f"{path}: no such file")
    r = _Bytes(path.read_bytes(), str(path))
    header = r.header()
    if header.fst_type != "ngram" or header.version != 4:
        raise r.error(f"expected an ngram FST of version 4, found {header.fst_type!r} version {header.version}")
    symbols: List[str] = []
    if header.flags & _HAS_ISYMBOLS:
        symbols = r.symbol_table()
    if header.flags & _HAS_OSYMBOLS:
        symbols = r.symbol_table()
    if not symbols:
        raise r.error("the ngram FST has no symbol table (Vosk reads its words from it)")
    data_start = r.pos
    num_states, num_futures, num_final = r.unpack("<QQQ")

    def bitmap(count: int) -> np.ndarray:
        return _bits(r.array("<u8", (count + 63) // 64), count)

    context_bits = bitmap(2 * num_states + 1)
    future_bits = bitmap(num_futures + num_states + 1)
    final_bits = bitmap(num_states)
    context_words = r.array("<i4", num_states + 1)
    future_words = r.array("<i4", num_futures)
    r.pos = data_start + ((r.pos - data_start + 3) & ~3)
    backoff = r.array("<f4", num_states + 1)
    final_probs = r.array("<f4", num_final)
    future_probs = r.array("<f4", num_futures + 1)
    ones = np.flatnonzero(context_bits)
    if len(ones) != num_states or final_bits.sum() != num_final or \
            (~future_bits).sum() != num_states + 1:
        raise r.error("ngram FST bitmaps do not match its counts")
    # The k-th 1 of the context bitmap is state k; the 0s close each state's list of children
    # (the first list is the pseudo-root's), so the parent of state k is (#0s before it) - 1.
    parent = (ones - np.arange(num_states)) - 1
    label = context_words[:num_states].astype(np.int64)
    final = np.full(num_states, np.inf, dtype=np.float32)
    final[final_bits] = final_probs
    zeros = np.flatnonzero(~future_bits)
    first = np.append(0, np.cumsum(np.diff(zeros) - 1)).astype(np.int64)
    # Children of the context tree, to find where each word arc leads (NGramFstImpl::Transition):
    # from the root, the new word, then the state's context words, most recent first, as far
    # as the tree goes.
    child_keys = (parent[1:].astype(np.int64) << _KEY_SHIFT) | label[1:]
    order = np.argsort(child_keys)
    child_keys, child_ids = child_keys[order], np.arange(1, num_states)[order]
    if len(child_keys) and np.any(np.diff(child_keys) == 0):
        raise r.error("ngram FST context tree with a repeated child")

    def child(nodes: np.ndarray, labels: np.ndarray) -> np.ndarray:
        keys = (nodes << _KEY_SHIFT) | labels
        index = np.minimum(np.searchsorted(child_keys, keys), len(child_keys) - 1)
        return np.where(child_keys[index] == keys, child_ids[index], -1)

    # context[d][s]: the d-th most recent context word of state s (its ancestor at depth d + 1)
    lineage = [np.arange(num_states)]
    while np.any(lineage[-1] > 0):
        lineage.append(np.where(lineage[-1] > 0, parent[np.maximum(lineage[-1], 0)], 0))
    depth = sum((level > 0).astype(np.int64) for level in lineage)
    contexts = []
    for d in range(int(depth.max())):
        # the ancestor at depth d + 1 is lineage[depth - d - 1]
        steps = depth - d - 1
        ancestor = np.choose(np.clip(steps, 0, len(lineage) - 1), lineage) if len(lineage) > 1 else lineage[0]
        contexts.append(np.where(steps >= 0, label[ancestor], -1))
    arc_state = np.repeat(np.arange(num_states, dtype=np.int64), np.diff(first))
    words = future_words.astype(np.int64)
    node = child(np.zeros(len(words), dtype=np.int64), words)
    walking = node >= 0
    node = np.where(walking, node, 0)
    for d, context in enumerate(contexts):
        word = context[arc_state]
        walking &= word >= 0
        nxt = child(node, np.maximum(word, 0))
        walking &= nxt >= 0
        node = np.where(walking, nxt, node)
    return NgramLm(start=int(header.start), parent=parent.astype(np.int64),
                   backoff=backoff[:num_states].astype(np.float32), final=final, first=first,
                   words=future_words.astype(np.int32), weights=future_probs[:num_futures].astype(np.float32),
                   nextstate=node.astype(np.int64), symbols=symbols)


@dataclass
class Graph:
    """What Vosk decodes with: HCL (disambiguation input labels are epsilons), G, the words, the
    disambiguation transition-ids, and HCL's label reachability (for :meth:`lookahead`)."""

    hcl: ConstFst
    lm: NgramLm
    disambig: np.ndarray
    reach: LabelReachability

    def __post_init__(self) -> None:
        self.reaches_final = self.reach.reaches_final()
        lm = self.lm
        arc_state = np.repeat(np.arange(len(lm.parent)), np.diff(lm.first))
        prob = np.exp(-lm.weights.astype(np.float64))
        total = np.cumsum(prob)
        before = np.append(0.0, total)[lm.first[:-1]]  # cumulative sum before each state's arcs
        self._cum = total - before[arc_state]  # within-state cumulative sums
        self._cache: Tuple[np.ndarray, np.ndarray] = (np.zeros(0, dtype=np.int64), np.zeros(0))

    @property
    def symbols(self) -> List[str]:
        return self.lm.symbols

    def lookahead(self, hcl_states: np.ndarray, lm_states: np.ndarray) -> np.ndarray:
        """OpenFst's look-ahead weight for composed states (h, g) (``LabelLookAheadMatcher::
        LookAheadFst`` with a log accumulator): -log of the summed probabilities of g's own arcs
        (no back-off) whose words h can output next, plus g's final probability if h can end;
        inf where there are none (composition does not enter such states). Remembered: a
        decoder asks for the same pairs frame after frame."""
        keys = np.asarray(hcl_states, dtype=np.int64) * len(self.lm.parent) + np.asarray(lm_states, dtype=np.int64)
        unique, inverse = np.unique(keys, return_inverse=True)
        cache_keys, cache_values = self._cache
        pos = np.minimum(np.searchsorted(cache_keys, unique), max(len(cache_keys) - 1, 0))
        hit = cache_keys[pos] == unique if len(cache_keys) else np.zeros(len(unique), dtype=bool)
        values = np.empty(len(unique))
        values[hit] = cache_values[pos[hit]]
        missing = unique[~hit]
        if missing.size:
            values[~hit] = self._lookahead(missing // len(self.lm.parent), missing % len(self.lm.parent))
            if len(cache_keys) + missing.size > _CACHE_LIMIT:
                cache_keys, cache_values = cache_keys[:0], cache_values[:0]
            at = np.searchsorted(cache_keys, missing)
            self._cache = (np.insert(cache_keys, at, missing), np.insert(cache_values, at, values[~hit]))
        return values[inverse.reshape(-1)]

    def _lookahead(self, h: np.ndarray, g: np.ndarray) -> np.ndarray:
        reach, lm = self.reach, self.lm
        counts = reach.first[h + 1] - reach.first[h]
        intervals = np.repeat(reach.first[h] - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum()))
        pair = np.repeat(np.arange(len(h)), counts)
        state = g[pair]
        lo = np.searchsorted(lm._keys, (state << _KEY_SHIFT) | reach.begin[intervals])
        hi = np.searchsorted(lm._keys, (state << _KEY_SHIFT) | np.minimum(reach.end[intervals], 1 << _KEY_SHIFT))
        some = hi > lo
        lo, hi, pair, state = lo[some], hi[some], pair[some], state[some]
        below = np.where(lo > lm.first[state], self._cum[np.maximum(lo - 1, 0)], 0.0)
        total = np.bincount(pair, weights=self._cum[hi - 1] - below, minlength=len(h)).astype(np.float64)
        final = self.reaches_final[h] & np.isfinite(lm.final[g])
        total[final] += np.exp(-lm.final[g[final]].astype(np.float64))
        with np.errstate(divide="ignore"):
            return np.where(total > 0, -np.log(np.maximum(total, 0.0)), np.inf)


def read_graph(model_dir: PathLike, graph_dir: Optional[PathLike] = None) -> Graph:
    """``graph/HCLr.fst``, ``graph/Gr.fst`` and ``graph/disambig_tid.int`` of a Vosk model."""
    graph_dir = Path(graph_dir) if graph_dir else Path(model_dir) / "graph"
    missing = [name for name in ("HCLr.fst", "Gr.fst", "disambig_tid.int") if not (graph_dir / name).is_file()]
    if missing:
        raise FstFormatError(f"{graph_dir}: no {', '.join(missing)} (a Vosk lookahead graph; a model "
                             "with a static graph/HCLG.fst is not supported here)")
    disambig = np.array([int(x) for x in (graph_dir / "disambig_tid.int").read_text().split()], dtype=np.int64)
    hcl, reach = read_const_fst(graph_dir / "HCLr.fst")
    if reach is None:
        raise FstFormatError(f"{graph_dir / 'HCLr.fst'}: expected an olabel_lookahead FST (Vosk's HCLr.fst)")
    hcl.ilabel = np.where(np.isin(hcl.ilabel, disambig), 0, hcl.ilabel).astype(np.int32)
    return Graph(hcl=hcl, lm=read_ngram_fst(graph_dir / "Gr.fst"), disambig=disambig, reach=reach)
