"""Model type ``icefall_tdnn_lstm_ctc``: icefall's LibriSpeech ``tdnn_lstm_ctc`` recipe
(``egs/librispeech/ASR/tdnn_lstm_ctc/model.py``, class ``TdnnLstm``), with icefall's parameter
names, so that a released ``pretrained.pt`` loads with strict key matching::

    params = {"type": "icefall_tdnn_lstm_ctc", "feature_dim": 80, "num_tokens": 72}
    model = build_model(params)
    state = checked_icefall_state(torch.load("exp/pretrained.pt")["model"], "exp/pretrained.pt", model)
    model.load_state_dict(state)                       # strict: icefall's keys, exactly
    log_probs = model(features, feature_lens)          # (N, T, 80) -> (N, ceil(T / 3), 72)

The architecture (icefall's, unchanged; names as in its state dict)::

    tdnn.0, tdnn.3, tdnn.6     Conv1d k=3 pad=1 (feature_dim -> 500 -> 500 -> 500), the last
                               with stride subsampling_factor; each followed by ReLU and
    tdnn.2, tdnn.5, tdnn.8     BatchNorm1d(500, affine=False)
    lstms.i, lstm_bnorms.i     5 x (unidirectional LSTM 500 -> 500, BatchNorm1d, dropout 0.2),
                               each with a residual connection around it
    linear                     Linear(500, num_tokens) -> log_softmax; token 0 is the CTC blank
                               (``<eps>`` in icefall's lang_phone tokens.txt)
    adapters.i                 after LSTM block i, only with ``adapter.type`` other than none
                               (:mod:`speechtune.models.adapters`; they start as the identity)

icefall's module takes (N, C, T); ours takes (N, T, C) features and their lengths as every
model here does (:mod:`speechtune.models.base`), so :class:`IcefallTdnnLstm` transposes
before the convolutions and computes exactly icefall's function. Like icefall's, it runs on the
padded batch as it is: the LSTMs run left to right, so padding reaches an utterance's outputs
only through the convolutions' context at its last frames.

``params``: ``type``, ``feature_dim``, ``num_tokens``, ``subsampling_factor`` (icefall: 3),
``hidden_dim`` (500), ``dropout`` (0.2) and ``adapter``. A config's ``model`` section names
this type for the ``scratch`` system of a preset whose pretrained model is icefall's
(config/icefall_librispeech.yaml); the schema's TDNN keys (``num_layers``, ...) have no
meaning here and are dropped from ``params`` (:data:`TDNN_ONLY_KEYS`).
"""
from typing import Any, Dict, Iterable, Mapping, Optional, Union

import torch
from torch import nn

from speechtune.errors import StageError
from speechtune.models.adapters import ADAPTERS, NO_ADAPTER
from speechtune.models.base import MODELS
from speechtune.models.layers import output_lengths

NUM_LSTMS = 5  # icefall's TdnnLstm: fixed, as its parameter names are
PARAM_KEYS = ("type", "feature_dim", "num_tokens", "subsampling_factor", "hidden_dim", "dropout", "adapter")
DEFAULTS = {"subsampling_factor": 3, "hidden_dim": 500, "dropout": 0.2, "adapter": NO_ADAPTER}
# Keys the schema asks of every model section (for the TDNNs) that this architecture has no use for.
TDNN_ONLY_KEYS = ("input_norm", "num_layers", "full_rate_layers", "bottleneck_dim", "prefinal_dim", "bypass_scale")
ICEFALL_PREFIXES = ("tdnn.", "lstms.", "lstm_bnorms.", "linear.")


