"""Kaldi nnet3 models in torch: read and write nnet3 files (binary or text) and evaluate their
graph over time as Kaldi's nnet3 decoders do.

Read a released chain model (``final.mdl`` = TransitionModel + AmNnetSimple) or a bare ``.raw``
Nnet, look at it, and turn it into a torch module::

    nnet = read_nnet3("am/final.mdl")
    nnet.component_types()        # Counter({'TdnnComponent': 28, 'BatchNormComponent': 19, ...})
    nnet.components["tdnnf2.linear"].fields["LinearParams"]   # numpy float32 (64, 1536)
    nnet.left_context, nnet.right_context                    # 34, 34 (frames of "input")

    model = KaldiNnet3Model.from_nnet3(nnet).eval()
    out = model(mfcc, ivector=ivector)   # (N, T, 40), (N, 100) -> (N, ceil(T / 3), 2616)

    # icefall-style round trip: model_params is JSON-able and rebuilds the module
    torch.save({"model": model.state_dict(), "model_params": model.params}, "model.pt")
    model = build_kaldi_model(checkpoint["model_params"]); model.load_state_dict(checkpoint["model"])

    write_nnet3(nnet, "copy.txt", binary=False)   # what ``nnet3-am-copy --binary=false`` writes

**What the module computes.** Every node is evaluated at the frames the requested output needs
(Kaldi's computation request): the ``output`` node at frames ``0, s, 2s, ...`` below T
(``s = frame_subsampling_factor``, 3 for chain models), so there are ``ceil(T / s)`` output
frames, as in ``DecodableNnetSimple``. ``Offset(x, k)`` at frame t is x at frame t + k;
``Append`` concatenates features; ``Sum`` adds; ``Scale(a, x)`` multiplies;
``ReplaceIndex(ivector, t, 0)`` is the i-vector, the same at every frame. A ``TdnnComponent``
with time offsets ``(o_1, ..., o_K)`` applies its weight to ``Append(Offset(x, o_1), ...)``.
Frames before 0 or after T - 1 repeat the first or last frame of the utterance (Kaldi's
decoders pad the features that way; with ``feature_lens`` each utterance repeats its own last
valid frame). Layers whose inputs are only needed every s-th frame (TDNN-F layers with
time-stride 3) are only computed there.

**The output is raw.** A chain model's ``output`` node has no log-softmax: Kaldi's chain
decoders use the raw network output directly as acoustic log-likelihoods (times the acoustic
scale; chain models store no priors). :class:`KaldiNnet3Model` returns it unchanged; the
cross-entropy branch (``output-xent``, with its ``LogSoftmaxComponent``) is in the module and can
be asked for with ``output_name="output-xent"``. (For a non-chain model whose ``.mdl`` stores
priors, Kaldi's decoders subtract ``log(nnet.priors)`` from the output; this module does not.)

**Fine-tuning it** (the ``finetune`` stage, from the import stage's checkpoint): two
``model_params`` keys turn the imported network into one the training loop of
:mod:`stages.training` can use like its own models. ``ivector_in_features: true``: the features
are the MFCC with each frame's online i-vector appended (``feature_dim`` = input dim + i-vector
dim, what ``stages.extractors.KaldiModelFrontEnd`` stores); ``forward(features, feature_lens)``
splits them and reads frame t's i-vector at frame t (``ivector_round=1``), padding frames
repeating each utterance's last valid one. ``num_tokens: K``: the component that feeds the
output node (a chain model's ``output.affine``) is resized to K outputs and a log-softmax is
added, so the output is CTC/LF-MMI log-probs over a lang dir's tokens; the new rows start at
zero, as Kaldi's xconfig initializes an output layer (``param-stddev=0``).

**Batch norm** uses the stored statistics in ``eval()`` mode (Kaldi's test mode, which Kaldi's
decoders switch on whatever ``<TestMode>`` says) and batch statistics in ``train()`` mode, as
Kaldi's training does. Dropout (``GeneralDropoutComponent``) is identity in ``eval()``.

**Names.** Torch module paths are Kaldi's component names with ``-`` replaced by ``_``
(``prefinal-chain.affine`` -> ``prefinal_chain.affine``, parameters ``.weight``, ``.bias``);
``model.kaldi_names`` maps each torch path back to its Kaldi name.

**I-vectors.** One i-vector per utterance (N, D) is what ``nnet3-latgen-faster --ivectors``
does. Online i-vectors (N, M, D), one per ``ivector_period`` frames, are used as Kaldi's
``--online-ivectors`` does: the output is computed in chunks of ``frames_per_chunk`` input
frames, each with the i-vector of its middle frame (``DecodableNnetSimple::GetCurrentIvector``).
With ``ivector_round=P`` they are used as Kaldi's looped decoders (``DecodableNnetSimpleLooped``,
online decoding, Vosk) use them: ``ModifyNnetIvectorPeriod`` turns ``ReplaceIndex(ivector, t, 0)``
into ``Round(ivector, P)``, so a node reading the i-vector at frame t reads row ``floor(t / P)``
(rows before 0 or after the last repeat the first or last row).

Binary format, as Kaldi's ``io-funcs``/``kaldi-matrix`` write it: the file starts with ``\\0B``;
tokens are strings ending with a space; an int32 is the byte 4 and four little-endian bytes; a
float is the byte 4 and a float32 (or 8 and a float64); a bool is ``T`` or ``F``; matrices are
``FM``/``DM``, rows, cols, then the data; vectors ``FV``/``DV``, size, data; integer vectors a
byte 4, a raw int32 count, the data. Compressed matrices (``CM``, ``CM2``, ``CM3``) are not
supported (no released chain ``final.mdl`` stores its weights compressed).
"""
import math
import re
import struct
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from stages.cli import StageError
from stages.models import constrain_orthonormal_

PathLike = Union[str, Path]


class Nnet3FormatError(StageError):
    """A file that is not a Kaldi nnet3 model this reader understands: names the file, the byte
    offset and the token or component concerned."""


# ---------------------------------------------------------------------------------------------
# Component formats: for each supported component type, the tokens its Kaldi ``Write`` writes,
# in that order (``Read`` expects them in the same order), with the kinds of their values:
#   i int32   f float (BaseFloat)   d double   b bool (T/F)   M matrix   V vector
#   I integer vector   ""  (a flag token with no value)
# ``required`` tokens are the ones Kaldi's ``Read`` expects unconditionally.
# Sources: nnet-simple-component.cc, nnet-tdnn-component.cc, nnet-normalize-component.cc,
# nnet-general-component.cc, nnet-component-itf.cc (kaldi-asr/kaldi master, 2025).
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Field:
    token: str
    kinds: Tuple[str, ...]
    required: bool = False


def _fields(*specs: Tuple[str, str, bool]) -> Tuple[_Field, ...]:
    return tuple(_Field(token, tuple(kinds), required) for token, kinds, required in specs)


# UpdatableComponent::WriteUpdatableCommon: each written only when it differs from its default.
_UPDATABLE = (("LearningRateFactor", "f", False), ("IsGradient", "b", False),
              ("MaxChange", "f", False), ("L2Regularize", "f", False), ("LearningRate", "f", False))
# NonlinearComponent::Write (RectifiedLinearComponent, LogSoftmaxComponent, ...).
_NONLINEAR = (("Dim", "i", True), ("BlockDim", "i", False), ("ValueAvg", "V", True),
              ("DerivAvg", "V", True), ("Count", "d", True), ("OderivRms", "V", False),
              ("OderivCount", "d", False), ("NumDimsSelfRepaired", "d", False),
              ("NumDimsProcessed", "d", False), ("SelfRepairLowerThreshold", "f", False),
              ("SelfRepairUpperThreshold", "f", False), ("SelfRepairScale", "f", False))

COMPONENT_FORMATS: Dict[str, Tuple[_Field, ...]] = {
    "FixedAffineComponent": _fields(("LinearParams", "M", True), ("BiasParams", "V", True)),
    "AffineComponent": _fields(
        *_UPDATABLE, ("LinearParams", "M", True), ("BiasParams", "V", True),
        ("OrthonormalConstraint", "f", False)),
    "NaturalGradientAffineComponent": _fields(
        *_UPDATABLE, ("LinearParams", "M", True), ("BiasParams", "V", True),
        ("RankIn", "i", True), ("RankOut", "i", True), ("OrthonormalConstraint", "f", False),
        ("UpdatePeriod", "i", True), ("NumSamplesHistory", "f", True), ("Alpha", "f", True)),
    "LinearComponent": _fields(
        *_UPDATABLE, ("Params", "M", True), ("OrthonormalConstraint", "f", False),
        ("UseNaturalGradient", "b", True), ("RankInOut", "ii", True), ("Alpha", "f", True),
        ("NumSamplesHistory", "f", True), ("UpdatePeriod", "i", True)),
    "TdnnComponent": _fields(
        *_UPDATABLE, ("TimeOffsets", "I", True), ("LinearParams", "M", True),
        ("BiasParams", "V", True), ("OrthonormalConstraint", "f", True),
        ("UseNaturalGradient", "b", True), ("NumSamplesHistory", "f", True),
        ("AlphaInOut", "ff", True), ("RankInOut", "ii", True)),
    "BatchNormComponent": _fields(
        ("Dim", "i", True), ("BlockDim", "i", True), ("Epsilon", "f", True),
        ("TargetRms", "f", True), ("TestMode", "b", True), ("Count", "d", True),
        ("StatsMean", "V", True), ("StatsVar", "V", True)),
    "RectifiedLinearComponent": _fields(*_NONLINEAR),
    "LogSoftmaxComponent": _fields(*_NONLINEAR),
    "GeneralDropoutComponent": _fields(
        ("Dim", "i", True), ("BlockDim", "i", True), ("TimePeriod", "i", True),
        ("DropoutProportion", "f", True), ("SpecAugmentMaxProportion", "f", False),
        ("SpecAugmentMaxRegions", "i", False), ("TestMode", "", False), ("Continuous", "", False)),
    "NoOpComponent": _fields(("Dim", "i", True), ("BackpropScale", "f", True)),
}

