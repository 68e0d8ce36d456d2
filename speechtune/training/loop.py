"""The training loop the ``pretrain``, ``finetune`` and ``scratch`` stages share.

Read it top to bottom like an icefall ``train.py``: :func:`train` runs :func:`set_up` (data:
lhotse's samplers over precomputed features, :mod:`speechtune.training.batches`; model:
:mod:`speechtune.models`; loss: k2 CTC or LF-MMI, :mod:`speechtune.training.losses`; Adam),
:func:`resume`, then :func:`train_one_epoch` and a validation loss per epoch, then
:func:`finish`. Adam with linear warm-up then per-epoch decay, gradient clipping, Kaldi's
periodic semi-orthogonal constraint, TensorBoard scalars and tqdm bars. What starts the model
and what it optimizes is the ``recipe`` (:mod:`speechtune.training.recipe`; fine-tuning
methods are recipes). Its system directory, e.g. ``exp/finetuned/``, holds::

    epoch-<n>.pt          icefall-format checkpoints (:mod:`speechtune.training.checkpoint`):
                          {"model", "optimizer", "sampler", "epoch", "step", "config_hash",
                           "model_params", "tokens", ...}
    checkpoint-<step>.pt  the same, mid-epoch, every ``save_every_steps`` (last two kept)
    model.pt              the average of ``average_last`` epochs: what decode reads
    P.pt                  LF-MMI's token bigram (mmi only)
    tensorboard/          train/valid loss, learning rate
    log/log-train.txt     this log, appended on resume
    provenance.json       resolved config, versions, seed, train_seconds

A rerun resumes from the newest checkpoint written with the same resume key (``config_hash``:
the config, the seed, and fingerprints of the training and validation cuts with their feature
files, the lang dir, the start (the pretrained checkpoint's hash and a method's extra inputs) and
the library's code), mid-epoch included (the sampler's state is saved), and says so in the log;
a checkpoint written for anything else is removed, never resumed. ``provenance.json`` records
the fingerprints.

Keys of ``train_params`` besides the schema's training keys (absent means off): the
augmentations of :mod:`speechtune.training.batches`, ``early_stopping_patience`` (stop after
that many epochs without a better validation loss; 0: never), ``model_selection`` (``last``:
average the last ``average_last`` epochs trained; ``best_valid``: the ``average_last`` epochs
ending at the best validation loss) and ``mixed_precision`` (the model's forward in float16 on
CUDA, with a gradient scaler, or bfloat16 on the CPU; k2's losses take float32 only, so the
log-probs are cast back before the loss). ``model.pt`` and ``provenance.json`` are written last
and atomically: their presence means training finished.

Run under torchrun (``--processes N`` of the training stages), every process runs this loop on
its share of each batch and rank 0 alone writes (:mod:`speechtune.training.distributed`).
"""
import hashlib
import json
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
from lhotse import CutSet
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from speechtune.data.cuts import cuts_fingerprint
from speechtune.errors import StageError
from speechtune.lang.graphs import build_graph_compiler, output_tokens, save_fsa
from speechtune.models import build_model, num_parameters, trainable_parameters
from speechtune.models.layers import ORTHONORMAL_CONSTRAINT_INTERVAL
from speechtune.provenance import StageRun, code_fingerprint, directory_fingerprint
from speechtune.training.batches import batch_log_probs, is_filler, make_loader
from speechtune.training.checkpoint import (average_checkpoints, find_checkpoints, load_checkpoint,
                                            remove_old_checkpoints, save_checkpoint)
from speechtune.training.distributed import (World, all_reduce_sum, barrier, from_main, join_process_group,
                                             leave_process_group, process_device, wrap)
from speechtune.training.losses import build_loss
from speechtune.training.recipe import Recipe

log = logging.getLogger("speechtune.training")

MODEL_SELECTIONS = ("last", "best_valid")
# Batches in a row with no utterance that can align to its frames before training stops: the
# data (transcripts far longer than their audio, a wrong lang dir) cannot be trained on.
MAX_UNUSABLE_BATCHES_IN_A_ROW = 10