@MODELS.register("icefall_tdnn_lstm_ctc")
class IcefallTdnnLstm(nn.Module):
    """icefall's ``TdnnLstm`` (see the module docstring); build with :func:`build_model`."""

    output_prefix = "linear."  # the output layer's parameter names, for fine-tuning to new tokens
    adapter_prefix = "adapters."  # the adapters' parameter names: what adapting trains

    def __init__(self, params: Mapping[str, Any]):
        super().__init__()
        self.params = _checked_params(params)
        p = self.params
        hidden = p["hidden_dim"]
        self.subsampling_factor = p["subsampling_factor"]
        self.tdnn = nn.Sequential(
            nn.Conv1d(p["feature_dim"], hidden, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden, affine=False),
            nn.Conv1d(hidden, hidden, kernel_size=3, stride=1, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden, affine=False),
            nn.Conv1d(hidden, hidden, kernel_size=3, stride=self.subsampling_factor, padding=1),
            nn.ReLU(inplace=True),
            nn.BatchNorm1d(hidden, affine=False),
        )
        self.lstms = nn.ModuleList([nn.LSTM(input_size=hidden, hidden_size=hidden, num_layers=1)
                                    for _ in range(NUM_LSTMS)])
        self.lstm_bnorms = nn.ModuleList([nn.BatchNorm1d(hidden, affine=False) for _ in range(NUM_LSTMS)])
        self.dropout = nn.Dropout(p["dropout"])
        self.linear = nn.Linear(hidden, p["num_tokens"])
        adapter = p["adapter"]
        # None (not an empty ModuleList) without adapters: the state dict stays icefall's exactly.
        self.adapters = (nn.ModuleList([ADAPTERS.get(adapter["type"])(hidden, adapter) for _ in range(NUM_LSTMS)])
                         if adapter["type"] != NO_ADAPTER["type"] else None)
        self.use_adapters = True

    def forward(self, features: torch.Tensor, feature_lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Log-probs (N, ceil(T / subsampling_factor), num_tokens) for features (N, T, C).

        ``feature_lens`` is accepted for the common interface and not needed: icefall's
        network is run on padded batches as they are (its LSTMs run left to right, so padding
        reaches an utterance's outputs only through the last frames' convolution context)."""
        x = self.tdnn(features.transpose(1, 2))  # icefall's input layout: (N, C, T)
        x = x.permute(2, 0, 1)  # (T, N, C), the LSTMs' layout
        for i, (lstm, bnorm) in enumerate(zip(self.lstms, self.lstm_bnorms)):
            x_new, _ = lstm(x)
            x_new = self.dropout(bnorm(x_new.permute(1, 2, 0)).permute(2, 0, 1))
            x = x_new + x  # icefall's skip connection
            if self.adapters is not None and self.use_adapters:
                x = self.adapters[i](x.permute(1, 2, 0)).permute(2, 0, 1)  # adapters take (N, C, T)
        return self.linear(x.transpose(0, 1)).log_softmax(dim=-1)

    def output_lengths(self, num_frames: Union[int, torch.Tensor]) -> Union[int, torch.Tensor]:
        """Output frames for ``num_frames`` inputs: the strided conv (k=3, pad=1) gives
        ``floor((T - 1) / s) + 1 = ceil(T / s)``."""
        return output_lengths(num_frames, self.subsampling_factor)

    def select_domain(self, domain: str) -> None:
        """Apply the adapters for their own domain, bypass them for any other."""
        self.use_adapters = domain == self.params["adapter"]["domain"]

    def constrain_orthonormal(self) -> None:
        """Nothing to do: icefall's TdnnLstm has no semi-orthogonal layers."""


def _checked_params(params: Mapping[str, Any]) -> Dict[str, Any]:
    params = {**DEFAULTS, **{k: v for k, v in params.items() if k not in TDNN_ONLY_KEYS}}
    missing = sorted(set(PARAM_KEYS) - set(params))
    unknown = sorted(set(params) - set(PARAM_KEYS))
    if missing or unknown:
        raise ValueError(f"model params: missing {missing}, unknown {unknown}; expected {list(PARAM_KEYS)}")
    adapter = {**NO_ADAPTER, **params["adapter"]}
    if adapter["type"] != NO_ADAPTER["type"]:
        ADAPTERS.get(adapter["type"])  # an unknown type fails here, naming the known ones
    return {**{key: params[key] for key in PARAM_KEYS}, "adapter": adapter}


def icefall_params(state: Mapping[str, torch.Tensor], path: Any) -> Dict[str, Any]:
    """The ``params`` of the model a released tdnn_lstm_ctc state dict holds, read off its
    shapes (``feature_dim`` from ``tdnn.0.weight``, ``num_tokens`` from ``linear.weight``); the
    subsampling factor is icefall's 3 (a stride leaves no trace in the weights)."""
    _check_architecture(state, path)
    for key in ("tdnn.0.weight", "linear.weight"):
        if key not in state:
            raise StageError(f"{path}: no {key!r} in its model: not a whole tdnn_lstm_ctc checkpoint; "
                             "use the released exp/pretrained.pt (or an epoch-N.pt) of icefall's recipe")
    hidden, feature_dim, _ = state["tdnn.0.weight"].shape
    return {"type": "icefall_tdnn_lstm_ctc", "feature_dim": int(feature_dim),
            "num_tokens": int(state["linear.weight"].shape[0]), "subsampling_factor": DEFAULTS["subsampling_factor"],
            "hidden_dim": int(hidden), "dropout": DEFAULTS["dropout"], "adapter": dict(NO_ADAPTER)}


def checked_icefall_state(state: Mapping[str, torch.Tensor], path: Any, model: nn.Module) -> Dict[str, torch.Tensor]:
    """``state`` if it fits ``model`` key for key and shape for shape; else a StageError naming
    ``path``, the missing and unexpected keys, the mismatched shapes and the fix."""
    _check_architecture(state, path)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = sorted(f"{k} {tuple(state[k].shape)} (model: {tuple(expected[k].shape)})"
                    for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or shapes:
        problems = [f"{what} {_listed(keys)}" for what, keys in
                    (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", shapes)) if keys]
        raise StageError(f"{path} does not fit icefall's tdnn_lstm_ctc TdnnLstm ({'; '.join(problems)}): "
                         "use the recipe's released exp/pretrained.pt or an epoch-N.pt it wrote, unmodified")
    return dict(state)


def _check_architecture(state: Mapping[str, torch.Tensor], path: Any) -> None:
    """A state dict of another architecture (a conformer, a transducer) is told apart from a
    damaged tdnn_lstm_ctc one: none of TdnnLstm's module names occur in it."""
    if not any(key.startswith(ICEFALL_PREFIXES) for key in state):
        heads = sorted({key.split(".")[0] for key in state})
        hint = " (an icefall conformer_ctc's keys)" if {"encoder_embed", "encoder"} & set(heads) else ""
        raise StageError(f"{path} is not a tdnn_lstm_ctc checkpoint: its modules are {_listed(heads)}{hint}, "
                         f"TdnnLstm's are {', '.join(p.rstrip('.') for p in ICEFALL_PREFIXES)}; "
                         "only icefall's tdnn_lstm_ctc recipe can be imported as model type icefall_tdnn_lstm_ctc")


def _listed(keys: Iterable[str], limit: int = 12) -> str:
    keys = list(keys)
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more