FieldValue = Any  # int | float | bool | None | np.ndarray | List[int] | Tuple[...]


# ---------------------------------------------------------------------------------------------
# The parsed model
# ---------------------------------------------------------------------------------------------


@dataclass
class Component:
    """One component: its name, its type (``TdnnComponent``) and its fields in file order,
    keyed by token without brackets (``fields["LinearParams"]``)."""

    name: str
    type: str
    fields: "OrderedDict[str, FieldValue]" = field(default_factory=OrderedDict)


@dataclass(frozen=True)
class Descriptor:
    """A node's input expression: ``op`` is ``"node"`` (a plain node name), ``"Append"``,
    ``"Sum"``, ``"Offset"`` (``value`` = time offset), ``"Scale"`` (``value`` = factor) or
    ``"ReplaceIndex"`` (``value`` = the t it sets). ``str()`` gives Kaldi's syntax."""

    op: str
    args: Tuple["Descriptor", ...] = ()
    name: str = ""
    value: float = 0

    def __str__(self) -> str:
        if self.op == "node":
            return self.name
        if self.op == "Offset":
            return f"Offset({self.args[0]}, {int(self.value)})"
        if self.op == "Scale":
            return f"Scale({self.value:g}, {self.args[0]})"
        if self.op == "ReplaceIndex":
            return f"ReplaceIndex({self.args[0]}, t, {int(self.value)})"
        return f"{self.op}({', '.join(str(a) for a in self.args)})"

    def node_names(self) -> Iterator[str]:
        """Every node this expression reads."""
        if self.op == "node":
            yield self.name
        for arg in self.args:
            yield from arg.node_names()


@dataclass
class Node:
    """A network node: ``kind`` is ``"input"`` (with ``dim``), ``"component"`` (with
    ``component`` and ``input``) or ``"output"`` (with ``input`` and ``objective``)."""

    kind: str
    name: str
    dim: int = 0
    component: str = ""
    input: Optional[Descriptor] = None
    objective: str = "linear"

    def config_line(self) -> str:
        """The line Kaldi writes for this node in the model's config section."""
        if self.kind == "input":
            return f"input-node name={self.name} dim={self.dim}"
        if self.kind == "component":
            return f"component-node name={self.name} component={self.component} input={self.input}"
        return f"output-node name={self.name} input={self.input} objective={self.objective}"


@dataclass
class HmmState:
    """One state of a topology entry: pdf classes (-1: none) and (destination, prob) arcs."""

    forward_pdf_class: int
    self_loop_pdf_class: int
    transitions: List[Tuple[int, float]]


@dataclass
class TransitionModel:
    """Kaldi's TransitionModel: the HMM topology and the (phone, hmm-state, forward-pdf,
    self-loop-pdf) tuples that give transition-ids their pdfs."""

    phones: List[int]
    phone2idx: List[int]
    entries: List[List[HmmState]]
    tuples: np.ndarray  # (num_tuples, 4) int32
    log_probs: np.ndarray  # (num_transition_ids,) float32

    @property
    def is_hmm(self) -> bool:
        """True for classic HMMs (one pdf per state); chain topologies are not."""
        return all(s.forward_pdf_class == s.self_loop_pdf_class for e in self.entries for s in e)

    @property
    def num_pdfs(self) -> int:
        return int(self.tuples[:, 2:].max()) + 1 if len(self.tuples) else 0

    def transition_id_to_pdf(self) -> np.ndarray:
        """``pdf[tid]`` for transition-ids 1.. (index 0 unused, -1), as ``ComputeDerived``
        numbers them: tuples in order, each with its state's arcs in order; a self-loop arc
        uses the self-loop pdf, any other arc the forward pdf. Decoding graphs (HCLG) carry
        transition-ids; the network outputs pdfs."""
        pdfs = [-1]
        for phone, hmm_state, forward_pdf, self_loop_pdf in self.tuples.tolist():
            state = self.entries[self.phone2idx[phone]][hmm_state]
            pdfs.extend(self_loop_pdf if dest == hmm_state else forward_pdf
                        for dest, _ in state.transitions)
        return np.array(pdfs, dtype=np.int32)

    def transition_id_to_phone(self) -> np.ndarray:
        """``phone[tid]`` for transition-ids 1.. (index 0 unused, 0), numbered as
        :meth:`transition_id_to_pdf` numbers them (Kaldi's ``TransitionIdToPhone``)."""
        phones = [0]
        for phone, hmm_state, _, _ in self.tuples.tolist():
            phones.extend([phone] * len(self.entries[self.phone2idx[phone]][hmm_state].transitions))
        return np.array(phones, dtype=np.int32)


@dataclass
class Nnet3:
    """A parsed nnet3 file: nodes in config order, components in file order, and for a
    ``.mdl`` the transition model, the contexts and the priors stored with it."""

    path: str
    nodes: "OrderedDict[str, Node]"
    components: "OrderedDict[str, Component]"
    transition_model: Optional[TransitionModel] = None
    left_context: Optional[int] = None
    right_context: Optional[int] = None
    priors: Optional[np.ndarray] = None

    def component_types(self) -> Counter:
        """How many components of each type."""
        return Counter(c.type for c in self.components.values())

    def config_lines(self) -> List[str]:
        return [node.config_line() for node in self.nodes.values()]


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------

_WHITESPACE = b" \t\n\r\v\f"
_DESCRIPTOR_TOKEN = re.compile(r"\s*([(),]|[^\s(),]+)")