def model_params_for(model_section: Mapping[str, Any], lang_dir: Path, cuts: CutSet) -> Dict[str, Any]:
    """The config's ``model`` section completed with what the data decides: the feature
    dimension and the number of model outputs (tokens.txt without disambiguation symbols)."""
    num_tokens = len(output_tokens(lang_dir))
    return {**model_section, "feature_dim": next(iter(cuts)).num_features, "num_tokens": num_tokens}


def config_hash(config: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def averaged_epochs(valid_losses: Sequence[float], average_last: int, selection: str) -> List[int]:
    """The epochs (1-based) whose average becomes model.pt: the last ``average_last`` of those
    trained, ending at the last one (``last``) or at the best validation loss (``best_valid``)."""
    if selection not in MODEL_SELECTIONS:
        raise StageError(f"model_selection {selection!r}: expected one of {MODEL_SELECTIONS}")
    end = len(valid_losses)
    if selection == "best_valid":
        end = min(range(len(valid_losses)), key=lambda i: valid_losses[i]) + 1
    return list(range(max(1, end - average_last + 1), end + 1))


def learning_rate(params: Mapping[str, Any], step: int, epoch: int) -> float:
    """Linear warm-up over ``warmup_steps``, then ``lr_decay`` per finished epoch."""
    warmup = min(1.0, (step + 1) / max(1, params["warmup_steps"]))
    return params["lr"] * warmup * params["lr_decay"] ** (epoch - 1)


def validation_loss(model: nn.Module, loss_fn: nn.Module, loader: DataLoader, device: torch.device) -> float:
    """Per-frame loss over the validation cuts (the model is left in eval mode)."""
    model.eval()
    total, frames = 0.0, 0
    with torch.no_grad():
        for batch in loader:
            _, info = loss_fn(batch_log_probs(model, batch, device), batch["supervisions"])
            total += info["loss"]
            frames += info["frames"]
    return total / max(frames, 1)


@dataclass
class Progress:
    """Where training stands: what a checkpoint records beside the weights, and resumes."""

    step: int = 0
    first_epoch: int = 1
    train_seconds: float = 0.0
    valid_losses: List[float] = field(default_factory=list)
    skipped_utterances: int = 0   # with an infinite loss: left out of their batch's sum
    skipped_batches: int = 0      # with no usable utterance at all: no step
    frames: int = 0               # input frames trained on (bench/training.py: frames per second)
    data_wait_seconds: float = 0.0  # of train_seconds, waiting for the next batch


@dataclass
class Training:
    """Everything :func:`set_up` builds for one run of the loop."""

    run: StageRun
    exp_dir: Path
    train_params: Mapping[str, Any]
    loss_params: Mapping[str, Any]
    recipe: Recipe
    resume_key: str
    fingerprints: Dict[str, Any]
    tokens: Dict[str, int]
    model: nn.Module
    forward_model: nn.Module      # the model, or its DistributedDataParallel wrapper: the training forward
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    grad_scaler: torch.cuda.amp.GradScaler   # float16 mixed precision only; else it passes through
    train_loader: DataLoader
    valid_loader: DataLoader
    device: torch.device
    world: World
    file_log: Optional[logging.Handler]     # rank 0's log-train.txt

    def state(self, progress: Progress, epoch: int, sampler_state: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        """The checkpoint of this moment (icefall's keys plus the loop's own)."""
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "sampler": sampler_state,
            "epoch": epoch, "step": progress.step, "config_hash": self.resume_key,
            "model_params": dict(self.model.params), "loss_params": dict(self.loss_params), "tokens": self.tokens,
            "train_seconds": progress.train_seconds, "valid_losses": progress.valid_losses, "seed": self.run.seed,
            "skipped_utterances": progress.skipped_utterances, "skipped_batches": progress.skipped_batches,
            "frames": progress.frames, "data_wait_seconds": progress.data_wait_seconds,
            "grad_scaler": self.grad_scaler.state_dict(), "processes": self.world.size,
        }

    def autocast(self) -> torch.autocast:
        """The context of the model's forward: reduced precision where ``mixed_precision`` asks."""
        dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
        return torch.autocast(self.device.type, dtype=dtype,
                              enabled=bool(self.train_params.get("mixed_precision", False)))


def set_up(run: StageRun, exp_dir: Path, lang_dir: Path, train_cuts: CutSet, valid_cuts: CutSet,
           model_params: Mapping[str, Any], loss_params: Mapping[str, Any], train_params: Mapping[str, Any],
           recipe: Recipe, noise_cuts: Optional[CutSet] = None, device: torch.device = torch.device("cpu"),
           world: World = World()) -> Training:
    """Logs, seeds, graphs, model (started by the recipe), loss, optimizer and loaders, on
    ``device``; this process's share of the batches where ``world`` has several."""
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "log").mkdir(exist_ok=True)
    file_log = None
    library_log = logging.getLogger("speechtune")
    if world.is_main:
        file_log = logging.FileHandler(exp_dir / "log" / "log-train.txt")
        file_log.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
        library_log.addHandler(file_log)
        if library_log.getEffectiveLevel() > logging.INFO:  # log-train.txt holds the INFO lines, whoever calls
            library_log.setLevel(logging.INFO)
    # lhotse's SpecAugment draws from all three generators. Every process starts alike (DDP also
    # sends rank 0's weights to all); their augmentations and dropout draw apart from then on.
    torch.manual_seed(run.seed)
    random.seed(run.seed)
    np.random.seed(run.seed)

    # The resume key: everything the result depends on. A checkpoint written with other data,
    # another lang dir, start, config or library code is never resumed.
    fingerprints = {
        "train_cuts": cuts_fingerprint(train_cuts), "valid_cuts": cuts_fingerprint(valid_cuts),
        "noise_cuts": cuts_fingerprint(noise_cuts) if noise_cuts is not None else None,
        "lang_dir": directory_fingerprint(lang_dir), "start": recipe.fingerprint(), "code": code_fingerprint(),
    }
    run_config = {"model": model_params, "loss": loss_params, "train": train_params, "seed": run.seed,
                  "inputs": fingerprints}
    compiler = build_graph_compiler(lang_dir, loss_params, device)
    model = build_model(model_params).to(device)
    recipe.prepare(model, loss_params, train_params["max_duration"], run.seed)
    texts = [s.text for cut in train_cuts for s in cut.supervisions]
    loss_fn = build_loss(loss_params, compiler, model.subsampling_factor, train_texts=texts)
    if loss_params["type"] == "mmi" and world.is_main:
        save_fsa(loss_fn.bigram, exp_dir / "P.pt")
    if world.size > 1:
        for seed in (torch.manual_seed, random.seed, np.random.seed):
            seed(run.seed + world.rank)
    optimizer = torch.optim.Adam(recipe.param_groups(model, train_params["lr"]), lr=train_params["lr"],
                                 weight_decay=train_params["weight_decay"])
    grad_scaler = torch.cuda.amp.GradScaler(enabled=device.type == "cuda" and train_params.get("mixed_precision", False))
    # Each process trains on its share of the batches one process would. Rank 0 alone computes
    # the validation loss, on all cuts.
    train_loader = make_loader(train_cuts, train_params["max_duration"], shuffle=True, seed=run.seed,
                               spec_augment=train_params.get("spec_augment", False),
                               noise_mix=train_params.get("noise_mix"), noise_cuts=noise_cuts, world=world)
    valid_loader = make_loader(valid_cuts, train_params["max_duration"], shuffle=False, seed=run.seed)
    return Training(run, exp_dir, train_params, loss_params, recipe, config_hash(run_config), fingerprints,
                    output_tokens(lang_dir), model, wrap(model, world), loss_fn, optimizer, grad_scaler,
                    train_loader, valid_loader, device, world, file_log)


