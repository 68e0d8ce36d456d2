"""The registry of model types and what every model offers the training loop.

A model type is a callable ``params -> nn.Module`` registered under the name a checkpoint's
``model_params["type"]`` holds, so ``build_model`` rebuilds any checkpoint's model::

    @MODELS.register("tdnn", "tdnnf")
    class TdnnModel(nn.Module): ...

    model = build_model(checkpoint["model_params"])
    model.load_state_dict(checkpoint["model"])

Every registered model takes ``(features (N, T, C), feature_lens (N,))`` and returns log-probs
(N, T', tokens) and has ``params`` (JSON-able, rebuilds it), ``subsampling_factor``,
``output_lengths(T)``, ``output_prefix`` (its output layer's parameter names),
``select_domain(domain)`` and ``constrain_orthonormal()``.
"""
from typing import Any, Callable, Mapping

from torch import nn

from speechtune.registry import Registry

MODELS: Registry[Callable[[Mapping[str, Any]], nn.Module]] = Registry("model type")


def build_model(params: Mapping[str, Any]) -> nn.Module:
    """The model for ``params`` (the config's ``model`` section plus ``feature_dim`` and
    ``num_tokens``, or a checkpoint's ``model_params``)."""
    return MODELS.get(params["type"])(params)


def num_parameters(model: nn.Module) -> int:
    """How many numbers the model learns (for logs and the size bound in tests)."""
    return sum(p.numel() for p in model.parameters())


def trainable_parameters(model: nn.Module) -> int:
    """How many numbers training changes: the parameters not frozen (requires_grad)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