class KaldiReader:
    """Kaldi's basic-type I/O over a file's bytes, in binary or text mode."""

    def __init__(self, data: bytes, path: str):
        self.data, self.path = data, path
        self.binary = data[:2] == b"\0B"
        self.pos = 2 if self.binary else 0

    def error(self, what: str, pos: Optional[int] = None) -> Nnet3FormatError:
        mode = "binary" if self.binary else "text"
        return Nnet3FormatError(f"{self.path}: byte {self.pos if pos is None else pos} ({mode}): {what}")

    def _skip_space(self) -> None:
        while self.pos < len(self.data) and self.data[self.pos] in _WHITESPACE:
            self.pos += 1

    def token(self) -> str:
        """A whitespace-terminated token (Kaldi's ReadToken); consumes one space after it."""
        self._skip_space()
        start = self.pos
        while self.pos < len(self.data) and self.data[self.pos] not in _WHITESPACE:
            self.pos += 1
        if self.pos == start:
            raise self.error("expected a token, found the end of the file")
        token = self.data[start:self.pos].decode("latin-1")
        self.pos += 1
        return token

    def expect(self, expected: str) -> None:
        start = self.pos
        got = self.token()
        if got != expected:
            raise self.error(f"expected {expected}, found {got[:40]!r}", start)

    def peek_token(self) -> str:
        pos = self.pos
        token = self.token()
        self.pos = pos
        return token

    def line(self) -> str:
        """The rest of the current line (the nnet3 config section is line-based in both modes)."""
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise self.error("unexpected end of file in the config section")
        text = self.data[self.pos:end].decode("utf-8").rstrip("\r")
        self.pos = end + 1
        return text

    def _binary_scalar(self, what: str, sizes: Mapping[int, str]) -> Union[int, float]:
        if self.pos >= len(self.data):
            raise self.error(f"expected {what}, found the end of the file")
        size = self.data[self.pos]
        if size not in sizes:
            raise self.error(f"expected {what} (size byte {' or '.join(map(str, sizes))}), found byte {size}")
        fmt = sizes[size]
        if self.pos + 1 + struct.calcsize(fmt) > len(self.data):
            raise self.error(f"expected {what}, found the end of the file")
        value = struct.unpack_from(fmt, self.data, self.pos + 1)[0]
        self.pos += 1 + struct.calcsize(fmt)
        return value

    def _text_number(self, what: str, convert: Any) -> Any:
        start = self.pos
        token = self.token()
        try:
            return convert(token)
        except ValueError:
            raise self.error(f"expected {what}, found {token[:40]!r}", start) from None

    def int32(self) -> int:
        if self.binary:
            return int(self._binary_scalar("an int32", {4: "<i"}))
        return self._text_number("an integer", int)

    def float32(self) -> float:
        """A BaseFloat, rounded to float32 in both modes (so text and binary twins agree)."""
        if self.binary:
            value = self._binary_scalar("a float", {4: "<f", 8: "<d"})
        else:
            value = self._text_number("a number", float)
        return float(np.float32(value))

    def float64(self) -> float:
        if self.binary:
            return float(self._binary_scalar("a double", {4: "<f", 8: "<d"}))
        return self._text_number("a number", float)

    def boolean(self) -> bool:
        start = self.pos
        if self.binary:
            char = self.data[self.pos:self.pos + 1]
            self.pos += 1
        else:
            char = self.token().encode()
        if char not in (b"T", b"F"):
            raise self.error(f"expected a bool (T or F), found {char[:40]!r}", start)
        return char == b"T"

    def _binary_array(self, count: int, dtype: str, double: bool = False) -> np.ndarray:
        nbytes = count * np.dtype(dtype).itemsize
        if count < 0 or self.pos + nbytes > len(self.data):
            raise self.error(f"array of {count} values runs past the end of the file")
        array = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += nbytes
        if dtype == "<i4":
            return array.astype(np.int32)
        return array.astype(np.float64 if double else np.float32)

    def _text_bracketed(self) -> str:
        """The text between ``[`` and ``]``."""
        self.expect("[")
        end = self.data.find(b"]", self.pos)
        if end < 0:
            raise self.error("a '[' without its closing ']'")
        text = self.data[self.pos:end].decode("latin-1")
        self.pos = end + 1
        return text

    def matrix(self, double: bool = False) -> np.ndarray:
        """A Matrix (``FM``/``DM``), as float32, or float64 with ``double``."""
        dtype = np.float64 if double else np.float32
        if self.binary:
            start = self.pos
            kind = self.token()
            if kind in ("CM", "CM2", "CM3"):
                raise self.error(f"compressed matrix ({kind}) is not supported; copy the model "
                                 "with nnet3-am-copy to store it uncompressed", start)
            if kind not in ("FM", "DM"):
                raise self.error(f"expected a matrix (FM or DM), found {kind[:40]!r}", start)
            rows, cols = self.int32(), self.int32()
            data = self._binary_array(rows * cols, "<f4" if kind == "FM" else "<f8", double)
            return data.reshape(rows, cols)
        start = self.pos
        lines = [line.split() for line in self._text_bracketed().split("\n") if line.strip()]
        if not lines:
            return np.zeros((0, 0), dtype=dtype)
        if any(len(line) != len(lines[0]) for line in lines):
            raise self.error("matrix rows of different lengths", start)
        try:
            return np.array(lines, dtype=dtype)
        except ValueError:
            raise self.error("a matrix with a value that is not a number", start) from None

    def sp_matrix(self, double: bool = False) -> np.ndarray:
        """A symmetric SpMatrix (``FP``/``DP``: its lower triangle, row by row) as a full
        (n, n) matrix, float32, or float64 with ``double``."""
        start = self.pos
        if self.binary:
            kind = self.token()
            if kind not in ("FP", "DP"):
                raise self.error(f"expected a packed matrix (FP or DP), found {kind[:40]!r}", start)
            n = self.int32()
            packed = self._binary_array(n * (n + 1) // 2, "<f4" if kind == "FP" else "<f8", double)
        else:
            try:
                packed = np.array(self._text_bracketed().split(), dtype=np.float64 if double else np.float32)
            except ValueError:
                raise self.error("a packed matrix with a value that is not a number", start) from None
            n = int(round((math.sqrt(8 * packed.size + 1) - 1) / 2))
            if n * (n + 1) // 2 != packed.size:
                raise self.error(f"{packed.size} values do not fill a triangular matrix", start)
        full = np.zeros((n, n), dtype=packed.dtype)
        full[np.tril_indices(n)] = packed
        return full + np.tril(full, -1).T

    def vector(self, double: bool = False) -> np.ndarray:
        """A Vector (``FV``/``DV``), as float32, or float64 with ``double``."""
        if self.binary:
            start = self.pos
            kind = self.token()
            if kind not in ("FV", "DV"):
                raise self.error(f"expected a vector (FV or DV), found {kind[:40]!r}", start)
            return self._binary_array(self.int32(), "<f4" if kind == "FV" else "<f8", double)
        start = self.pos
        try:
            return np.array(self._text_bracketed().split(), dtype=np.float64 if double else np.float32)
        except ValueError:
            raise self.error("a vector with a value that is not a number", start) from None

    def int_vector(self) -> List[int]:
        if self.binary:
            if self.data[self.pos:self.pos + 1] != b"\x04" or self.pos + 5 > len(self.data):
                raise self.error("expected an int32 vector (size byte 4, then its length)")
            count = struct.unpack_from("<i", self.data, self.pos + 1)[0]
            self.pos += 5
            return self._binary_array(count, "<i4").tolist()
        start = self.pos
        try:
            return [int(v) for v in self._text_bracketed().split()]
        except ValueError:
            raise self.error("an integer vector with a value that is not an integer", start) from None

    def value(self, kind: str) -> FieldValue:
        return {"i": self.int32, "f": self.float32, "d": self.float64, "b": self.boolean,
                "M": self.matrix, "V": self.vector, "I": self.int_vector}[kind]()


def _read_topology(r: KaldiReader) -> Tuple[List[int], List[int], List[List[HmmState]]]:
    """HmmTopology::Read: a binary dump of its members, or the readable text format."""
    r.expect("<Topology>")
    entries: List[List[HmmState]] = []
    if r.binary:
        phones, phone2idx = r.int_vector(), r.int_vector()
        num_entries = r.int32()
        is_hmm = num_entries != -1
        if not is_hmm:
            num_entries = r.int32()
        for _ in range(num_entries):
            states = []
            for _ in range(r.int32()):
                forward = r.int32()
                self_loop = forward if is_hmm else r.int32()
                transitions = [(r.int32(), r.float32()) for _ in range(r.int32())]
                states.append(HmmState(forward, self_loop, transitions))
            entries.append(states)
        r.expect("</Topology>")
        return phones, phone2idx, entries
    phone2idx: List[int] = []
    while (token := r.token()) != "</Topology>":
        if token != "<TopologyEntry>":
            raise r.error(f"expected <TopologyEntry> or </Topology>, found {token!r}")
        r.expect("<ForPhones>")
        entry_phones = []
        while (token := r.token()) != "</ForPhones>":
            if not token.isdigit():
                raise r.error(f"expected a phone number or </ForPhones>, found {token[:40]!r}")
            entry_phones.append(int(token))
        for phone in entry_phones:
            phone2idx.extend([-1] * (phone + 1 - len(phone2idx)))
            phone2idx[phone] = len(entries)
        states: List[HmmState] = []
        token = r.token()
        while token != "</TopologyEntry>":
            if token != "<State>" or r.int32() != len(states):
                raise r.error(f"expected <State> {len(states)} or </TopologyEntry>")
            token = r.token()
            forward = self_loop = -1
            if token == "<PdfClass>":
                forward = self_loop = r.int32()
                token = r.token()
            elif token == "<ForwardPdfClass>":
                forward = r.int32()
                r.expect("<SelfLoopPdfClass>")
                self_loop = r.int32()
                token = r.token()
            transitions = []
            while token == "<Transition>":
                transitions.append((r.int32(), r.float32()))
                token = r.token()
            if token != "</State>":
                raise r.error(f"expected </State>, found {token!r}")
            states.append(HmmState(forward, self_loop, transitions))
            token = r.token()
        entries.append(states)
    phones = [p for p, idx in enumerate(phone2idx) if idx >= 0]
    return phones, phone2idx, entries


def _read_transition_model(r: KaldiReader) -> TransitionModel:
    """TransitionModel::Read."""
    r.expect("<TransitionModel>")
    phones, phone2idx, entries = _read_topology(r)
    kind = r.token()
    if kind not in ("<Tuples>", "<Triples>"):
        raise r.error(f"expected <Tuples> or <Triples>, found {kind!r}")
    per_tuple = 4 if kind == "<Tuples>" else 3
    rows = [[r.int32() for _ in range(per_tuple)] for _ in range(r.int32())]
    tuples = np.array(rows, dtype=np.int32).reshape(-1, per_tuple)
    if per_tuple == 3:
        tuples = np.concatenate([tuples, tuples[:, 2:3]], axis=1)
    r.expect("</Tuples>" if per_tuple == 4 else "</Triples>")
    r.expect("<LogProbs>")
    log_probs = r.vector()
    r.expect("</LogProbs>")
    r.expect("</TransitionModel>")
    return TransitionModel(phones, phone2idx, entries, tuples, log_probs)


def _parse_descriptor(text: str, where: str, node_names: Sequence[str]) -> Descriptor:
    """Kaldi's descriptor syntax (nnet-descriptor.cc), for the expressions the reader evaluates."""
    tokens = _DESCRIPTOR_TOKEN.findall(text)
    pos = 0

    def fail(what: str) -> Nnet3FormatError:
        return Nnet3FormatError(f"{where}: {what} in descriptor {text!r}")

    def take(expected: Optional[str] = None) -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise fail("unexpected end")
        token = tokens[pos]
        if expected is not None and token != expected:
            raise fail(f"expected {expected!r}, found {token!r}")
        pos += 1
        return token

    def number(convert: Any) -> Any:
        token = take()
        try:
            return convert(token)
        except ValueError:
            raise fail(f"expected a number, found {token!r}") from None

    def parse() -> Descriptor:
        head = take()
        if pos >= len(tokens) or tokens[pos] != "(":
            if head not in node_names:
                raise fail(f"unknown node {head!r}")
            return Descriptor("node", name=head)
        take("(")
        if head in ("Append", "Sum"):
            args = [parse()]
            while (separator := take()) == ",":
                args.append(parse())
            if separator != ")":
                raise fail(f"expected ',' or ')' in {head}, found {separator!r}")
            return args[0] if len(args) == 1 else Descriptor(head, tuple(args))
        if head == "Offset":
            arg = parse()
            take(",")
            offset = number(int)
            if (separator := take()) == ",":
                if number(int) != 0:
                    raise fail("Offset with an x offset is not supported")
                separator = take()
            if separator != ")":
                raise fail(f"expected ')' after Offset, found {separator!r}")
            return Descriptor("Offset", (arg,), value=offset)
        if head == "Scale":
            scale = number(float)
            take(",")
            arg = parse()
            take(")")
            return Descriptor("Scale", (arg,), value=scale)
        if head == "ReplaceIndex":
            arg = parse()
            take(",")
            if take() != "t":
                raise fail("only ReplaceIndex(..., t, ...) is supported")
            take(",")
            t = number(int)
            take(")")
            return Descriptor("ReplaceIndex", (arg,), value=t)
        raise fail(f"{head}(...) is not supported (supported: Append, Sum, Offset, Scale, "
                   "ReplaceIndex and node names)")

    descriptor = parse()
    if pos != len(tokens):
        raise fail(f"unexpected {tokens[pos]!r} after the expression")
    return descriptor


_CONFIG_KEY = re.compile(r"(?:^|\s)([A-Za-z][\w-]*)=")


def _parse_config_lines(lines: Sequence[str], path: str) -> "OrderedDict[str, Node]":
    """The config section: input-node, component-node and output-node lines."""
    parsed = []
    for number, line in enumerate(lines, 1):
        where = f"{path}: config line {number}"
        kind, _, rest = line.strip().partition(" ")
        keys = list(_CONFIG_KEY.finditer(rest))
        values = {m.group(1): rest[m.end(): keys[i + 1].start() if i + 1 < len(keys) else len(rest)].strip()
                  for i, m in enumerate(keys)}
        if kind not in ("input-node", "component-node", "output-node"):
            raise Nnet3FormatError(f"{where}: node type {kind!r} is not supported "
                                   "(supported: input-node, component-node, output-node)")
        if "name" not in values:
            raise Nnet3FormatError(f"{where}: no name= in {line!r}")
        parsed.append((where, kind, values))
    names = [values["name"] for _, _, values in parsed]
    nodes: "OrderedDict[str, Node]" = OrderedDict()
    for where, kind, values in parsed:
        name = values["name"]
        try:
            if kind == "input-node":
                node = Node("input", name, dim=int(values["dim"]))
            elif kind == "component-node":
                node = Node("component", name, component=values["component"],
                            input=_parse_descriptor(values["input"], where, names))
            else:
                node = Node("output", name, input=_parse_descriptor(values["input"], where, names),
                            objective=values.get("objective", "linear"))
        except KeyError as e:
            raise Nnet3FormatError(f"{where}: {kind} {name!r} has no {e.args[0]}=") from None
        if name in nodes:
            raise Nnet3FormatError(f"{where}: node {name!r} defined twice")
        nodes[name] = node
    return nodes


def _read_component(r: KaldiReader, name: str) -> Component:
    """Component::ReadNew + the type's Read: its tokens, checked against COMPONENT_FORMATS."""
    start = r.pos
    opening = r.token()
    ctype = opening.strip("<>")
    if ctype not in COMPONENT_FORMATS:
        raise r.error(f"component {name!r} has type {opening}, which this reader does not support "
                      f"(supported: {', '.join(sorted(COMPONENT_FORMATS))})", start)
    spec = COMPONENT_FORMATS[ctype]
    index = {f.token: i for i, f in enumerate(spec)}
    component = Component(name, ctype)
    last = -1
    while True:
        token_pos = r.pos
        token = r.token()
        if token == f"</{ctype}>":
            break
        key = token[1:-1] if token.startswith("<") and token.endswith(">") else token
        if key not in index:
            raise r.error(f"unexpected token {token[:40]!r} in {ctype} {name!r}", token_pos)
        if index[key] <= last:
            raise r.error(f"token {token} out of order in {ctype} {name!r}", token_pos)
        last = index[key]
        kinds = spec[index[key]].kinds
        values = tuple(r.value(kind) for kind in kinds)
        component.fields[key] = None if not kinds else values[0] if len(kinds) == 1 else values
    missing = [f.token for f in spec if f.required and f.token not in component.fields]
    if missing:
        raise r.error(f"{ctype} {name!r} lacks {', '.join('<' + m + '>' for m in missing)}", start)
    return component


def read_nnet3(path: PathLike) -> Nnet3:
    """Read a Kaldi nnet3 model, binary or text: a ``.mdl`` (TransitionModel, Nnet, then
    ``<LeftContext>``, ``<RightContext>``, ``<Priors>``) or a ``.raw`` Nnet.

    Raises :class:`Nnet3FormatError` naming the file, byte offset and token (or the component
    type) it cannot read::

        nnet = read_nnet3("exp/chain/tdnn1a/final.mdl")
        print(nnet.component_types(), nnet.transition_model.num_pdfs)
    """
    path = Path(path)
    if not path.is_file():
        raise Nnet3FormatError(f"{path}: no such file")
    r = KaldiReader(path.read_bytes(), str(path))
    first = r.peek_token()
    transition_model = _read_transition_model(r) if first == "<TransitionModel>" else None
    r.expect("<Nnet3>")
    if r.line().strip():
        raise r.error("expected a newline after <Nnet3>")
    lines = []
    while (line := r.line()).strip():
        lines.append(line)
    nodes = _parse_config_lines(lines, str(path))
    r.expect("<NumComponents>")
    components: "OrderedDict[str, Component]" = OrderedDict()
    for _ in range(r.int32()):
        r.expect("<ComponentName>")
        name = r.token()
        components[name] = _read_component(r, name)
    r.expect("</Nnet3>")
    nnet = Nnet3(str(path), nodes, components, transition_model)
    if transition_model is not None:
        r.expect("<LeftContext>")
        nnet.left_context = r.int32()
        r.expect("<RightContext>")
        nnet.right_context = r.int32()
        r.expect("<Priors>")
        nnet.priors = r.vector()
    for node in nodes.values():
        if node.kind == "component" and node.component not in components:
            raise Nnet3FormatError(f"{path}: node {node.name!r} uses component {node.component!r}, "
                                   "which the file does not define")
    return nnet


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


class _Writer:
    """Kaldi's basic-type I/O, writing: the byte layout ``KaldiReader`` reads."""

    def __init__(self, binary: bool):
        self.binary = binary
        self.parts: List[bytes] = [b"\0B"] if binary else []

    def raw(self, text: str) -> None:
        self.parts.append(text.encode())

    def token(self, token: str) -> None:
        self.raw(token + " ")

    def int32(self, value: int) -> None:
        self.parts.append(struct.pack("<bi", 4, value) if self.binary else f"{value} ".encode())

    def float32(self, value: float) -> None:
        self.parts.append(struct.pack("<bf", 4, value) if self.binary else f"{np.float32(value)} ".encode())

    def float64(self, value: float) -> None:
        self.parts.append(struct.pack("<bd", 8, value) if self.binary else f"{value!r} ".encode())

    def boolean(self, value: bool) -> None:
        self.raw(("T" if value else "F") + ("" if self.binary else " "))

    def matrix(self, m: np.ndarray) -> None:
        m = np.asarray(m, dtype=np.float32)
        if self.binary:
            self.token("FM")
            self.int32(m.shape[0])
            self.int32(m.shape[1])
            self.parts.append(m.astype("<f4").tobytes())
        elif m.size == 0:
            self.raw(" [ ]\n")
        else:
            rows = "".join("\n  " + " ".join(str(v) for v in row) + " " for row in m)
            self.raw(f" [{rows}]\n")

    def vector(self, v: np.ndarray) -> None:
        v = np.asarray(v, dtype=np.float32)
        if self.binary:
            self.token("FV")
            self.int32(v.shape[0])
            self.parts.append(v.astype("<f4").tobytes())
        else:
            self.raw(" [ " + "".join(f"{x} " for x in v) + "]\n")

    def int_vector(self, v: Sequence[int]) -> None:
        if self.binary:
            self.parts.append(struct.pack("<bi", 4, len(v)) + np.asarray(v, dtype="<i4").tobytes())
        else:
            self.raw("[ " + "".join(f"{x} " for x in v) + "]\n")

    def value(self, kind: str, value: FieldValue) -> None:
        {"i": self.int32, "f": self.float32, "d": self.float64, "b": self.boolean,
         "M": self.matrix, "V": self.vector, "I": self.int_vector}[kind](value)


def _write_transition_model(w: _Writer, tm: TransitionModel) -> None:
    """TransitionModel::Write (with HmmTopology::Write's text or binary layout)."""
    is_hmm = tm.is_hmm
    w.token("<TransitionModel>")
    w.raw("" if w.binary else "\n")
    w.token("<Topology>")
    if w.binary:
        w.int_vector(tm.phones)
        w.int_vector(tm.phone2idx)
        if not is_hmm:
            w.int32(-1)
        w.int32(len(tm.entries))
        for entry in tm.entries:
            w.int32(len(entry))
            for state in entry:
                w.int32(state.forward_pdf_class)
                if not is_hmm:
                    w.int32(state.self_loop_pdf_class)
                w.int32(len(state.transitions))
                for dest, prob in state.transitions:
                    w.int32(dest)
                    w.float32(prob)
    else:
        w.raw("\n")
        for i, entry in enumerate(tm.entries):
            phones = " ".join(str(p) for p, idx in enumerate(tm.phone2idx) if idx == i)
            w.raw(f"<TopologyEntry> \n<ForPhones> \n{phones} \n</ForPhones> \n")
            for j, state in enumerate(entry):
                w.token("<State>")
                w.int32(j)
                if state.forward_pdf_class != -1:
                    if is_hmm:
                        w.token("<PdfClass>")
                        w.int32(state.forward_pdf_class)
                    else:
                        w.token("<ForwardPdfClass>")
                        w.int32(state.forward_pdf_class)
                        w.token("<SelfLoopPdfClass>")
                        w.int32(state.self_loop_pdf_class)
                for dest, prob in state.transitions:
                    w.token("<Transition>")
                    w.int32(dest)
                    w.float32(prob)
                w.raw("</State> \n")
            w.raw("</TopologyEntry> \n")
    w.token("</Topology>")
    w.token("<Triples>" if is_hmm else "<Tuples>")
    w.int32(len(tm.tuples))
    w.raw("" if w.binary else "\n")
    for row in tm.tuples.tolist():
        for value in row[:3] if is_hmm else row:
            w.int32(value)
        w.raw("" if w.binary else "\n")
    w.token("</Triples>" if is_hmm else "</Tuples>")
    w.raw("" if w.binary else "\n")
    w.token("<LogProbs>")
    w.raw("" if w.binary else "\n")
    w.vector(tm.log_probs)
    w.token("</LogProbs>")
    w.raw("" if w.binary else "\n")
    w.token("</TransitionModel>")
    w.raw("" if w.binary else "\n")


def write_nnet3(nnet: Nnet3, path: PathLike, binary: bool = True) -> None:
    """Write ``nnet`` as Kaldi does (``Nnet::Write``; for a model with a transition model,
    ``TransitionModel::Write`` then ``AmNnetSimple::Write``): components' tokens in the order
    of COMPONENT_FORMATS, which is Kaldi's. ``read_nnet3`` of the result equals ``nnet``::

        write_nnet3(read_nnet3("final.mdl"), "final.txt", binary=False)
    """
    w = _Writer(binary)
    if nnet.transition_model is not None:
        _write_transition_model(w, nnet.transition_model)
    w.token("<Nnet3>")
    w.raw("\n" + "".join(line + "\n" for line in nnet.config_lines()) + "\n")
    w.token("<NumComponents>")
    w.int32(len(nnet.components))
    w.raw("" if binary else "\n")
    for name, component in nnet.components.items():
        w.token("<ComponentName>")
        w.token(name)
        w.token(f"<{component.type}>")
        for spec in COMPONENT_FORMATS[component.type]:
            if spec.token not in component.fields:
                continue
            w.token(f"<{spec.token}>")
            value = component.fields[spec.token]
            values = value if len(spec.kinds) > 1 else (value,)
            for kind, v in zip(spec.kinds, values):
                w.value(kind, v)
        w.token(f"</{component.type}>")
        w.raw("" if binary else "\n")
    w.token("</Nnet3>")
    if nnet.transition_model is not None:
        w.token("<LeftContext>")
        w.int32(nnet.left_context if nnet.left_context is not None else 0)
        w.token("<RightContext>")
        w.int32(nnet.right_context if nnet.right_context is not None else 0)
        w.token("<Priors>")
        w.vector(nnet.priors if nnet.priors is not None else np.zeros(0, dtype=np.float32))
    Path(path).write_bytes(b"".join(w.parts))


# ---------------------------------------------------------------------------------------------
# Torch modules, one per component type
# ---------------------------------------------------------------------------------------------


class KaldiAffine(nn.Module):
    """``y = W x + b`` over the input frames at ``time_offsets`` appended (Kaldi's column
    order: offset-major, as TdnnComponent stores ``LinearParams``). Serves FixedAffine (buffers:
    not trained), Affine, NaturalGradientAffine, Linear (no bias) and Tdnn components."""

    def __init__(self, input_dim: int, output_dim: int, bias: bool = True, trainable: bool = True,
                 time_offsets: Sequence[int] = (0,), orthonormal_constraint: float = 0.0):
        super().__init__()
        self.time_offsets = tuple(time_offsets)
        self.orthonormal_constraint = orthonormal_constraint
        weight = torch.zeros(output_dim, input_dim)
        bias_value = torch.zeros(output_dim) if bias else None
        if trainable:
            self.weight = nn.Parameter(weight)
            self.bias = nn.Parameter(bias_value) if bias else None
        else:
            self.register_buffer("weight", weight)
            self.register_buffer("bias", bias_value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (f"in={self.weight.size(1)}, out={self.weight.size(0)}, bias={self.bias is not None}, "
                f"time_offsets={self.time_offsets}, orthonormal_constraint={self.orthonormal_constraint}")


class KaldiBatchNorm(nn.BatchNorm1d):
    """Kaldi's BatchNormComponent: normalizes each block of ``block_dim`` features (no learned
    scale or offset) and multiplies by ``target_rms``; ``running_mean``/``running_var`` hold
    Kaldi's stored statistics, used in ``eval()`` (Kaldi's test mode)."""

    def __init__(self, block_dim: int, epsilon: float, target_rms: float):
        super().__init__(block_dim, eps=epsilon, affine=False)
        self.target_rms = target_rms

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x.reshape(-1, self.num_features)).reshape(x.shape)
        return y * self.target_rms if self.target_rms != 1.0 else y


class KaldiGeneralDropout(nn.Module):
    """Kaldi's GeneralDropoutComponent in ``train()`` mode (identity in ``eval()``): one mask
    row of ``block_dim`` per utterance and ``time_period`` frames (all frames when 0), tiled
    over the ``dim / block_dim`` blocks; continuous masks are uniform in [1 - 2p, 1 + 2p],
    others zero with probability p and scale by 1 / (1 - p). (Kaldi counts periods from t = 0;
    here from the first frame evaluated.)"""

    def __init__(self, dim: int, block_dim: int, proportion: float, time_period: int,
                 continuous: bool, specaugment_max_proportion: float = 0.0):
        super().__init__()
        self.dim, self.block_dim, self.proportion = dim, block_dim, proportion
        self.time_period, self.continuous = time_period, continuous
        self.specaugment_max_proportion = specaugment_max_proportion

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or (self.proportion == 0 and self.specaugment_max_proportion == 0):
            return x
        if self.specaugment_max_proportion != 0:
            raise NotImplementedError("GeneralDropoutComponent with SpecAugment is not supported in training")
        n, length, _ = x.shape
        periods = 1 if self.time_period == 0 else (length + self.time_period - 1) // self.time_period
        u = torch.rand(n, periods, self.block_dim, device=x.device, dtype=x.dtype)
        p = self.proportion
        mask = u * (4 * p) + (1 - 2 * p) if self.continuous else (u > p).to(x.dtype) / (1 - p)
        frame_period = torch.arange(length, device=x.device) // (self.time_period or length)
        return x * mask[:, frame_period].repeat(1, 1, self.dim // self.block_dim)


class KaldiNoOp(nn.Module):
    """Kaldi's NoOpComponent: identity, with gradients scaled by ``backprop_scale``."""

    def __init__(self, backprop_scale: float = 1.0):
        super().__init__()
        self.backprop_scale = backprop_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.backprop_scale == 1.0:
            return x
        s = self.backprop_scale
        return x * s + (x * (1 - s)).detach()


# ---------------------------------------------------------------------------------------------
# Graph evaluation over time
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Times:
    """The frames ``lo, lo + step, ..., hi`` at which a node is evaluated."""

    lo: int
    hi: int
    step: int = 1

    @property
    def count(self) -> int:
        return (self.hi - self.lo) // self.step + 1

    def shift(self, k: int) -> "_Times":
        return _Times(self.lo + k, self.hi + k, self.step)

    def union(self, other: Optional["_Times"]) -> "_Times":
        if other is None:
            return self
        step = math.gcd(self.step if self.count > 1 else 0, other.step if other.count > 1 else 0,
                        self.lo - other.lo) or 1
        return _Times(min(self.lo, other.lo), max(self.hi, other.hi), step)

    def expand(self, offsets: Sequence[int]) -> "_Times":
        """{t + o}: the frames a component with time ``offsets`` reads."""
        step = math.gcd(self.step if self.count > 1 else 0, *(o - offsets[0] for o in offsets)) or 1
        return _Times(self.lo + min(offsets), self.hi + max(offsets), step)


@dataclass
class _Value:
    """A node's output: ``data`` (N, count, D) at frames ``times``, or (N, 1, D) the same at
    every frame when ``times`` is None (what ReplaceIndex(ivector, t, 0) gives)."""

    data: torch.Tensor
    times: Optional[_Times]

    def at(self, times: _Times) -> torch.Tensor:
        if self.times is None:
            return self.data
        start, rem = divmod(times.lo - self.times.lo, self.times.step)
        stride = times.step // self.times.step if times.count > 1 else 1
        if rem or start < 0 or start + stride * (times.count - 1) >= self.data.size(1):
            raise RuntimeError(f"internal error: frames {times} not computed (have {self.times})")
        return self.data[:, start:start + stride * (times.count - 1) + 1:stride]


def _torch_name(kaldi_name: str) -> str:
    return kaldi_name.replace("-", "_")


class KaldiNnet3Model(nn.Module):
    """A Kaldi nnet3 network as a torch module (see the module docstring). Build with
    :meth:`from_nnet3` (weights from the Kaldi file) or :func:`build_kaldi_model` (from
    ``model_params``, weights from a state dict)::

        model = KaldiNnet3Model.from_nnet3(read_nnet3("am/final.mdl")).eval()
        out = model(feats, ivector=ivec)            # raw chain output, (N, ceil(T/3), pdfs)
        assert out.size(1) == model.output_lengths(feats.size(1))
    """

    def __init__(self, params: Mapping[str, Any]):
        super().__init__()
        self.params = dict(params)
        self.subsampling_factor = int(params["frame_subsampling_factor"])
        self.output_name = params["output"]
        self.ivector_period = int(params["ivector_period"])
        self.frames_per_chunk = int(params["frames_per_chunk"])
        self.nodes = _parse_config_lines(params["config_lines"], "model_params")
        self.component_specs: Dict[str, Dict[str, Any]] = dict(params["components"])
        adapter = params.get("adapter", {"type": "none"})
        if adapter["type"] != "none":
            raise ValueError(f"adapter {adapter['type']!r}: a Kaldi nnet3 model takes no adapters here")
        self.ivector_in_features = bool(params.get("ivector_in_features", False))
        self.num_tokens = params.get("num_tokens")
        output_component = self._output_component(self.output_name)
        if self.num_tokens is not None:
            spec = self.component_specs[output_component]
            if "output_dim" not in spec:
                raise ValueError(f"output {self.output_name!r} comes from {output_component!r} "
                                 f"({spec['type']}), which cannot be resized to new tokens")
            readers = [n.name for n in self.nodes.values() if n.input is not None and n.name != self.output_name
                       and any(self.nodes[d].kind == "component" and self.nodes[d].component == output_component
                               for d in n.input.node_names())]
            if readers:
                raise ValueError(f"{output_component!r} also feeds {readers}: it cannot be resized to new tokens")
            self.component_specs[output_component] = {**spec, "output_dim": int(self.num_tokens)}
        # Where fine-tuning finds the output layer's parameters (a TdnnModel's are "output.").
        self.output_prefix = _torch_name(output_component) + "."
        inputs = [n.name for n in self.nodes.values() if n.kind == "input"]
        unknown = sorted(set(inputs) - {"input", "ivector"})
        if unknown or "input" not in inputs:
            raise ValueError(f"input nodes {inputs}: expected 'input' and optionally 'ivector'")
        self.input_dim = self.nodes["input"].dim
        self.ivector_dim = self.nodes["ivector"].dim if "ivector" in self.nodes else 0
        self.output_dims = _check_dims(self.nodes, self.component_specs)
        for name, node in self.nodes.items():
            if node.kind == "output":
                self._order(name)  # fails early on cycles (recurrent networks)
        context = self._requirements(_Times(0, 0), self.output_name).get("input")
        self.left_context = max(0, -context.lo) if context else 0
        self.right_context = max(0, context.hi) if context else 0
        if params.get("feature_dim", self.feature_dim) != self.feature_dim:
            raise ValueError(f"feature_dim {params['feature_dim']}: the network takes {self.feature_dim} "
                             f"(ivector_in_features {self.ivector_in_features})")
        self.kaldi_names: Dict[str, str] = {}
        self._modules_by_kaldi_name: Dict[str, nn.Module] = {}
        for kaldi_name, spec in self.component_specs.items():
            self._add_component(kaldi_name, _module_for(spec))

    @classmethod
    def from_nnet3(cls, nnet: Nnet3, frame_subsampling_factor: int = 3, output: str = "output",
                   ivector_period: int = 10, frames_per_chunk: int = 50) -> "KaldiNnet3Model":
        """The module for a parsed model, with its weights."""
        model = cls(nnet3_model_params(nnet, frame_subsampling_factor, output, ivector_period,
                                       frames_per_chunk))
        state = {}
        for kaldi_name, component in nnet.components.items():
            for key, value in _component_state(component).items():
                state[f"{_torch_name(kaldi_name)}.{key}"] = value
        model.load_state_dict(state, strict=True)
        return model

    def _add_component(self, kaldi_name: str, module: nn.Module) -> None:
        parts = [_torch_name(p) for p in kaldi_name.split(".")]
        path = ".".join(parts)
        if path in self.kaldi_names:
            raise ValueError(f"components {self.kaldi_names[path]!r} and {kaldi_name!r} both map "
                             f"to torch name {path!r}")
        parent: nn.Module = self
        for part in parts[:-1]:
            child = parent._modules.get(part)
            if child is None:
                if hasattr(parent, part):
                    raise ValueError(f"component {kaldi_name!r}: {part!r} clashes with a module attribute")
                child = nn.Module()
                parent.add_module(part, child)
            parent = child
        if parts[-1] in parent._modules or hasattr(parent, parts[-1]):
            raise ValueError(f"component {kaldi_name!r}: torch name {path!r} clashes with another name")
        parent.add_module(parts[-1], module)
        self.kaldi_names[path] = kaldi_name
        self._modules_by_kaldi_name[kaldi_name] = module

    def _output_component(self, output: str) -> str:
        """The component whose node is the output node's whole input."""
        node = self.nodes.get(output)
        if node is None or node.kind != "output":
            outputs = [n.name for n in self.nodes.values() if n.kind == "output"]
            raise ValueError(f"no output node {output!r}; the network has {outputs}")
        source = self.nodes.get(node.input.name) if node.input.op == "node" else None
        if source is None or source.kind != "component":
            raise ValueError(f"output node {output!r} reads {node.input}, not one component's output")
        return source.component

    @property
    def feature_dim(self) -> int:
        """What ``forward`` takes per frame: MFCC, with the i-vector if ``ivector_in_features``."""
        return self.input_dim + (self.ivector_dim if self.ivector_in_features else 0)

    def _order(self, output: str) -> List[str]:
        """Nodes ``output`` depends on, each after its inputs."""
        order: List[str] = []
        state: Dict[str, int] = {}

        def visit(name: str) -> None:
            if state.get(name) == 2:
                return
            if state.get(name) == 1:
                raise ValueError(f"node {name!r} depends on itself: recurrent networks are not supported")
            state[name] = 1
            node = self.nodes[name]
            if node.input is not None:
                for dep in node.input.node_names():
                    visit(dep)
            state[name] = 2
            order.append(name)

        if output not in self.nodes or self.nodes[output].kind != "output":
            outputs = [n.name for n in self.nodes.values() if n.kind == "output"]
            raise ValueError(f"no output node {output!r}; the network has {outputs}")
        visit(output)
        return order

    def _offsets(self, node: Node) -> Tuple[int, ...]:
        if node.kind != "component":
            return (0,)
        return tuple(self.component_specs[node.component].get("time_offsets", (0,)))

    def _requirements(self, request: _Times, output: str, rounded: bool = False) -> Dict[str, _Times]:
        """The frames each node must be computed at for ``output`` at ``request``; with
        ``rounded``, ReplaceIndex reads every frame (``Round(ivector, P)``, see ``forward``)."""
        need: Dict[str, _Times] = {output: request}

        def propagate(desc: Descriptor, times: _Times) -> None:
            if desc.op == "node":
                need[desc.name] = times.union(need.get(desc.name))
            elif desc.op == "Offset":
                propagate(desc.args[0], times.shift(int(desc.value)))
            elif desc.op == "ReplaceIndex" and rounded:
                propagate(desc.args[0], times)
            elif desc.op == "ReplaceIndex":
                propagate(desc.args[0], _Times(int(desc.value), int(desc.value)))
            else:
                for arg in desc.args:
                    propagate(arg, times)

        for name in reversed(self._order(output)):
            node = self.nodes[name]
            if node.input is not None and name in need:
                propagate(node.input, need[name].expand(self._offsets(node)))
        return need

    def _descriptor(self, desc: Descriptor, values: Dict[str, _Value], times: _Times,
                    rounded: bool = False) -> _Value:
        """``desc`` evaluated at ``times`` (``rounded``: see ``_requirements``)."""
        if desc.op == "node":
            value = values[desc.name]
            return _Value(value.at(times), times if value.times is not None else None)
        if desc.op == "Offset":
            value = self._descriptor(desc.args[0], values, times.shift(int(desc.value)), rounded)
            return _Value(value.data, times if value.times is not None else None)
        if desc.op == "ReplaceIndex" and rounded:
            return self._descriptor(desc.args[0], values, times, rounded)
        if desc.op == "ReplaceIndex":
            t = int(desc.value)
            return _Value(self._descriptor(desc.args[0], values, _Times(t, t)).data, None)
        if desc.op == "Scale":
            value = self._descriptor(desc.args[0], values, times, rounded)
            return _Value(value.data * desc.value, value.times)
        parts = [self._descriptor(arg, values, times, rounded) for arg in desc.args]
        invariant = all(p.times is None for p in parts)
        if desc.op == "Sum":
            total = parts[0].data
            for p in parts[1:]:
                total = total + p.data
            return _Value(total, None if invariant else times)
        if invariant:
            return _Value(torch.cat([p.data for p in parts], dim=-1), None)
        length = times.count
        return _Value(torch.cat([p.data.expand(-1, length, -1) for p in parts], dim=-1), times)

    def _evaluate(self, features: torch.Tensor, feature_lens: torch.Tensor,
                  ivector: Optional[torch.Tensor], output: str, request: _Times,
                  ivector_round: Optional[int] = None) -> torch.Tensor:
        rounded = ivector_round is not None
        need = self._requirements(request, output, rounded)
        values: Dict[str, _Value] = {}
        for name in self._order(output):
            node, times = self.nodes[name], need[name]
            if node.kind == "input" and name == "input":
                frames = torch.arange(times.lo, times.hi + 1, times.step, device=features.device)
                index = torch.minimum(frames.clamp(min=0)[None, :], (feature_lens - 1)[:, None])
                data = torch.gather(features, 1, index[:, :, None].expand(-1, -1, features.size(2)))
                values[name] = _Value(data, times)
            elif node.kind == "input" and rounded:
                frames = torch.arange(times.lo, times.hi + 1, times.step, device=ivector.device)
                rows = torch.div(frames, ivector_round, rounding_mode="floor").clamp(0, ivector.size(1) - 1)
                values[name] = _Value(ivector[:, rows], times)
            elif node.kind == "input":
                values[name] = _Value(ivector[:, None, :], None)
            elif node.kind == "output":
                values[name] = self._descriptor(node.input, values, times, rounded)
            else:
                module = self._modules_by_kaldi_name[node.component]
                offsets = self._offsets(node)
                x = self._descriptor(node.input, values, times.expand(offsets), rounded)
                if x.times is None:
                    values[name] = _Value(module(x.data), None)
                    continue
                if offsets != (0,):
                    x = _Value(torch.cat([x.at(times.shift(o)) for o in offsets], dim=-1), times)
                values[name] = _Value(module(x.data), times)
        result = values[output]
        return result.data.expand(-1, request.count, -1) if result.times is None else result.data

    def forward(self, features: torch.Tensor, feature_lens: Optional[torch.Tensor] = None,
                ivector: Optional[torch.Tensor] = None, output_name: Optional[str] = None,
                ivector_round: Optional[int] = None) -> torch.Tensor:
        """The output node (default: ``params["output"]``) at frames 0, s, 2s, ... < T.

        ``features`` (N, T, input_dim); ``feature_lens`` (N,) valid frames per utterance (edge
        frames repeat each utterance's last valid frame); ``ivector`` (N, ivector_dim), or
        (N, M, ivector_dim) online i-vectors every ``ivector_period`` frames, or with
        ``ivector_round=P`` (N, M, ivector_dim) rows for frames ``[m P, (m + 1) P)`` as Kaldi's
        looped decoders use them (see the module docstring). Returns (N, ceil(T / s),
        output_dim), raw (no log-softmax is added: see the module docstring). With
        ``ivector_in_features`` the features are (N, T, input_dim + ivector_dim) and no
        ``ivector`` is passed; with ``num_tokens`` the output is log-softmaxed.
        """
        output = output_name or self.output_name
        if self.ivector_in_features:
            if ivector is not None or ivector_round is not None:
                raise ValueError("ivector_in_features: the i-vectors are in the features, pass none")
            features, ivector, feature_lens = self._split_ivector(features, feature_lens)
            ivector_round = 1
        out = self._forward(features, feature_lens, ivector, output, ivector_round)
        return out.log_softmax(dim=-1) if self.num_tokens is not None and output == self.output_name else out

    def _split_ivector(self, features: torch.Tensor, feature_lens: Optional[torch.Tensor]
                       ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(MFCC, per-frame i-vectors, lengths) of features with the i-vector appended; padding
        frames get each utterance's last valid i-vector."""
        n, num_frames, dim = features.shape
        if dim != self.feature_dim:
            raise ValueError(f"features of shape {tuple(features.shape)}: expected (N, T, {self.input_dim} "
                             f"+ {self.ivector_dim}), MFCC with the i-vector appended")
        if feature_lens is None:
            feature_lens = torch.full((n,), num_frames, dtype=torch.long)
        feature_lens = feature_lens.to(features.device).clamp(min=1, max=num_frames)
        frames = torch.minimum(torch.arange(num_frames, device=features.device)[None, :], (feature_lens - 1)[:, None])
        ivector = torch.gather(features[:, :, self.input_dim:], 1,
                               frames[:, :, None].expand(-1, -1, self.ivector_dim))
        return features[:, :, :self.input_dim], ivector, feature_lens

    def _forward(self, features: torch.Tensor, feature_lens: Optional[torch.Tensor], ivector: Optional[torch.Tensor],
                 output: str, ivector_round: Optional[int]) -> torch.Tensor:
        n, num_frames, dim = features.shape
        if dim != self.input_dim or num_frames < 1:
            raise ValueError(f"features of shape {tuple(features.shape)}: expected (N, T >= 1, "
                             f"{self.input_dim}) for the network's input node")
        if feature_lens is None:
            feature_lens = torch.full((n,), num_frames, dtype=torch.long, device=features.device)
        feature_lens = feature_lens.to(features.device).clamp(min=1)
        if self.ivector_dim:
            if ivector is None or ivector.size(-1) != self.ivector_dim or ivector.dim() not in (2, 3):
                raise ValueError(f"the network has an 'ivector' input: pass ivector of shape "
                                 f"(N, {self.ivector_dim}) or (N, M, {self.ivector_dim})")
            ivector = ivector.to(features.dtype)
        num_out = self.output_lengths(num_frames)
        s = self.subsampling_factor
        if ivector_round is not None:
            if ivector is None or ivector.dim() != 3 or ivector_round < 1:
                raise ValueError("ivector_round=P needs ivector of shape (N, M, ivector_dim) and P >= 1")
            return self._evaluate(features, feature_lens, ivector, output, _Times(0, s * (num_out - 1), s),
                                  ivector_round)
        if ivector is None or ivector.dim() == 2:
            return self._evaluate(features, feature_lens, ivector, output, _Times(0, s * (num_out - 1), s))
        return torch.cat([
            self._evaluate(features, feature_lens, ivector[:, row], output,
                           _Times(s * first, s * (first + count - 1), s))
            for first, count, row in self._chunks(num_out, ivector.size(1))
        ], dim=1)

    def _chunks(self, num_out: int, num_ivectors: int) -> Iterator[Tuple[int, int, int]]:
        """(first output frame, count, i-vector row) per chunk, as DecodableNnetSimple: chunks
        of ``frames_per_chunk`` input frames rounded up to a multiple of s, each with the
        i-vector of its middle frame."""
        s = self.subsampling_factor
        per_chunk = (self.frames_per_chunk + s - 1) // s
        for first in range(0, num_out, per_chunk):
            count = min(per_chunk, num_out - first)
            middle = s * first + (s * (count - 1)) // 2
            row = middle // self.ivector_period
            if (row - (num_ivectors - 1)) * self.ivector_period > 50:
                raise ValueError(f"no i-vector for frame {middle}: {num_ivectors} i-vectors every "
                                 f"{self.ivector_period} frames (mismatched ivector_period?)")
            yield first, count, min(row, num_ivectors - 1)

    def output_lengths(self, num_frames: Union[int, torch.Tensor]) -> Union[int, torch.Tensor]:
        """Output frames for ``num_frames`` input frames: ``ceil(T / s)``."""
        return (num_frames + self.subsampling_factor - 1) // self.subsampling_factor

    def select_domain(self, domain: str) -> None:
        """Nothing to select: an imported network has no per-domain adapters."""

    def constrain_orthonormal(self) -> None:
        """One step of Kaldi's semi-orthogonal constraint on every trainable component stored
        with ``orthonormal-constraint=-1`` (floating scale), as Kaldi's training does."""
        for kaldi_name, module in self._modules_by_kaldi_name.items():
            if not isinstance(getattr(module, "weight", None), nn.Parameter) or not module.weight.requires_grad:
                continue  # fixed (LDA) or frozen: stays put
            constraint = getattr(module, "orthonormal_constraint", 0.0)
            if constraint > 0:
                raise NotImplementedError(f"{kaldi_name}: orthonormal-constraint={constraint} "
                                          "(fixed scale) is not supported; only -1")
            if constraint < 0:
                constrain_orthonormal_(module.weight)


def _module_for(spec: Mapping[str, Any]) -> nn.Module:
    """The torch module for a component's ``model_params`` entry."""
    ctype = spec["type"]
    if ctype in ("FixedAffineComponent", "AffineComponent", "NaturalGradientAffineComponent",
                 "LinearComponent", "TdnnComponent"):
        return KaldiAffine(spec["input_dim"], spec["output_dim"], bias=spec["bias"],
                           trainable=ctype != "FixedAffineComponent",
                           time_offsets=spec.get("time_offsets", (0,)),
                           orthonormal_constraint=spec.get("orthonormal_constraint", 0.0))
    if ctype == "BatchNormComponent":
        return KaldiBatchNorm(spec["block_dim"], spec["epsilon"], spec["target_rms"])
    if ctype == "RectifiedLinearComponent":
        return nn.ReLU()
    if ctype == "LogSoftmaxComponent":
        return nn.LogSoftmax(dim=-1)
    if ctype == "GeneralDropoutComponent":
        return KaldiGeneralDropout(spec["dim"], spec["block_dim"], spec["dropout_proportion"],
                                   spec["time_period"], spec["continuous"],
                                   spec["specaugment_max_proportion"])
    if ctype == "NoOpComponent":
        return KaldiNoOp(spec["backprop_scale"])
    raise ValueError(f"component type {ctype!r} has no torch module")


def _component_spec(c: Component) -> Dict[str, Any]:
    """What ``_module_for`` needs to rebuild a component without its weights (JSON-able)."""
    f = c.fields
    spec: Dict[str, Any] = {"type": c.type}
    if c.type in ("FixedAffineComponent", "AffineComponent", "NaturalGradientAffineComponent",
                  "LinearComponent", "TdnnComponent"):
        weight = f["Params"] if c.type == "LinearComponent" else f["LinearParams"]
        offsets = f.get("TimeOffsets", [0])
        if weight.shape[1] % len(offsets):
            raise Nnet3FormatError(f"{c.type} {c.name!r}: {weight.shape[1]} columns do not split "
                                   f"over {len(offsets)} time offsets")
        bias = f.get("BiasParams")
        spec.update(input_dim=int(weight.shape[1]), output_dim=int(weight.shape[0]),
                    bias=bias is not None and bias.size > 0, time_offsets=list(offsets),
                    orthonormal_constraint=float(f.get("OrthonormalConstraint", 0.0)))
        if spec["bias"] and bias.size != weight.shape[0]:
            raise Nnet3FormatError(f"{c.type} {c.name!r}: bias of {bias.size} for {weight.shape[0]} outputs")
    elif c.type == "BatchNormComponent":
        if f["Dim"] % f["BlockDim"]:
            raise Nnet3FormatError(f"BatchNormComponent {c.name!r}: BlockDim does not divide Dim")
        spec.update(dim=f["Dim"], block_dim=f["BlockDim"], epsilon=f["Epsilon"], target_rms=f["TargetRms"])
    elif c.type in ("RectifiedLinearComponent", "LogSoftmaxComponent"):
        spec.update(dim=f["Dim"])
    elif c.type == "GeneralDropoutComponent":
        spec.update(dim=f["Dim"], block_dim=f["BlockDim"], dropout_proportion=f["DropoutProportion"],
                    time_period=f["TimePeriod"], continuous="Continuous" in f,
                    specaugment_max_proportion=f.get("SpecAugmentMaxProportion", 0.0))
    elif c.type == "NoOpComponent":
        spec.update(dim=f["Dim"], backprop_scale=f["BackpropScale"])
    return spec


def _component_state(c: Component) -> Dict[str, torch.Tensor]:
    """The component's tensors under the names its torch module uses."""
    f = c.fields
    if c.type == "LinearComponent":
        return {"weight": torch.from_numpy(np.array(f["Params"]))}
    if "LinearParams" in f:
        state = {"weight": torch.from_numpy(np.array(f["LinearParams"]))}
        if f["BiasParams"].size:
            state["bias"] = torch.from_numpy(np.array(f["BiasParams"]))
        return state
    if c.type == "BatchNormComponent":
        mean, var = np.array(f["StatsMean"]), np.array(f["StatsVar"])
        if f["Count"] == 0:  # no stats: Kaldi would make random ones; normalize nothing
            mean, var = np.zeros(f["BlockDim"], np.float32), np.ones(f["BlockDim"], np.float32)
        return {"running_mean": torch.from_numpy(mean),
                "running_var": torch.from_numpy(np.maximum(var, 0.0)),
                "num_batches_tracked": torch.tensor(0, dtype=torch.long)}
    return {}


def _check_dims(nodes: Mapping[str, Node], components: Mapping[str, Mapping[str, Any]]) -> Dict[str, int]:
    """The output nodes' dims; every node's input dim is checked against its component's."""
    dims: Dict[str, Optional[int]] = {}

    def desc_dim(desc: Descriptor) -> int:
        if desc.op == "node":
            return node_dim(desc.name)
        sub = [desc_dim(a) for a in desc.args]
        if desc.op == "Append":
            return sum(sub)
        if len(set(sub)) != 1:
            raise ValueError(f"{desc.op} of different dims {sub} in {desc}")
        return sub[0]

    def node_dim(name: str) -> int:
        if name in dims:
            if dims[name] is None:
                raise ValueError(f"node {name!r} depends on itself: recurrent networks are not supported")
            return dims[name]
        node = nodes[name]
        if node.kind == "input":
            dims[name] = node.dim
            return node.dim
        dims[name] = None  # under way
        dim = desc_dim(node.input)
        if node.kind == "component":
            if node.component not in components:
                raise ValueError(f"node {name!r}: no component {node.component!r}")
            spec = components[node.component]
            expected = (spec["input_dim"] // len(spec["time_offsets"]) if "input_dim" in spec
                        else spec["dim"])
            if dim != expected:
                raise ValueError(f"node {name!r}: input {node.input} has dim {dim}, component "
                                 f"{node.component!r} ({spec['type']}) expects {expected}")
            dim = spec.get("output_dim", spec.get("dim"))
        dims[name] = dim
        return dim

    return {name: node_dim(name) for name, node in nodes.items() if node.kind == "output"}


def nnet3_model_params(nnet: Nnet3, frame_subsampling_factor: int = 3, output: str = "output",
                       ivector_period: int = 10, frames_per_chunk: int = 50) -> Dict[str, Any]:
    """The JSON-able ``model_params`` that rebuild ``nnet``'s torch module (no weights)."""
    return {
        "type": "kaldi_nnet3",
        "config_lines": nnet.config_lines(),
        "components": {name: _component_spec(c) for name, c in nnet.components.items()},
        "frame_subsampling_factor": frame_subsampling_factor,
        "output": output,
        "ivector_period": ivector_period,
        "frames_per_chunk": frames_per_chunk,
    }


def build_kaldi_model(params: Mapping[str, Any]) -> KaldiNnet3Model:
    """The module for ``model_params`` (from :func:`nnet3_model_params` or a checkpoint), with
    zero weights: load a state dict next."""
    if params.get("type") != "kaldi_nnet3":
        raise ValueError(f"model params of type {params.get('type')!r}, expected 'kaldi_nnet3'")
    return KaldiNnet3Model(params)