def resume(t: Training) -> Progress:
    """The newest checkpoint written with this run's resume key, loaded into the model,
    optimizer and sampler; a fresh start (and no stale checkpoints) where there is none."""
    checkpoints = find_checkpoints(t.exp_dir)
    resumable = [c.path for c in checkpoints if c.resume_key == t.resume_key]
    barrier(t.world)  # every process has read the checkpoints before rank 0 removes any
    if not resumable:
        if checkpoints and t.world.is_main:
            log.info("removing %d checkpoints written with another config", len(checkpoints))
            for checkpoint in checkpoints:
                checkpoint.path.unlink()
        log.info("model: %s, %d parameters (%d trainable); loss: %s; %s", t.model.params["type"],
                 num_parameters(t.model), trainable_parameters(t.model), t.loss_params["type"], t.world)
        return Progress()
    path = resumable[-1]
    checkpoint = load_checkpoint(path)
    t.model.load_state_dict(checkpoint["model"])
    t.optimizer.load_state_dict(checkpoint["optimizer"])
    if checkpoint["grad_scaler"]:  # (empty where it was off)
        t.grad_scaler.load_state_dict(checkpoint["grad_scaler"])
    progress = Progress(checkpoint["step"], checkpoint["epoch"], checkpoint["train_seconds"],
                        checkpoint["valid_losses"], checkpoint["skipped_utterances"], checkpoint["skipped_batches"],
                        checkpoint["frames"], checkpoint["data_wait_seconds"])
    if checkpoint["sampler"] is not None:
        t.train_loader.sampler.load_state_dict(checkpoint["sampler"])
    else:
        progress.first_epoch += 1  # an end-of-epoch checkpoint: the next epoch starts fresh
    log.info("resuming from %s (epoch %d, step %d)", path, checkpoint["epoch"], progress.step)
    return progress


