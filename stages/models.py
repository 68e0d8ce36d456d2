"""Acoustic models: Kaldi-style TDNN and TDNN-F (factorized TDNN) in torch, with frame
subsampling 3 and log-softmax outputs over the lang dir's tokens, for k2 CTC and LF-MMI.

Build one from the config's ``model`` section plus what the data fixes::

    params = {**config["model"], "feature_dim": 80, "num_tokens": compiler.num_tokens}
    model = build_model(params)
    log_probs = model(features, feature_lens)          # (N, T, 80) -> (N, T', num_tokens)
    assert log_probs.size(1) == model.output_lengths(features.size(1))

    # every ORTHONORMAL_CONSTRAINT_INTERVAL optimizer steps, as Kaldi's nnet3 training does:
    model.constrain_orthonormal()

``model.params`` holds every hyper-parameter ``build_model`` needs (JSON-able), so a
checkpoint that stores it next to the state dict rebuilds the model::

    torch.save({"model": model.state_dict(), "model_params": model.params, ...}, path)
    model = build_model(checkpoint["model_params"])
    model.load_state_dict(checkpoint["model"])

Layout and parameter names (stable: checkpoints, partial fine-tuning by name pattern, and the
adapters inserted later all refer to them); Kaldi's component names in brackets::

    input_norm                 BatchNorm1d over features, or none    [idct-batchnorm]
    encoder.layers.0           TdnnLayer: Append(-1,0,1) -> affine -> ReLU -> batchnorm  [tdnn1]
    encoder.layers.i           TdnnfLayer (type tdnnf) or TdnnLayer (type tdnn)  [tdnnf<i+1>]
        .linear                  semi-orthogonal bottleneck, offsets (-s, 0)  (tdnnf only)
        .affine                  offsets (0, s) for tdnnf, (-s, 0, s) for tdnn
        .batchnorm
    prefinal_l                 semi-orthogonal linear, hidden -> prefinal   [prefinal-l] (tdnnf only)
    prefinal_chain.affine / .batchnorm1 / .linear / .batchnorm2             [prefinal-chain]
    output                     Linear -> log_softmax                        [output]
    encoder.adapters.i         after hidden layer i, only with ``adapter.type`` other than none:
        .down / .up              residual bottleneck adapter: x + up(relu(down(x))), up = 0 at start
        .scale                   LHUC: x * 2 sigmoid(scale), scale = 0 at start

Adapters (``params["adapter"]``: ``{"type": "none" | "residual" | "lhuc", "dim": bottleneck,
"domain": "target"}``) start as the identity, so a model with adapters inserted computes what
the model without them did. They belong to one domain: ``model.select_domain("source")``
bypasses them, ``model.select_domain("target")`` (the default) applies them, so per-domain
adaptation leaves the other domain's model untouched.

Frame subsampling: the first ``full_rate_layers`` layers run at the input frame rate; the next
layer keeps every ``subsampling_factor``-th frame of its input (frames 0, 3, 6, ...) and all
later layers run at that rate. This is what Kaldi's chain TDNN-F computes when its later layers
have time-stride 3 and outputs are only needed every third frame (Kaldi's ``time-stride=0``
layer marks the switch; here the subsampling layer is that layer). So the output has

    T' = ceil(T / subsampling_factor) = (T + subsampling_factor - 1) // subsampling_factor

frames (:func:`output_lengths`). Unlike Kaldi, which feeds extra context frames and lets each
layer shrink the sequence, every layer here zero-pads in time to keep its length.
"""
from typing import Any, Dict, List, Mapping, Optional, Union

import torch
from torch import nn

# Kaldi applies the semi-orthogonal constraint to each constrained component in about one of
# four minibatches ("it won't have time to stray far from the constraint in between").
ORTHONORMAL_CONSTRAINT_INTERVAL = 4

MODEL_TYPES = ("tdnn", "tdnnf")
INPUT_NORMS = ("none", "utterance_mean", "batchnorm")
PARAM_KEYS = (
    "type", "feature_dim", "num_tokens", "input_norm", "num_layers", "full_rate_layers",
    "hidden_dim", "bottleneck_dim", "prefinal_dim", "bypass_scale", "subsampling_factor",
    "dropout", "adapter",
)
ADAPTER_TYPES = ("none", "residual", "lhuc")
NO_ADAPTER = {"type": "none", "dim": 0, "domain": "target"}


def output_lengths(
    num_frames: Union[int, torch.Tensor], subsampling_factor: int
) -> Union[int, torch.Tensor]:
    """Output frames for ``num_frames`` input frames: ``ceil(T / subsampling_factor)``."""
    return (num_frames + subsampling_factor - 1) // subsampling_factor


