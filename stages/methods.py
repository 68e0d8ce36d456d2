"""Fine-tuning methods: what the ``finetune`` and ``adapt`` stages add to the training loop of
:mod:`stages.training` — the regularized objective, partial fine-tuning and adapters.

The objective of a fine-tuning step on a target batch is::

    L = alpha * L_pre + (1 - alpha) * L_task

``L_task`` is the loss (CTC or LF-MMI) per frame of the target batch; ``L_pre`` keeps the model
near what it knew, one of (``finetune.regularizer.type``):

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

Partial fine-tuning (``finetune`` keys; patterns are fnmatch patterns of parameter names such
as ``encoder.layers.[0-3].*``, see :mod:`stages.models` for the names):

    init_modules   parameters taken from the pretrained checkpoint (icefall's --init-modules);
                   the rest keep their random initialization
    freeze         parameters that do not train; BatchNorm modules under a frozen pattern keep
                   their pretrained statistics (they stay in eval mode)
    lr_factors     {pattern: factor}: a parameter's learning rate is lr x the factor of the
                   first pattern it matches, else lr (Kaldi's primary_lr_factor)

When the target lang dir's tokens differ from the pretrained model's (another BPE model or
lexicon), the output layer (``model.output_prefix``) is re-initialized and the rows of the
tokens both share copied. An imported Kaldi chain model (:mod:`stages.import_kaldi`) names its
outputs ``pdf0``, ``pdf1``, ...: none is shared, so its output layer starts afresh over the
lang dir's tokens (cross-lingual fine-tuning; kld and rehearsal are refused, l2sp covers the
rest of the network).

Adapters (``adapter.type: residual | lhuc``, see :mod:`stages.models`) are inserted into the
pretrained model and, in the ``adapt`` stage, are all that trains.

Usage (what :func:`stages.training.train` does with it)::

    method = FineTuning(pretrained_path, config["finetune"], target_lang_dir, feature_dim=80,
                        source=SourceDomain(source_cuts, source_lang_dir))
    model = build_model(method.model_params)
    method.initialize(model)                    # load, transfer, freeze
    method.attach_source(config["loss"], max_duration=30, seed=seed)   # rehearsal's batches
    optimizer = Adam(method.param_groups(model, lr))
    method.train_mode(model)                    # instead of model.train()
    loss, info = loss_fn(log_probs, batch["supervisions"])
    objective, terms = method.objective(model, batch, log_probs, loss, info)
    objective.backward()                        # per frame
"""
import fnmatch
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from lhotse import CutSet
from torch import nn

from stages.cli import StageError
from stages.graphs import build_graph_compiler, output_tokens
from stages.losses import build_loss, encode_supervisions
from stages.models import build_model, trainable_parameters
from stages.training import batch_log_probs, make_loader

log = logging.getLogger("speechtune.methods")