def train_one_epoch(t: Training, progress: Progress, epoch: int, writer: Optional[SummaryWriter]) -> None:
    """One pass over the training batches (the rest of it, when resumed mid-epoch), with
    mid-epoch checkpoints every ``save_every_steps``. ``writer``: rank 0's TensorBoard."""
    params, model, optimizer, world = t.train_params, t.model, t.optimizer, t.world
    t.recipe.train_mode(model)
    t.train_loader.sampler.set_epoch(epoch)
    epoch_loss, epoch_frames, steps_before, batches, unusable_in_a_row = 0.0, 0, progress.step, 0, 0
    started = time.time()
    bar = tqdm(t.train_loader, desc=f"{t.run.stage} epoch {epoch}", unit="batch", mininterval=5,
               disable=not world.is_main)
    waited, epoch_started = 0.0, time.perf_counter()
    step_done = epoch_started
    for batch in bar:
        waited += time.perf_counter() - step_done  # the loader's time: since the last step ended
        batches += 1
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(params, progress.step, epoch) * group.get("lr_factor", 1.0)
        with t.autocast():
            log_probs = batch_log_probs(t.forward_model, batch, t.device)
        log_probs = log_probs.float()
        loss, info = t.loss_fn(log_probs, batch["supervisions"])
        input_frames = batch["inputs"].shape[0] * batch["inputs"].shape[1]
        if is_filler(batch):  # a batch of fewer cuts than processes: this one only joins in
            info, input_frames = {**info, "loss": 0.0, "frames": 0, "skipped": 0, "utterances": 0}, 0
        # The whole global batch's counts: every process takes the same decisions from them.
        frames, loss_sum, skipped, utterances, input_frames = all_reduce_sum(world, [
            info["frames"], info["loss"], info["skipped"], info["utterances"], input_frames])
        if skipped:
            progress.skipped_utterances += int(skipped)
            if world.is_main:
                log.warning("epoch %d, batch %d: %d of %d utterances left out: their transcript cannot align to "
                            "their frames (infinite loss: longer than the audio allows, or for LF-MMI a token "
                            "pair P has not seen)", epoch, batches, skipped, skipped + utterances)
        if frames == 0:
            progress.skipped_batches += 1
            unusable_in_a_row += 1
            if unusable_in_a_row >= MAX_UNUSABLE_BATCHES_IN_A_ROW:
                raise StageError(f"{t.exp_dir}: {unusable_in_a_row} batches in a row without one utterance that "
                                 "aligns to its frames: check the transcripts against the audio and the lang dir")
            step_done = time.perf_counter()
            continue
        unusable_in_a_row = 0
        if info["frames"]:
            # Per frame of the global batch; DDP averages the processes' gradients, so each
            # divides by the frames of the whole batch over the number of processes.
            objective, terms = t.recipe.objective(model, batch, log_probs, loss, {**info, "frames": frames / world.size})
        else:  # this process's share cannot align (or is a filler): it still joins DDP's reduction
            objective, terms = log_probs.sum() * 0.0, {}
        optimizer.zero_grad()
        t.grad_scaler.scale(objective).backward()
        t.grad_scaler.unscale_(optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), params["grad_clip"])
        t.grad_scaler.step(optimizer)
        t.grad_scaler.update()
        progress.step += 1
        if progress.step % ORTHONORMAL_CONSTRAINT_INTERVAL == 0:
            model.constrain_orthonormal()
        epoch_loss += loss_sum
        epoch_frames += frames
        progress.frames += int(input_frames)
        per_frame = loss_sum / frames
        bar.set_postfix(loss=f"{per_frame:.3f}", refresh=False)
        if writer is not None:
            writer.add_scalar("train/loss", per_frame, progress.step)
            writer.add_scalar("train/objective", float(objective), progress.step)
            for name, value in terms.items():
                writer.add_scalar(f"train/{name}", value, progress.step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], progress.step)
        if params["save_every_steps"] and progress.step % params["save_every_steps"] == 0:
            progress.train_seconds += time.time() - started
            started = time.time()
            if world.is_main:
                save_checkpoint(t.exp_dir / f"checkpoint-{progress.step}.pt",
                                t.state(progress, epoch, t.train_loader.sampler.state_dict()))
                remove_old_checkpoints(t.exp_dir)
        step_done = time.perf_counter()
    epoch_seconds = time.perf_counter() - epoch_started
    progress.train_seconds += time.time() - started
    progress.data_wait_seconds += waited
    if batches and progress.step == steps_before:  # (a run resumed at an epoch's end sees no batch)
        raise StageError(f"{t.exp_dir}: epoch {epoch} had no batch with an utterance that aligns to its frames: "
                         "check the transcripts against the audio and the lang dir")
    valid_loss = validation_loss(model, t.loss_fn, t.valid_loader, t.device) if world.is_main else 0.0
    progress.valid_losses.append(from_main(world, valid_loss))
    if writer is not None:
        writer.add_scalar("valid/loss", progress.valid_losses[-1], progress.step)
    log.info("epoch %d: train loss %.4f, valid loss %.4f per frame, %d steps, %.0f s so far (%.1f%% of this "
             "epoch waiting for data)", epoch, epoch_loss / max(epoch_frames, 1), progress.valid_losses[-1],
             progress.step, progress.train_seconds, 100 * waited / max(epoch_seconds, 1e-9))
    if world.is_main:
        save_checkpoint(t.exp_dir / f"epoch-{epoch}.pt", t.state(progress, epoch, None))


