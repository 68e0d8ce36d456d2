"""Kaldi nnet3 model files: read and write them (binary or text), byte for byte as Kaldi does.

Read a released chain model (``final.mdl`` = TransitionModel + AmNnetSimple) or a bare ``.raw``
Nnet and look at it; :mod:`speechtune.models.kaldi_nnet3` turns it into a torch module::

    nnet = read_nnet3("am/final.mdl")
    nnet.component_types()        # Counter({'TdnnComponent': 28, 'BatchNormComponent': 19, ...})
    nnet.components["tdnnf2.linear"].fields["LinearParams"]   # numpy float32 (64, 1536)
    nnet.transition_model.num_pdfs                           # 2616

    write_nnet3(nnet, "copy.txt", binary=False)   # what ``nnet3-am-copy --binary=false`` writes

A component type this module does not know stops the reader with its name, type, file and
byte offset (:class:`speechtune.kaldi.io.KaldiFormatError`).
"""
import re
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from speechtune.kaldi.io import FieldValue, KaldiFormatError, KaldiReader, KaldiWriter, PathLike

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

_DESCRIPTOR_TOKEN = re.compile(r"\s*([(),]|[^\s(),]+)")


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

    def fail(what: str) -> KaldiFormatError:
        return KaldiFormatError(f"{where}: {what} in descriptor {text!r}")

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


def parse_config_lines(lines: Sequence[str], path: str) -> "OrderedDict[str, Node]":
    """The config section: input-node, component-node and output-node lines."""
    parsed = []
    for number, line in enumerate(lines, 1):
        where = f"{path}: config line {number}"
        kind, _, rest = line.strip().partition(" ")
        keys = list(_CONFIG_KEY.finditer(rest))
        values = {m.group(1): rest[m.end(): keys[i + 1].start() if i + 1 < len(keys) else len(rest)].strip()
                  for i, m in enumerate(keys)}
        if kind not in ("input-node", "component-node", "output-node"):
            raise KaldiFormatError(f"{where}: node type {kind!r} is not supported "
                                   "(supported: input-node, component-node, output-node)")
        if "name" not in values:
            raise KaldiFormatError(f"{where}: no name= in {line!r}")
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
            raise KaldiFormatError(f"{where}: {kind} {name!r} has no {e.args[0]}=") from None
        if name in nodes:
            raise KaldiFormatError(f"{where}: node {name!r} defined twice")
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

    Raises :class:`KaldiFormatError` naming the file, byte offset and token (or the component
    type) it cannot read::

        nnet = read_nnet3("exp/chain/tdnn1a/final.mdl")
        print(nnet.component_types(), nnet.transition_model.num_pdfs)
    """
    path = Path(path)
    if not path.is_file():
        raise KaldiFormatError(f"{path}: no such file")
    r = KaldiReader(path.read_bytes(), str(path))
    first = r.peek_token()
    transition_model = _read_transition_model(r) if first == "<TransitionModel>" else None
    r.expect("<Nnet3>")
    if r.line().strip():
        raise r.error("expected a newline after <Nnet3>")
    lines = []
    while (line := r.line()).strip():
        lines.append(line)
    nodes = parse_config_lines(lines, str(path))
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
            raise KaldiFormatError(f"{path}: node {node.name!r} uses component {node.component!r}, "
                                   "which the file does not define")
    return nnet


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------

def _write_transition_model(w: KaldiWriter, tm: TransitionModel) -> None:
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
    w = KaldiWriter(binary)
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
    Path(path).write_bytes(w.getvalue())
