"""Fine-tuning: a :class:`~speechtune.training.recipe.Recipe` that starts from a pretrained model
and says how it is fine-tuned, from the ``finetune`` section (or an ``adapt`` variant):

    regularizer    {type, alpha}: the objective alpha * L_pre + (1 - alpha) * L_task, with
                   L_pre from the registry of :mod:`speechtune.finetuning.regularizers`
    init_modules   parameters taken from the pretrained checkpoint (icefall's --init-modules);
                   the rest keep their random initialization
    freeze         parameters that do not train; BatchNorm modules under a frozen pattern keep
                   their pretrained statistics (they stay in eval mode)
    lr_factors     {pattern: factor}: a parameter's learning rate is lr x the factor of the
                   first pattern it matches, else lr (Kaldi's primary_lr_factor)
    adapter        {type, dim, domain}: adapters (:mod:`speechtune.models.adapters`) inserted
                   after every hidden layer; with one, the adapters are all that trains

Patterns are fnmatch patterns of parameter names such as ``encoder.layers.[0-3].*`` (the names
are in :mod:`speechtune.models.tdnn`). ``L_task`` is the loss (CTC or LF-MMI) per frame of the
target batch. Usage (what :func:`speechtune.training.loop.train` does with it)::

    method = FineTuning(Path("exp/pretrained/model.pt"), config["finetune"], target_lang_dir,
                        feature_dim=80, inputs={"source_cuts": cuts, "source_lang": lang})
    train(run, exp_dir, target_lang_dir, train_cuts, valid_cuts, method.model_params,
          config["loss"], config["finetune"], recipe=method)
"""
import fnmatch
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from speechtune.errors import StageError
from speechtune.finetuning.pretrained import PretrainedModel
from speechtune.finetuning.regularizers import REGULARIZERS, regularized_objective
from speechtune.models import trainable_parameters
from speechtune.models.adapters import NO_ADAPTER
from speechtune.training.batches import augmentation_inputs
from speechtune.training.inputs import ExtraInput, input_fingerprint
from speechtune.training.recipe import Recipe

log = logging.getLogger("speechtune.finetuning")


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether a parameter or module name matches any of the fnmatch ``patterns``."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


def extra_inputs(train_params: Mapping[str, Any]) -> List[ExtraInput]:
    """The files fine-tuning with ``train_params`` needs beyond its cuts and lang dir: its
    regularizer's and its augmentations' declared inputs."""
    regularizer = REGULARIZERS.get(train_params["regularizer"]["type"])
    return [*regularizer.inputs, *augmentation_inputs(train_params)]


def all_extra_inputs() -> List[ExtraInput]:
    """Every input any registered regularizer or augmentation may need (the stage's options)."""
    found = {spec.name: spec for name in REGULARIZERS.names() for spec in REGULARIZERS.get(name).inputs}
    found.update((spec.name, spec) for spec in augmentation_inputs({"noise_mix": {"prob": 1}}))
    return list(found.values())