def should_stop_early(valid_losses: Sequence[float], patience: int) -> bool:
    """Whether the last ``patience`` epochs brought no better validation loss (0: never stop)."""
    return bool(patience and valid_losses
                and len(valid_losses) - 1 - valid_losses.index(min(valid_losses)) >= patience)


def finish(t: Training, progress: Progress) -> Dict[str, Any]:
    """``model.pt`` (the chosen epochs averaged) and ``provenance.json``; the run's summary."""
    params = t.train_params
    chosen = averaged_epochs(progress.valid_losses, params["average_last"], params.get("model_selection", "last"))
    t.model.load_state_dict(average_checkpoints([t.exp_dir / f"epoch-{e}.pt" for e in chosen]))
    summary = {
        "train_seconds": round(progress.train_seconds, 1), "steps": progress.step,
        "epochs_trained": len(progress.valid_losses), "averaged_epochs": chosen,
        "skipped_utterances": progress.skipped_utterances, "skipped_batches": progress.skipped_batches,
        "frames": progress.frames, "data_wait_seconds": round(progress.data_wait_seconds, 1),
        "parameters": num_parameters(t.model), "trainable_parameters": trainable_parameters(t.model),
        "processes": t.world.size,
        **t.recipe.describe(),
        "valid_loss": validation_loss(t.model, t.loss_fn, t.valid_loader, t.device),
        "input_fingerprints": t.fingerprints,
    }
    save_checkpoint(t.exp_dir / "model.pt", {**t.state(progress, len(progress.valid_losses), None),
                                             "averaged_epochs": chosen})
    t.run.write_provenance(t.exp_dir / "provenance.json", **summary)
    log.info("wrote %s: %s", t.exp_dir / "model.pt", summary)
    return summary


