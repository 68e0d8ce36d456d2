"""``L_pre`` of the fine-tuning objective ``L = alpha * L_pre + (1 - alpha) * L_task``: what keeps
the model near what it knew. ``finetune.regularizer.type`` names one of the registry::

    kld        KL(p_pretrained || p_model) per frame of the target batch, summed over the
               output tokens: the frozen pretrained model's frame posteriors are the soft
               target (KL-divergence regularized adaptation, Yu et al., ICASSP 2013).
               Covers every output; needs the pretrained model's token inventory.
    l2sp       sum of (w - w_pretrained)^2 over every trainable parameter the pretrained model
               has with the same name and shape (L2-SP, Li et al., ICML 2018). A re-initialized
               output layer (a different token set) or an inserted adapter is not covered.
    rehearsal  the pretraining loss per frame of a source-domain batch drawn beside each
               target batch (from the source training cuts, graphs from the source lang dir).
               Needs the pretrained model's token inventory (the source lang dir's tokens).
    none       L = L_task (alpha is ignored); alpha = 0 with any type is the same objective.

A new regularizer is one class, in this file or any other module imported before the run
(a test file will do)::

    @REGULARIZERS.register("my_reg")
    class MyRegularizer(Regularizer):
        inputs = (ExtraInput("source_cuts", "cuts:source_train", "..."),)   # files it needs, if any
        compares_outputs = False        # True: needs the pretrained model's tokens

        def penalty(self, model, batch, log_probs):
            return ...                  # a scalar tensor: L_pre of this batch

The pipeline provides its declared ``inputs`` (the Snakefile and the finetune stage read them
from the class), and ``alpha_sweep: {my_reg: [...]}`` sweeps it.
"""
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, List, Mapping, Optional, Tuple, Type

import torch
from torch import nn

from speechtune.errors import StageError
from speechtune.finetuning.pretrained import PretrainedModel
from speechtune.lang.graphs import build_graph_compiler, output_tokens
from speechtune.registry import Registry
from speechtune.training.batches import batch_log_probs, make_loader
from speechtune.training.inputs import ExtraInput
from speechtune.training.losses import build_loss, encode_supervisions


class Regularizer:
    """Base class: ``L_pre`` of a batch. ``inputs`` are the extra files it needs (given to
    ``__init__`` loaded, by name); ``compares_outputs`` marks one that needs the pretrained
    model's token inventory (it is refused on a lang dir with other tokens)."""

    inputs: ClassVar[Tuple[ExtraInput, ...]] = ()
    compares_outputs: ClassVar[bool] = False

    def __init__(self, start: PretrainedModel, inputs: Mapping[str, Any]) -> None:
        self.start = start

    def prepare(self, model: nn.Module, loss_params: Mapping[str, Any], max_duration: float, seed: int) -> None:
        """Set up before the first step, after the model is initialized from the start."""

    def penalty(self, model: nn.Module, batch: Mapping[str, Any], log_probs: torch.Tensor) -> torch.Tensor:
        """``L_pre`` of the target ``batch`` (``log_probs`` is the model's output for it)."""
        raise NotImplementedError


REGULARIZERS: Registry[Type[Regularizer]] = Registry("finetune.regularizer.type")


def regularized_objective(alpha: float, pre: torch.Tensor, task: torch.Tensor) -> torch.Tensor:
    """``alpha * pre + (1 - alpha) * task``: the fine-tuning objective."""
    return alpha * pre + (1.0 - alpha) * task


def output_frame_mask(supervisions: Mapping[str, Any], subsampling_factor: int, log_probs: torch.Tensor) -> torch.Tensor:
    """(N, T') booleans: the output frames the batch's supervisions cover (padding excluded)."""
    segments, _ = encode_supervisions(supervisions, subsampling_factor, log_probs.size(1))
    mask = torch.zeros(log_probs.shape[:2], dtype=torch.bool)
    for row, start, duration in segments.tolist():
        mask[row, start:start + duration] = True
    return mask.to(log_probs.device)