class FineTuning(Recipe):
    """A pretrained start and a fine-tuning method (see the module docstring). ``inputs``
    holds the method's extra inputs, loaded, by name (:func:`extra_inputs`)."""

    def __init__(self, pretrained_path: Path, params: Mapping[str, Any], lang_dir: Path, feature_dim: int,
                 inputs: Optional[Mapping[str, Any]] = None) -> None:
        inputs = inputs or {}
        self.start = PretrainedModel(pretrained_path, lang_dir, feature_dim)
        self.params = params
        self.regularizer_name = params["regularizer"]["type"]
        regularizer = REGULARIZERS.get(self.regularizer_name)
        self.alpha = float(params["regularizer"]["alpha"]) if self.regularizer_name != "none" else 0.0
        if regularizer.compares_outputs and not self.start.same_tokens:
            raise StageError(
                f"finetune.regularizer {self.regularizer_name} compares outputs with the pretrained model's, "
                f"but {lang_dir} has other tokens than {pretrained_path}: use l2sp, or the pretrained lang dir"
            )
        missing = [spec.option for spec in regularizer.inputs if spec.name not in inputs]
        if missing:
            raise StageError(f"finetune.regularizer {self.regularizer_name} needs {', '.join(missing)}")
        self.regularizer = regularizer(self.start, inputs)
        self.inputs = {spec.name: inputs[spec.name] for spec in regularizer.inputs}
        self.model_params = {**self.start.model_params, "adapter": dict(params["adapter"])}
        self.frozen_modules: List[nn.Module] = []

    def fingerprint(self) -> Dict[str, Any]:
        """The pretrained checkpoint's hash and the regularizer's inputs' fingerprints."""
        return {"pretrained": self.start.fingerprint(),
                "inputs": {name: input_fingerprint(value) for name, value in sorted(self.inputs.items())}}

    def prepare(self, model: nn.Module, loss_params: Mapping[str, Any], max_duration: float, seed: int) -> None:
        """Load the ``init_modules`` from the pretrained model (the output layer's shared rows
        where the tokens differ), freeze what ``freeze`` and the adapter ask for, then set the
        regularizer up."""
        self._load_pretrained(model)
        self._freeze(model)
        self.regularizer.prepare(model, loss_params, max_duration, seed)

    def _load_pretrained(self, model: nn.Module) -> None:
        state = model.state_dict()
        loaded, skipped = 0, []
        for name, value in self.start.state.items():
            if not matches(name, self.params["init_modules"]):
                continue
            if name.startswith(model.output_prefix) and not self.start.same_tokens:
                self.start.copy_shared_rows(state[name], value)
                loaded += 1
            elif name in state and state[name].shape == value.shape:
                state[name] = value.clone()
                loaded += 1
            else:
                skipped.append(name)
        if skipped:
            raise StageError(f"{self.start.path}: {skipped[:3]}... do not fit the model to fine-tune")
        model.load_state_dict(state)
        log.info("initialized %d tensors from %s (init_modules %s)", loaded, self.start.path,
                 self.params["init_modules"])

    def _freeze(self, model: nn.Module) -> None:
        freeze, trainable = list(self.params["freeze"]), []
        if self.params["adapter"]["type"] != NO_ADAPTER["type"]:
            # Adapting trains the adapters alone: the rest is the pretrained model, kept.
            freeze, trainable = ["*"], [model.adapter_prefix + "*"]
        for name, param in model.named_parameters():
            param.requires_grad = not (matches(name, freeze) and not matches(name, trainable))
        # A batch norm is frozen when its statistics' names (``<module>.running_mean``) match.
        self.frozen_modules = [
            module for name, module in model.named_modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm)
            and any(matches(f"{name}.{buffer}", freeze) for buffer, _ in module.named_buffers())
        ]
        if not any(p.requires_grad for p in model.parameters()):
            raise StageError(f"finetune.freeze {freeze} freezes every parameter: nothing would train")
        log.info("trainable parameters: %d of %d (frozen: %s)", trainable_parameters(model),
                 sum(p.numel() for p in model.parameters()), freeze or "none")

    def param_groups(self, model: nn.Module, lr: float) -> List[Dict[str, Any]]:
        """Adam's parameter groups: one per learning-rate factor, frozen parameters left out."""
        groups: Dict[float, List[nn.Parameter]] = {}
        for name, param in model.named_parameters():
            if param.requires_grad:
                factor = next((f for pattern, f in self.params["lr_factors"].items() if matches(name, [pattern])), 1.0)
                groups.setdefault(float(factor), []).append(param)
        return [{"params": params, "lr": lr * factor, "lr_factor": factor} for factor, params in groups.items()]

    def train_mode(self, model: nn.Module) -> None:
        """``model.train()``, except the frozen BatchNorms, which keep their statistics."""
        model.train()
        for module in self.frozen_modules:
            module.eval()

    def objective(self, model: nn.Module, batch: Mapping[str, Any], log_probs: torch.Tensor,
                  loss: torch.Tensor, info: Mapping[str, float]) -> Tuple[torch.Tensor, Dict[str, float]]:
        """The per-frame objective ``alpha * L_pre + (1 - alpha) * L_task``; and its terms.
        At alpha = 0 ``L_pre`` is not computed: a rehearsal batch would still move the
        batch-norm statistics, and the objective is the task loss exactly."""
        task = loss / info["frames"]
        if self.alpha == 0:
            return task, {}
        pre = self.regularizer.penalty(model, batch, log_probs)
        return regularized_objective(self.alpha, pre, task), {self.regularizer_name: float(pre)}

    def describe(self) -> Dict[str, Any]:
        return {"regularizer": self.regularizer_name, "alpha": self.alpha}