def train(
    run: StageRun,
    exp_dir: Path,
    lang_dir: Path,
    train_cuts: CutSet,
    valid_cuts: CutSet,
    model_params: Mapping[str, Any],
    loss_params: Mapping[str, Any],
    train_params: Mapping[str, Any],
    recipe: Optional[Recipe] = None,
    noise_cuts: Optional[CutSet] = None,
    device: torch.device = torch.device("cpu"),
) -> Dict[str, Any]:
    """Train a model into ``exp_dir`` (layout in the module docstring) on ``device``; return a
    summary (empty in processes other than rank 0 under torchrun).

    ``recipe`` (default: random initialization, the task loss) starts and optimizes the model;
    fine-tuning passes :class:`speechtune.finetuning.FineTuning`, whose start a resumed run
    replaces with its checkpoint. ``noise_cuts`` (the noise stage's) are what
    ``train_params["noise_mix"]`` mixes in.
    """
    world = join_process_group(device)
    try:
        summary = train_in_process(run, exp_dir, lang_dir, train_cuts, valid_cuts, model_params, loss_params,
                                   train_params, recipe or Recipe(), noise_cuts, process_device(device, world),
                                   world)
        # Every process leaves together, its DDP wrapper gone with train_in_process: a gloo
        # group torn down while another process still holds it can hang.
        barrier(world)
        return summary
    finally:
        leave_process_group(world)


def train_in_process(run: StageRun, exp_dir: Path, lang_dir: Path, train_cuts: CutSet, valid_cuts: CutSet,
                     model_params: Mapping[str, Any], loss_params: Mapping[str, Any],
                     train_params: Mapping[str, Any], recipe: Recipe, noise_cuts: Optional[CutSet],
                     device: torch.device, world: World) -> Dict[str, Any]:
    """:func:`train` in this process of ``world``: set up, resume, the epochs, finish."""
    t = set_up(run, exp_dir, lang_dir, train_cuts, valid_cuts, model_params, loss_params, train_params,
               recipe, noise_cuts, device, world)
    try:
        progress = resume(t)
        writer = SummaryWriter(str(exp_dir / "tensorboard"), purge_step=progress.step) if world.is_main else None
        for epoch in range(progress.first_epoch, train_params["epochs"] + 1):
            if should_stop_early(progress.valid_losses, train_params.get("early_stopping_patience", 0)):
                log.info("early stop: no better validation loss in the last %d epochs",
                         train_params["early_stopping_patience"])
                break
            train_one_epoch(t, progress, epoch, writer)
        if writer is not None:
            writer.close()
        return finish(t, progress) if world.is_main else {}
    finally:
        if t.file_log is not None:
            logging.getLogger("speechtune").removeHandler(t.file_log)