def kl_divergence(reference_log_probs: torch.Tensor, log_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over the ``mask``ed frames of KL(reference || model) between frame posteriors given
    as log-probs (N, T, tokens): ``sum_k p_ref(k) (log p_ref(k) - log p(k))``."""
    per_frame = (reference_log_probs.exp() * (reference_log_probs - log_probs)).sum(dim=-1)
    return per_frame[mask].sum()


def l2sp_penalty(model: nn.Module, reference: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Sum of squared differences between the model's trainable parameters and ``reference``
    (name -> tensor; parameters not in it are not penalized)."""
    total = torch.zeros((), device=next(model.parameters()).device)
    for name, param in model.named_parameters():
        if param.requires_grad and name in reference:
            total = total + (param - reference[name]).pow(2).sum()
    return total


@REGULARIZERS.register("none")
class NoRegularizer(Regularizer):
    """Plain fine-tuning: the objective is the task loss (never asked for a penalty)."""


@REGULARIZERS.register("kld")
class KldRegularizer(Regularizer):
    compares_outputs = True

    def prepare(self, model: nn.Module, loss_params: Mapping[str, Any], max_duration: float, seed: int) -> None:
        self.reference_model = self.start.frozen_copy().to(next(model.parameters()).device)

    def penalty(self, model: nn.Module, batch: Mapping[str, Any], log_probs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            reference = batch_log_probs(self.reference_model, batch, log_probs.device)
        mask = output_frame_mask(batch["supervisions"], model.subsampling_factor, log_probs)
        return kl_divergence(reference, log_probs, mask) / mask.sum().clamp(min=1)


@REGULARIZERS.register("l2sp")
class L2spRegularizer(Regularizer):
    def prepare(self, model: nn.Module, loss_params: Mapping[str, Any], max_duration: float, seed: int) -> None:
        # What L2-SP pulls towards: the pretrained tensors the model has in the same shape.
        shapes = {name: value.shape for name, value in model.state_dict().items()}
        device = next(model.parameters()).device
        self.reference = {name: value.to(device) for name, value in self.start.state.items()
                          if name in shapes and shapes[name] == value.shape}

    def penalty(self, model: nn.Module, batch: Mapping[str, Any], log_probs: torch.Tensor) -> torch.Tensor:
        return l2sp_penalty(model, self.reference)


SOURCE_CUTS = ExtraInput("source_cuts", "cuts:source_train", "source-domain training cuts (rehearsal)")
SOURCE_LANG = ExtraInput("source_lang", "lang:source", "source-domain lang dir (rehearsal)")


@REGULARIZERS.register("rehearsal")
class RehearsalRegularizer(Regularizer):
    """The pretraining loss on source batches drawn in an endless, seeded shuffle; every cut
    drawn is listed in ``source_cut_ids``."""

    inputs = (SOURCE_CUTS, SOURCE_LANG)
    compares_outputs = True

    def __init__(self, start: PretrainedModel, inputs: Mapping[str, Any]) -> None:
        super().__init__(start, inputs)
        self.source_cuts = inputs[SOURCE_CUTS.name]
        self.source_lang: Path = inputs[SOURCE_LANG.name]
        if output_tokens(self.source_lang) != start.tokens:
            raise StageError(f"{self.source_lang}: its tokens are not the ones {start.path} was trained with")
        self.source_cut_ids: List[str] = []
        self._batches: Optional[Iterator[Dict[str, Any]]] = None

    def prepare(self, model: nn.Module, loss_params: Mapping[str, Any], max_duration: float, seed: int) -> None:
        compiler = build_graph_compiler(self.source_lang, loss_params, next(model.parameters()).device)
        texts = [s.text for cut in self.source_cuts for s in cut.supervisions]
        self._loss = build_loss(loss_params, compiler, self.start.params["subsampling_factor"], train_texts=texts)
        loader = make_loader(self.source_cuts, max_duration, shuffle=True, seed=seed, return_cuts=True)

        def endless() -> Iterator[Dict[str, Any]]:
            epoch = 0
            while True:
                epoch += 1
                loader.sampler.set_epoch(epoch)
                yield from loader

        self._batches = endless()

    def penalty(self, model: nn.Module, batch: Mapping[str, Any], log_probs: torch.Tensor) -> torch.Tensor:
        assert self._batches is not None, "prepare() first"
        source_batch = next(self._batches)
        self.source_cut_ids.extend(cut.id for cut in source_batch["supervisions"]["cut"])
        source_loss, source_info = self._loss(batch_log_probs(model, source_batch, log_probs.device),
                                              source_batch["supervisions"])
        return source_loss / max(source_info["frames"], 1)