@torch.no_grad()
def constrain_orthonormal_(weight: torch.Tensor, update_speed: float = 0.125) -> None:
    """One step of Kaldi's ``ConstrainOrthonormalInternal`` with a floating scale
    (``orthonormal-constraint=-1``), in place, towards ``M M^T = alpha^2 I``.

    ``M`` is the weight as Kaldi stores a TdnnComponent's linear params: rows = outputs,
    columns = inputs x time offsets (a column permutation of Kaldi's order, which leaves
    ``M M^T`` unchanged). Where rows > columns, ``M^T`` is constrained instead.

    With ``P = M M^T``, the step is gradient descent on ``||P - alpha^2 I||_F^2``, whose
    gradient is ``4 (P - alpha^2 I) M``::

        alpha^2 = tr(P P) / tr(P)                    # floating scale: follows M's own size
        M <- M - (4 * update_speed / alpha^2) (P - alpha^2 I) M

    ``update_speed = 1/8`` converges quadratically near the constraint (Povey et al. 2018,
    "Semi-orthogonal low-rank matrix factorization for deep neural networks"). The ratio
    ``tr(P P) * rows / tr(P)^2 >= 1`` measures how unequal P's eigenvalues are; far from the
    constraint Kaldi halves the speed (ratio > 1.02) and halves it again (ratio > 1.1) so the
    step cannot diverge.
    """
    W = weight.reshape(weight.size(0), -1)
    transposed = W.size(0) > W.size(1)
    M = W.t() if transposed else W
    P = M @ M.t()
    trace_P = P.trace()
    trace_P_P = (P * P).sum()
    alpha2 = trace_P_P / trace_P
    ratio = trace_P_P * P.size(0) / (trace_P * trace_P)
    if ratio > 1.02:
        update_speed *= 0.5
        if ratio > 1.1:
            update_speed *= 0.5
    P.diagonal().sub_(alpha2)
    M = M - (4.0 * update_speed / alpha2) * (P @ M)
    weight.copy_((M.t() if transposed else M).reshape(weight.shape))


class SemiOrthogonalConv1d(nn.Conv1d):
    """A bias-free linear map over time offsets, kept semi-orthogonal by
    :meth:`TdnnModel.constrain_orthonormal` (Kaldi: ``orthonormal-constraint=-1``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, dilation: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, dilation=dilation, bias=False)


class TdnnLayer(nn.Module):
    """Kaldi's ``relu-batchnorm-dropout-layer`` over spliced frames ``Append(-s, 0, s)``.

    Input and output are (N, C, T). With ``subsampling > 1`` the layer first keeps every
    ``subsampling``-th input frame.
    """

    def __init__(self, input_dim: int, output_dim: int, time_stride: int = 1, subsampling: int = 1,
                 dropout: float = 0.0):
        super().__init__()
        self.subsampling = subsampling
        self.affine = nn.Conv1d(input_dim, output_dim, kernel_size=3, dilation=time_stride,
                                padding=time_stride)
        self.batchnorm = nn.BatchNorm1d(output_dim, affine=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.subsampling]
        return self.dropout(self.batchnorm(torch.relu(self.affine(x))))


class TdnnfLayer(nn.Module):
    """Kaldi's ``tdnnf-layer``: a factorized TDNN layer with a bypass connection::

        y = dropout(batchnorm(relu(affine(linear(x))))) + bypass_scale * x

    ``linear`` (dim -> bottleneck, offsets (-s, 0), semi-orthogonal) and ``affine``
    (bottleneck -> dim, offsets (0, s)) together see frames t-s .. t+s; ``time_stride=0`` makes
    both frame-wise. With ``subsampling > 1`` the layer first keeps every ``subsampling``-th
    input frame, and the bypass adds those same frames.
    """

    def __init__(self, dim: int, bottleneck_dim: int, time_stride: int = 1, subsampling: int = 1,
                 bypass_scale: float = 0.66, dropout: float = 0.0):
        super().__init__()
        self.subsampling = subsampling
        self.time_stride = time_stride
        self.bypass_scale = bypass_scale
        kernel_size = 2 if time_stride > 0 else 1
        dilation = max(time_stride, 1)
        self.linear = SemiOrthogonalConv1d(dim, bottleneck_dim, kernel_size, dilation=dilation)
        self.affine = nn.Conv1d(bottleneck_dim, dim, kernel_size, dilation=dilation)
        self.batchnorm = nn.BatchNorm1d(dim, affine=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.subsampling]
        s = self.time_stride
        # Zero-pad on the side each half-context reaches past, so T is kept.
        y = self.linear(nn.functional.pad(x, (s, 0)))
        y = self.affine(nn.functional.pad(y, (0, s)))
        y = self.dropout(self.batchnorm(torch.relu(y)))
        return y + self.bypass_scale * x


class PrefinalLayer(nn.Module):
    """Kaldi's ``prefinal-layer``: affine -> ReLU -> batchnorm1 -> linear (semi-orthogonal)
    -> batchnorm2, from ``input_dim`` up to ``big_dim`` and down to ``small_dim``."""

    def __init__(self, input_dim: int, big_dim: int, small_dim: int):
        super().__init__()
        self.affine = nn.Conv1d(input_dim, big_dim, kernel_size=1)
        self.batchnorm1 = nn.BatchNorm1d(big_dim, affine=False)
        self.linear = SemiOrthogonalConv1d(big_dim, small_dim)
        self.batchnorm2 = nn.BatchNorm1d(small_dim, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.batchnorm1(torch.relu(self.affine(x)))
        return self.batchnorm2(self.linear(x))


class ResidualAdapter(nn.Module):
    """A bottleneck residual adapter (Houlsby et al. 2019; Tomanek et al. 2021 for ASR):
    ``x + up(relu(down(x)))`` per frame. ``up`` starts at zero: the identity."""

    def __init__(self, dim: int, bottleneck_dim: int):
        super().__init__()
        self.down = nn.Conv1d(dim, bottleneck_dim, kernel_size=1)
        self.up = nn.Conv1d(bottleneck_dim, dim, kernel_size=1)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(torch.relu(self.down(x)))


class Lhuc(nn.Module):
    """Learning hidden unit contributions (Swietojanski & Renals, 2014): each hidden unit's
    output scaled by ``2 sigmoid(scale)`` in (0, 2); ``scale`` starts at 0, a factor of 1."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (2.0 * torch.sigmoid(self.scale))[None, :, None]