REGULARIZERS = ("none", "kld", "l2sp", "rehearsal")


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether a parameter or module name matches any of the fnmatch ``patterns``."""
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


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
    total = torch.zeros(())
    for name, param in model.named_parameters():
        if param.requires_grad and name in reference:
            total = total + (param - reference[name]).pow(2).sum()
    return total


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class SourceDomain:
    """The pretraining data rehearsal draws from."""

    cuts: CutSet
    lang_dir: Path


class FineTuning:
    """A pretrained start and a fine-tuning method (see the module docstring)."""

    def __init__(
        self,
        pretrained_path: Path,
        params: Mapping[str, Any],
        lang_dir: Path,
        feature_dim: int,
        source: Optional[SourceDomain] = None,
    ):
        if not Path(pretrained_path).is_file():
            raise StageError(f"{pretrained_path} is missing: run the pretrain stage first")
        checkpoint = torch.load(pretrained_path, map_location="cpu")
        self.pretrained_path = Path(pretrained_path)
        self.pretrained_state: Dict[str, torch.Tensor] = checkpoint["model"]
        self.pretrained_params: Dict[str, Any] = dict(checkpoint["model_params"])
        self.params = params
        self.regularizer = params["regularizer"]["type"]
        self.alpha = float(params["regularizer"]["alpha"]) if self.regularizer != "none" else 0.0
        if self.regularizer not in REGULARIZERS:
            raise StageError(f"finetune.regularizer.type {self.regularizer!r}: expected one of {REGULARIZERS}")
        if feature_dim != self.pretrained_params["feature_dim"]:
            raise StageError(
                f"{pretrained_path} was trained on {self.pretrained_params['feature_dim']}-dim features, "
                f"the target cuts have {feature_dim}: extract them with the pretrained model's features config"
            )

        self.tokens = output_tokens(lang_dir)
        self.pretrained_tokens: Dict[str, int] = checkpoint.get("tokens") or {}
        if not self.pretrained_tokens:
            if self.pretrained_params["num_tokens"] != len(self.tokens):
                raise StageError(
                    f"{pretrained_path} has {self.pretrained_params['num_tokens']} outputs and does not name "
                    f"its tokens; {lang_dir} has {len(self.tokens)}: fine-tune with its own lang dir"
                )
            self.pretrained_tokens = self.tokens  # a checkpoint from before tokens were saved
        self.same_tokens = self.pretrained_tokens == self.tokens
        if not self.same_tokens:
            shared = len(set(self.tokens) & set(self.pretrained_tokens))
            log.info("%s has other tokens than %s: the output layer is re-initialized, %d of %d rows copied",
                     pretrained_path, lang_dir, shared, len(self.tokens))
        if self.regularizer in ("kld", "rehearsal") and not self.same_tokens:
            raise StageError(
                f"finetune.regularizer {self.regularizer} compares outputs with the pretrained model's, "
                f"but {lang_dir} has other tokens than {pretrained_path}: use l2sp, or the pretrained lang dir"
            )
        self.model_params = {**self.pretrained_params, "num_tokens": len(self.tokens),
                             "adapter": dict(params["adapter"])}
        self.source = source
        if self.regularizer == "rehearsal" and source is None:
            raise StageError("finetune.regularizer rehearsal needs the source domain's cuts and lang dir "
                             "(--source-cuts, --source-lang)")
        if source is not None and output_tokens(source.lang_dir) != self.pretrained_tokens:
            raise StageError(f"{source.lang_dir}: its tokens are not the ones {pretrained_path} was trained with")
        self.reference_model: Optional[nn.Module] = None
        self.frozen_modules: List[nn.Module] = []
        self.l2sp_reference: Dict[str, torch.Tensor] = {}
        self._source_batches: Optional[Iterator[Dict[str, Any]]] = None
        self._source_loss: Optional[nn.Module] = None
        self.source_cut_ids: List[str] = []  # every rehearsal cut drawn, in order

    def fingerprint(self) -> str:
        """Identifies the pretrained start, so a checkpoint fine-tuned from another is never resumed."""
        return file_sha256(self.pretrained_path)

    def initialize(self, model: nn.Module) -> None:
        """Load the ``init_modules`` from the pretrained model (the output layer's shared rows
        where the tokens differ), freeze what ``freeze`` and the adapter ask for."""
        state = model.state_dict()
        loaded, skipped = 0, []
        for name, value in self.pretrained_state.items():
            if not matches(name, self.params["init_modules"]):
                continue
            if name.startswith(model.output_prefix) and not self.same_tokens:
                self._copy_shared_rows(state[name], value)
                loaded += 1
            elif name in state and state[name].shape == value.shape:
                state[name] = value.clone()
                loaded += 1
            else:
                skipped.append(name)
        if skipped:
            raise StageError(f"{self.pretrained_path}: {skipped[:3]}... do not fit the model to fine-tune")
        model.load_state_dict(state)
        log.info("initialized %d tensors from %s (init_modules %s)", loaded, self.pretrained_path,
                 self.params["init_modules"])

        freeze = list(self.params["freeze"])
        if self.params["adapter"]["type"] != "none":
            # Adapting trains the adapters alone: the rest is the pretrained model, kept.
            freeze = ["*"]
        trainable = ["encoder.adapters.*"] if self.params["adapter"]["type"] != "none" else []
        for name, param in model.named_parameters():
            param.requires_grad = not (matches(name, freeze) and not matches(name, trainable))
        # What L2-SP pulls towards: the pretrained tensors the model has in the same shape.
        self.l2sp_reference = {name: value for name, value in self.pretrained_state.items()
                               if name in state and state[name].shape == value.shape}
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

        if self.regularizer == "kld":
            self.reference_model = build_model(self.pretrained_params)
            self.reference_model.load_state_dict(self.pretrained_state)
            self.reference_model.eval()
            for param in self.reference_model.parameters():
                param.requires_grad = False

    def _copy_shared_rows(self, new: torch.Tensor, old: torch.Tensor) -> None:
        for symbol, new_id in self.tokens.items():
            if symbol in self.pretrained_tokens:
                new[new_id] = old[self.pretrained_tokens[symbol]]

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

    def attach_source(self, loss_params: Mapping[str, Any], max_duration: float, seed: int) -> None:
        """Rehearsal: the source batches (an endless, seeded shuffle) and the source loss."""
        if self.regularizer != "rehearsal":
            return
        assert self.source is not None
        compiler = build_graph_compiler(self.source.lang_dir, loss_params, torch.device("cpu"))
        texts = [s.text for cut in self.source.cuts for s in cut.supervisions]
        self._source_loss = build_loss(loss_params, compiler, self.pretrained_params["subsampling_factor"],
                                       train_texts=texts)
        loader = make_loader(self.source.cuts, max_duration, shuffle=True, seed=seed, return_cuts=True)

        def endless() -> Iterator[Dict[str, Any]]:
            epoch = 0
            while True:
                epoch += 1
                loader.sampler.set_epoch(epoch)
                yield from loader

        self._source_batches = endless()

    def objective(
        self, model: nn.Module, batch: Mapping[str, Any], log_probs: torch.Tensor,
        loss: torch.Tensor, info: Mapping[str, float],
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """The per-frame objective ``alpha * L_pre + (1 - alpha) * L_task`` of a target batch
        whose summed task loss is ``loss``; and its terms, for the logs."""
        task = loss / info["frames"]
        # A source batch at weight 0 would still move the batch-norm statistics: draw none.
        if self.regularizer == "none" or (self.regularizer == "rehearsal" and self.alpha == 0):
            return task, {}
        if self.regularizer == "kld":
            assert self.reference_model is not None
            with torch.no_grad():
                reference = batch_log_probs(self.reference_model, batch, log_probs.device)
            mask = output_frame_mask(batch["supervisions"], model.subsampling_factor, log_probs)
            pre = kl_divergence(reference, log_probs, mask) / mask.sum().clamp(min=1)
        elif self.regularizer == "l2sp":
            pre = l2sp_penalty(model, self.l2sp_reference)
        else:
            assert self._source_batches is not None and self._source_loss is not None
            source_batch = next(self._source_batches)
            self.source_cut_ids.extend(cut.id for cut in source_batch["supervisions"]["cut"])
            source_loss, source_info = self._source_loss(batch_log_probs(model, source_batch, log_probs.device),
                                                         source_batch["supervisions"])
            pre = source_loss / max(source_info["frames"], 1)
        return regularized_objective(self.alpha, pre, task), {self.regularizer: float(pre)}

