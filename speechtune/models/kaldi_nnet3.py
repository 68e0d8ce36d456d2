"""Model type ``kaldi_nnet3``: a Kaldi nnet3 network (:mod:`speechtune.kaldi.nnet3`) as a torch
module, its graph evaluated over time as Kaldi's nnet3 decoders do; and the import of a released
Kaldi model directory as an icefall-format checkpoint (:func:`import_kaldi_model`)::

    nnet = read_nnet3("am/final.mdl")
    model = KaldiNnet3Model.from_nnet3(nnet).eval()
    model.left_context, model.right_context                  # 34, 34 (frames of "input")
    out = model(mfcc, ivector=ivector)   # (N, T, 40), (N, 100) -> (N, ceil(T / 3), 2616)

    # icefall-style round trip: model_params is JSON-able and rebuilds the module
    torch.save({"model": model.state_dict(), "model_params": model.params}, "model.pt")
    model = build_kaldi_model(checkpoint["model_params"]); model.load_state_dict(checkpoint["model"])

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
:mod:`speechtune.training` can use like its own models. ``ivector_in_features: true``: the features
are the MFCC with each frame's online i-vector appended (``feature_dim`` = input dim + i-vector
dim, what ``speechtune.features.extractors.KaldiModelFrontEnd`` stores); ``forward(features, feature_lens)``
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
"""

import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from speechtune.errors import StageError
from speechtune.kaldi.io import KaldiFormatError
from speechtune.kaldi.nnet3 import Component, Descriptor, Nnet3, Node, parse_config_lines, read_nnet3
from speechtune.models.base import MODELS, num_parameters
from speechtune.models.layers import constrain_orthonormal_
from speechtune.provenance import StageRun, atomic_dir, file_sha256

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
        self.nodes = parse_config_lines(params["config_lines"], "model_params")
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
            raise KaldiFormatError(f"{c.type} {c.name!r}: {weight.shape[1]} columns do not split "
                                   f"over {len(offsets)} time offsets")
        bias = f.get("BiasParams")
        spec.update(input_dim=int(weight.shape[1]), output_dim=int(weight.shape[0]),
                    bias=bias is not None and bias.size > 0, time_offsets=list(offsets),
                    orthonormal_constraint=float(f.get("OrthonormalConstraint", 0.0)))
        if spec["bias"] and bias.size != weight.shape[0]:
            raise KaldiFormatError(f"{c.type} {c.name!r}: bias of {bias.size} for {weight.shape[0]} outputs")
    elif c.type == "BatchNormComponent":
        if f["Dim"] % f["BlockDim"]:
            raise KaldiFormatError(f"BatchNormComponent {c.name!r}: BlockDim does not divide Dim")
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


@MODELS.register("kaldi_nnet3")
def build_kaldi_model(params: Mapping[str, Any]) -> KaldiNnet3Model:
    """The module for ``model_params`` (from :func:`nnet3_model_params` or a checkpoint), with
    zero weights: load a state dict next."""
    if params.get("type") != "kaldi_nnet3":
        raise ValueError(f"model params of type {params.get('type')!r}, expected 'kaldi_nnet3'")
    return KaldiNnet3Model(params)


def import_kaldi_model(model_dir: Path, exp_dir: Path, run: StageRun, frame_subsampling_factor: int = 3,
                       output: str = "output") -> None:
    """Write ``exp_dir`` (atomically) from the Kaldi model directory ``model_dir``::

        exp/kaldi_ko/model.pt         {"model": state_dict, "model_params": {...}, "epoch": 0, "step": 0,
                                       "tokens": {"pdf0": 0, ...}, "kaldi": {source, sha256, num_pdfs, ...}}
        exp/kaldi_ko/model_info.json  components by type, dims, contexts, torch name -> Kaldi name
        exp/kaldi_ko/conf/            the model's mfcc.conf and model.conf (the front end to match)
        exp/kaldi_ko/ivector/         its i-vector extractor (the front end's second half)
        exp/kaldi_ko/provenance.json

    so ``exp_dir`` is itself a model directory for ``features --front-end``. The checkpoint's
    model takes the MFCC with the online i-vector appended to each frame
    (``ivector_in_features``) and returns the chain model's raw ``output`` node, one frame in
    ``frame_subsampling_factor``; its outputs are pdfs, named ``pdf<i>`` as its tokens.
    """
    mdl = model_dir / "am" / "final.mdl"
    if not mdl.is_file():
        raise StageError(f"{mdl} is missing: {model_dir} is not a Kaldi nnet3 model directory")
    started = time.time()
    nnet = read_nnet3(mdl)
    parse_seconds = time.time() - started
    try:
        model = KaldiNnet3Model.from_nnet3(nnet, frame_subsampling_factor=frame_subsampling_factor, output=output)
    except ValueError as e:
        raise StageError(f"{mdl}: {e}") from None
    kaldi = {
        "source": str(mdl),
        "sha256": file_sha256(mdl),
        "num_pdfs": nnet.transition_model.num_pdfs if nnet.transition_model else None,
        "input_dim": model.input_dim,
        "ivector_dim": model.ivector_dim,
        "output_dims": model.output_dims,
        "left_context": model.left_context,
        "right_context": model.right_context,
        "frame_subsampling_factor": frame_subsampling_factor,
        "raw_output": "chain output: no log-softmax; Kaldi uses it as log-likelihoods",
    }
    info = {
        **kaldi,
        "component_types": dict(nnet.component_types()),
        "config_lines": nnet.config_lines(),
        "torch_to_kaldi_names": model.kaldi_names,
        "parameters": num_parameters(model),
        "parse_seconds": round(parse_seconds, 3),
    }
    with atomic_dir(exp_dir) as tmp:
        params = {**model.params, "ivector_in_features": model.ivector_dim > 0,
                  "feature_dim": model.input_dim + model.ivector_dim}
        tokens = {f"pdf{i}": i for i in range(model.output_dims[output])}
        torch.save({"model": model.state_dict(), "model_params": params, "epoch": 0, "step": 0,
                    "tokens": tokens, "kaldi": kaldi}, tmp / "model.pt")
        (tmp / "model_info.json").write_text(json.dumps(info, indent=2) + "\n")
        conf = [model_dir / "conf" / name for name in ("mfcc.conf", "model.conf")]
        if any(path.is_file() for path in conf):
            (tmp / "conf").mkdir()
            for path in conf:
                if path.is_file():
                    shutil.copy(path, tmp / "conf" / path.name)
        if (model_dir / "ivector").is_dir():
            shutil.copytree(model_dir / "ivector", tmp / "ivector")
        run.write_provenance(tmp / "provenance.json", parameters=info["parameters"],
                             parse_seconds=info["parse_seconds"], component_types=info["component_types"])
    run.log.info("imported %s: %d components %s, %d parameters, contexts %d/%d, %d outputs -> %s",
                 mdl, len(nnet.components), dict(nnet.component_types()), info["parameters"],
                 model.left_context, model.right_context, model.output_dims[output], exp_dir)