class TdnnEncoder(nn.Module):
    """The hidden layers, applied in order: a ModuleList so that layers can be addressed
    (``encoder.layers.3``), frozen, wrapped or have modules inserted between them; with
    ``adapters``, adapter i follows layer i while ``use_adapters`` is true."""

    def __init__(self, layers: List[nn.Module], adapters: Optional[List[nn.Module]] = None):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.adapters = nn.ModuleList(adapters) if adapters else None
        self.use_adapters = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if self.adapters is not None and self.use_adapters:
                x = self.adapters[i](x)
        return x


class TdnnModel(nn.Module):
    """A TDNN or TDNN-F acoustic model (see the module docstring); build with :func:`build_model`."""

    output_prefix = "output."  # the output layer's parameter names, for fine-tuning to new tokens

    def __init__(self, params: Mapping[str, Any]):
        super().__init__()
        self.params = _checked_params(params)
        p = self.params
        self.subsampling_factor = p["subsampling_factor"]
        self.utterance_mean_norm = p["input_norm"] == "utterance_mean"
        self.input_norm = (
            nn.BatchNorm1d(p["feature_dim"], affine=False) if p["input_norm"] == "batchnorm" else None
        )
        self.encoder = TdnnEncoder(_hidden_layers(p), _adapters(p))
        if p["type"] == "tdnnf":
            self.prefinal_l = SemiOrthogonalConv1d(p["hidden_dim"], p["prefinal_dim"])
            self.prefinal_chain = PrefinalLayer(p["prefinal_dim"], p["hidden_dim"], p["prefinal_dim"])
        else:
            self.prefinal_l = None
            self.prefinal_chain = PrefinalLayer(p["hidden_dim"], p["hidden_dim"], p["prefinal_dim"])
        self.output = nn.Linear(p["prefinal_dim"], p["num_tokens"])

    def forward(self, features: torch.Tensor, feature_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Log-probs (N, T', num_tokens) for features (N, T, feature_dim).

        ``feature_lens`` (N,) counts each utterance's valid frames; only ``utterance_mean``
        normalization needs it (without it, padding frames enter the mean).
        """
        x = features.transpose(1, 2)  # (N, C, T): Conv1d and BatchNorm1d layout
        if self.utterance_mean_norm:
            x = x - _masked_time_mean(x, feature_lens)
        elif self.input_norm is not None:
            x = self.input_norm(x)
        x = self.encoder(x)
        if self.prefinal_l is not None:
            x = self.prefinal_l(x)
        x = self.prefinal_chain(x)
        return self.output(x.transpose(1, 2)).log_softmax(dim=-1)

    def output_lengths(self, num_frames: Union[int, torch.Tensor]) -> Union[int, torch.Tensor]:
        """Output frames for ``num_frames`` input frames (see :func:`output_lengths`)."""
        return output_lengths(num_frames, self.subsampling_factor)

    def select_domain(self, domain: str) -> None:
        """Apply the adapters for their own domain, bypass them for any other."""
        self.encoder.use_adapters = domain == self.params["adapter"]["domain"]

    def constrain_orthonormal(self) -> None:
        """Move every trainable semi-orthogonal weight one step towards its constraint
        (:func:`constrain_orthonormal_`); call every ORTHONORMAL_CONSTRAINT_INTERVAL steps."""
        for module in self.modules():
            if isinstance(module, SemiOrthogonalConv1d) and module.weight.requires_grad:  # frozen stays put
                constrain_orthonormal_(module.weight)


def _checked_params(params: Mapping[str, Any]) -> Dict[str, Any]:
    params = {"adapter": NO_ADAPTER, **params}  # checkpoints from before adapters existed
    missing = sorted(set(PARAM_KEYS) - set(params))
    unknown = sorted(set(params) - set(PARAM_KEYS))
    if missing or unknown:
        raise ValueError(f"model params: missing {missing}, unknown {unknown}; expected {list(PARAM_KEYS)}")
    if params["type"] not in MODEL_TYPES:
        raise ValueError(f"model type {params['type']!r}: expected one of {MODEL_TYPES}")
    if params["input_norm"] not in INPUT_NORMS:
        raise ValueError(f"model input_norm {params['input_norm']!r}: expected one of {INPUT_NORMS}")
    if not 1 <= params["full_rate_layers"] < params["num_layers"]:
        raise ValueError(
            f"model full_rate_layers={params['full_rate_layers']}: must be at least 1 and less "
            f"than num_layers={params['num_layers']} (a later layer does the subsampling)"
        )
    adapter = {**NO_ADAPTER, **params["adapter"]}
    if adapter["type"] not in ADAPTER_TYPES:
        raise ValueError(f"model adapter type {adapter['type']!r}: expected one of {ADAPTER_TYPES}")
    if adapter["type"] == "residual" and adapter["dim"] < 1:
        raise ValueError("model adapter: a residual adapter needs dim >= 1 (its bottleneck)")
    return {**{key: params[key] for key in PARAM_KEYS}, "adapter": adapter}


def _hidden_layers(p: Mapping[str, Any]) -> List[nn.Module]:
    """Layer 0 splices the input (Kaldi's tdnn1); layer ``full_rate_layers`` subsamples."""
    layers: List[nn.Module] = [TdnnLayer(p["feature_dim"], p["hidden_dim"], dropout=p["dropout"])]
    for i in range(1, p["num_layers"]):
        subsampling = p["subsampling_factor"] if i == p["full_rate_layers"] else 1
        if p["type"] == "tdnnf":
            layers.append(TdnnfLayer(
                p["hidden_dim"], p["bottleneck_dim"],
                time_stride=0 if subsampling > 1 else 1,
                subsampling=subsampling,
                bypass_scale=p["bypass_scale"],
                dropout=p["dropout"],
            ))
        else:
            layers.append(TdnnLayer(p["hidden_dim"], p["hidden_dim"], subsampling=subsampling,
                                    dropout=p["dropout"]))
    return layers


def _adapters(p: Mapping[str, Any]) -> Optional[List[nn.Module]]:
    kind = p["adapter"]["type"]
    if kind == "residual":
        return [ResidualAdapter(p["hidden_dim"], p["adapter"]["dim"]) for _ in range(p["num_layers"])]
    if kind == "lhuc":
        return [Lhuc(p["hidden_dim"]) for _ in range(p["num_layers"])]
    return None


def _masked_time_mean(x: torch.Tensor, lens: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean over each utterance's valid frames of x (N, C, T), shaped (N, C, 1)."""
    if lens is None:
        return x.mean(dim=2, keepdim=True)
    mask = (torch.arange(x.size(2), device=x.device)[None, :] < lens[:, None]).to(x.dtype)
    return (x * mask[:, None, :]).sum(dim=2, keepdim=True) / lens.clamp(min=1).to(x.dtype)[:, None, None]


def build_model(params: Mapping[str, Any]) -> nn.Module:
    """The model for ``params``: the config's ``model`` section plus ``feature_dim`` and
    ``num_tokens`` (exactly the keys in PARAM_KEYS; ``model.params`` round-trips); or, for
    ``type: kaldi_nnet3`` (an imported Kaldi network), :func:`stages.kaldi_nnet3.build_kaldi_model`."""
    if params.get("type") == "kaldi_nnet3":
        from stages.kaldi_nnet3 import build_kaldi_model  # it builds on this module's helpers

        return build_kaldi_model(params)
    return TdnnModel(params)


def num_parameters(model: nn.Module) -> int:
    """How many numbers the model learns (for logs and the size bound in tests)."""
    return sum(p.numel() for p in model.parameters())


def trainable_parameters(model: nn.Module) -> int:
    """How many numbers training changes: the parameters not frozen (requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
