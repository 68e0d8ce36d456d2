"""Model types ``tdnn`` and ``tdnnf``: Kaldi-style TDNN and TDNN-F (factorized TDNN) in torch, with frame
subsampling 3 and log-softmax outputs over the lang dir's tokens, for k2 CTC and LF-MMI.

Build one from the config's ``model`` section plus what the data fixes::

    params = {**config["model"], "feature_dim": 80, "num_tokens": compiler.num_tokens}
    model = build_model(params)
    log_probs = model(features, feature_lens)          # (N, T, 80) -> (N, T', num_tokens)
    assert log_probs.size(1) == model.output_lengths(features.size(1))

    # every ORTHONORMAL_CONSTRAINT_INTERVAL optimizer steps (speechtune.models.layers):
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

from speechtune.models.adapters import ADAPTERS, NO_ADAPTER
from speechtune.models.base import MODELS
from speechtune.models.layers import SemiOrthogonalConv1d, constrain_orthonormal_, output_lengths

INPUT_NORMS = ("none", "utterance_mean", "batchnorm")
PARAM_KEYS = (
    "type", "feature_dim", "num_tokens", "input_norm", "num_layers", "full_rate_layers",
    "hidden_dim", "bottleneck_dim", "prefinal_dim", "bypass_scale", "subsampling_factor",
    "dropout", "adapter",
)


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


@MODELS.register("tdnn", "tdnnf")
class TdnnModel(nn.Module):
    """A TDNN or TDNN-F acoustic model (see the module docstring); build with :func:`build_model`."""

    output_prefix = "output."  # the output layer's parameter names, for fine-tuning to new tokens
    adapter_prefix = "encoder.adapters."  # the adapters' parameter names: what adapting trains

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
    if params["input_norm"] not in INPUT_NORMS:
        raise ValueError(f"model input_norm {params['input_norm']!r}: expected one of {INPUT_NORMS}")
    if not 1 <= params["full_rate_layers"] < params["num_layers"]:
        raise ValueError(
            f"model full_rate_layers={params['full_rate_layers']}: must be at least 1 and less "
            f"than num_layers={params['num_layers']} (a later layer does the subsampling)"
        )
    adapter = {**NO_ADAPTER, **params["adapter"]}
    if adapter["type"] != NO_ADAPTER["type"]:
        ADAPTERS.get(adapter["type"])  # an unknown type fails here, naming the known ones
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
    if p["adapter"]["type"] == NO_ADAPTER["type"]:
        return None
    make = ADAPTERS.get(p["adapter"]["type"])
    return [make(p["hidden_dim"], p["adapter"]) for _ in range(p["num_layers"])]


def _masked_time_mean(x: torch.Tensor, lens: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean over each utterance's valid frames of x (N, C, T), shaped (N, C, 1)."""
    if lens is None:
        return x.mean(dim=2, keepdim=True)
    mask = (torch.arange(x.size(2), device=x.device)[None, :] < lens[:, None]).to(x.dtype)
    return (x * mask[:, None, :]).sum(dim=2, keepdim=True) / lens.clamp(min=1).to(x.dtype)[:, None, None]
