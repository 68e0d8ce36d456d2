"""What a training run starts from and optimizes, as the loop of :mod:`speechtune.training.loop`
asks it. The base ``Recipe`` is training from random initialization on the task loss (the
``pretrain`` and ``scratch`` stages); fine-tuning (:class:`speechtune.finetuning.FineTuning`)
overrides its hooks: loading the pretrained weights, freezing, learning-rate groups, the
regularized objective. The loop calls, in this order::

    recipe.fingerprint()                     # part of the resume key (e.g. the pretrained file's hash)
    recipe.prepare(model, loss_params, max_duration, seed)    # once, before the optimizer
    optimizer = Adam(recipe.param_groups(model, lr))
    recipe.train_mode(model)                 # at the start of every epoch, instead of model.train()
    objective, terms = recipe.objective(model, batch, log_probs, loss, info)   # every step
    recipe.describe()                        # facts for provenance.json (e.g. regularizer, alpha)
"""
from typing import Any, Dict, List, Mapping, Tuple

import torch
from torch import nn


class Recipe:
    """Every parameter trains from its random initialization; the objective is the task loss
    per frame."""

    def fingerprint(self) -> Any:
        """What identifies the start, JSON-able (None: random initialization, fixed by the seed)."""
        return None

    def prepare(self, model: nn.Module, loss_params: Mapping[str, Any], max_duration: float, seed: int) -> None:
        """Set the model up before the first step (a resumed run then loads its checkpoint)."""

    def param_groups(self, model: nn.Module, lr: float) -> List[Dict[str, Any]]:
        """Adam's parameter groups; each group's ``lr_factor`` scales the scheduled rate."""
        return [{"params": list(model.parameters()), "lr": lr, "lr_factor": 1.0}]

    def train_mode(self, model: nn.Module) -> None:
        model.train()

    def objective(self, model: nn.Module, batch: Mapping[str, Any], log_probs: torch.Tensor,
                  loss: torch.Tensor, info: Mapping[str, float]) -> Tuple[torch.Tensor, Dict[str, float]]:
        """What to minimize for a batch whose summed task loss is ``loss``, and its named terms
        (for the logs)."""
        return loss / info["frames"], {}

    def describe(self) -> Dict[str, Any]:
        return {}
