"""Adapters: small modules inserted after every hidden layer of a pretrained model and trained
alone, chosen by ``model_params["adapter"]``::

    {"type": "residual", "dim": 64, "domain": "target"}   # or "lhuc" (dim unused), or "none"

Each starts as the identity, so a model with adapters inserted computes what the model without
them did. A new kind is one factory registered here: ``ADAPTERS.register("name")``, taking the
hidden dimension and the adapter params, returning the module.
"""
from typing import Any, Callable, Mapping

import torch
from torch import nn

from speechtune.registry import Registry

NO_ADAPTER = {"type": "none", "dim": 0, "domain": "target"}
ADAPTERS: Registry[Callable[[int, Mapping[str, Any]], nn.Module]] = Registry("adapter type")


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


@ADAPTERS.register("residual")
def residual_adapter(hidden_dim: int, params: Mapping[str, Any]) -> nn.Module:
    if params["dim"] < 1:
        raise ValueError("model adapter: a residual adapter needs dim >= 1 (its bottleneck)")
    return ResidualAdapter(hidden_dim, params["dim"])


@ADAPTERS.register("lhuc")
def lhuc_adapter(hidden_dim: int, params: Mapping[str, Any]) -> nn.Module:
    return Lhuc(hidden_dim)
