"""The training loop the ``pretrain``, ``finetune`` and ``scratch`` stages share.

Read it top to bottom like an icefall ``train.py``: data (lhotse's DynamicBucketingSampler +
K2SpeechRecognitionDataset over precomputed fbank), model (:mod:`stages.models`), loss
(:mod:`stages.losses`, k2 CTC or LF-MMI), Adam with linear warm-up then per-epoch decay,
gradient clipping, Kaldi's periodic semi-orthogonal constraint, a validation loss per epoch,
TensorBoard scalars and tqdm bars. Its system directory, e.g. ``exp/finetuned/``, holds::

    epoch-<n>.pt          icefall-format checkpoints: {"model", "optimizer", "sampler",
                          "epoch", "step", "config_hash", "model_params", "tokens", ...}
    checkpoint-<step>.pt  the same, mid-epoch, every ``save_every_steps`` (last two kept)
    model.pt              the average of ``average_last`` epochs: what decode reads
    P.pt                  LF-MMI's token bigram (mmi only)
    tensorboard/          train/valid loss, learning rate
    log/log-train.txt     this log, appended on resume
    provenance.json       resolved config, versions, seed, train_seconds

A rerun resumes from the newest checkpoint written with the same config (``config_hash``,
which covers the pretrained start's file hash when fine-tuning), mid-epoch included (the
sampler's state is saved), and says so in the log; a checkpoint from a different config is
never resumed.

Keys of ``train_params`` only the target-domain stages set (absent means off):
``spec_augment`` (lhotse's SpecAugment on training batches), ``noise_mix`` (lhotse's CutMix of
the noise stage's cuts), ``early_stopping_patience``
(stop after that many epochs without a better validation loss; 0: never) and
``model_selection`` (``last``: average the last ``average_last`` epochs trained; ``best_valid``:
the ``average_last`` epochs ending at the best validation loss). Fine-tuning methods
(:mod:`stages.methods`) come in as ``method``. ``model.pt`` and ``provenance.json`` are written last and
atomically: their presence means training finished.
"""
import hashlib
import json
import logging
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from lhotse import CutSet
from lhotse.dataset import CutMix, DynamicBucketingSampler, K2SpeechRecognitionDataset, SimpleCutSampler, SpecAugment
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from stages.cli import StageError
from stages.graphs import build_graph_compiler, output_tokens, save_fsa
from stages.losses import build_loss
from stages.models import build_model, num_parameters, trainable_parameters
from stages.provenance import StageRun, atomic_file

if TYPE_CHECKING:
    from stages.methods import FineTuning

log = logging.getLogger("speechtune.training")

ORTHONORMAL_CONSTRAINT_INTERVAL = 4  # steps, as Kaldi's nnet3 chain training
MODEL_SELECTIONS = ("last", "best_valid")


def load_cuts(path: Path) -> CutSet:
    """An eager CutSet with features, or a StageError naming the file and the stage to run."""
    if not Path(path).is_file():
        raise StageError(f"{path} is missing: run the features stage for it first")
    cuts = CutSet.from_file(path).to_eager()
    if len(cuts) == 0:
        raise StageError(f"{path} holds no cuts")
    if not all(cut.has_features for cut in cuts):
        raise StageError(f"{path}: cuts without features; point at data/fbank/, not data/manifests/")
    return cuts


def make_loader(cuts: CutSet, max_duration: float, shuffle: bool, seed: int, return_cuts: bool = False,
                spec_augment: bool = False, noise_mix: Optional[Mapping[str, Any]] = None,
                noise_cuts: Optional[CutSet] = None) -> DataLoader:
    """Batches of up to ``max_duration`` seconds, bucketed by length (icefall's asr_datamodule);
    under 40 cuts there is nothing to bucket (lhotse needs two buckets of some size).
    ``spec_augment``: lhotse's SpecAugment (time warp, frequency and time masks) on each batch;
    ``noise_mix`` ``{"prob", "snr_db": [low, high]}``: lhotse's CutMix of ``noise_cuts`` into
    that fraction of the cuts, at an SNR drawn uniformly from the range (seeded)."""
    if len(cuts) >= 40:
        sampler = DynamicBucketingSampler(
            cuts, max_duration=max_duration, shuffle=shuffle, seed=seed,
            num_buckets=min(10, len(cuts) // 20), drop_last=False,
        )
    else:
        sampler = SimpleCutSampler(cuts, max_duration=max_duration, shuffle=shuffle, seed=seed)
    transforms = [SpecAugment()] if spec_augment else []
    cut_transforms = []
    if noise_mix and noise_mix["prob"] > 0:
        if noise_cuts is None:
            raise StageError("noise_mix.prob > 0 needs noise cuts: run the noise stage and pass --noise-cuts")
        cut_transforms.append(CutMix(noise_cuts, snr=tuple(noise_mix["snr_db"]), p=noise_mix["prob"],
                                     seed=seed, random_mix_offset=True, preserve_id=True))
    dataset = K2SpeechRecognitionDataset(return_cuts=return_cuts, cut_transforms=cut_transforms,
                                         input_transforms=transforms)
    return DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=0)


def split_validation(cuts: CutSet, fraction: float, seed: int) -> Tuple[CutSet, CutSet]:
    """(train, valid): a seeded random ``fraction`` of the cuts held out for validation."""
    shuffled = cuts.shuffle(rng=random.Random(seed))
    num_valid = max(1, round(fraction * len(cuts)))
    ids = [cut.id for cut in shuffled]
    return cuts.subset(cut_ids=ids[num_valid:]), cuts.subset(cut_ids=ids[:num_valid])


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


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    with atomic_file(path) as tmp:
        torch.save(dict(state), tmp)


def average_checkpoints(paths: List[Path]) -> Dict[str, torch.Tensor]:
    """The element-wise mean of the checkpoints' models (icefall's average_checkpoints)."""
    average: Dict[str, torch.Tensor] = {}
    for path in paths:
        state = torch.load(path, map_location="cpu")["model"]
        for key, value in state.items():
            if value.is_floating_point():
                average[key] = average.get(key, 0) + value.double() / len(paths)
            else:
                average[key] = value  # counters such as BatchNorm's num_batches_tracked
    return {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in average.items()}


def _checkpoints(exp_dir: Path) -> List[Tuple[int, Path, str]]:
    """(step, path, config_hash) of every checkpoint in ``exp_dir``, oldest first."""
    found = []
    for path in list(exp_dir.glob("epoch-*.pt")) + list(exp_dir.glob("checkpoint-*.pt")):
        checkpoint = torch.load(path, map_location="cpu")
        found.append((checkpoint["step"], path, checkpoint["config_hash"]))
    return sorted(found)


def batch_log_probs(model: nn.Module, batch: Mapping[str, Any], device: torch.device) -> torch.Tensor:
    """The model's log-probs (N, T', tokens) for a K2SpeechRecognitionDataset batch."""
    features = batch["inputs"].to(device)
    supervisions = batch["supervisions"]
    # Each utterance's valid frames: start + num_frames of its (only) supervision.
    lens = torch.zeros(features.size(0), dtype=torch.int64)
    for idx, start, frames in zip(supervisions["sequence_idx"], supervisions["start_frame"], supervisions["num_frames"]):
        lens[idx] = max(int(lens[idx]), int(start + frames))
    return model(features, lens.to(device))


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


def train(
    run: StageRun,
    exp_dir: Path,
    lang_dir: Path,
    train_cuts: CutSet,
    valid_cuts: CutSet,
    model_params: Mapping[str, Any],
    loss_params: Mapping[str, Any],
    train_params: Mapping[str, Any],
    method: Optional["FineTuning"] = None,
    noise_cuts: Optional[CutSet] = None,
) -> Dict[str, Any]:
    """Train a model into ``exp_dir`` (layout in the module docstring); return a summary.

    ``method`` (fine-tuning: :class:`stages.methods.FineTuning`) initializes the model from the
    pretrained one before the first step, freezes, groups learning rates and regularizes the
    objective; a resumed run takes the weights from its checkpoint instead. ``noise_cuts``
    (the noise stage's) are what ``train_params["noise_mix"]`` mixes in.
    """
    exp_dir.mkdir(parents=True, exist_ok=True)
    (exp_dir / "log").mkdir(exist_ok=True)
    file_log = logging.FileHandler(exp_dir / "log" / "log-train.txt")
    file_log.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    logging.getLogger("speechtune").addHandler(file_log)
    device = torch.device("cpu")
    # lhotse's SpecAugment draws from all three generators.
    torch.manual_seed(run.seed)
    random.seed(run.seed)
    np.random.seed(run.seed)
    torch.set_num_threads(train_params["threads"])

    run_config = {"model": model_params, "loss": loss_params, "train": train_params,
                  "seed": run.seed, "init": method.fingerprint() if method else None}
    run_hash = config_hash(run_config)
    compiler = build_graph_compiler(lang_dir, loss_params, device)
    tokens = output_tokens(lang_dir)
    model = build_model(model_params).to(device)
    if method:
        method.initialize(model)
        method.attach_source(loss_params, train_params["max_duration"], run.seed)
    train_mode = method.train_mode if method else nn.Module.train
    texts = [s.text for cut in train_cuts for s in cut.supervisions]
    loss_fn = build_loss(loss_params, compiler, model.subsampling_factor, train_texts=texts)
    if loss_params["type"] == "mmi":
        save_fsa(loss_fn.bigram, exp_dir / "P.pt")
    param_groups = method.param_groups(model, train_params["lr"]) if method else model.parameters()
    optimizer = torch.optim.Adam(param_groups, lr=train_params["lr"], weight_decay=train_params["weight_decay"])
    train_loader = make_loader(train_cuts, train_params["max_duration"], shuffle=True, seed=run.seed,
                               spec_augment=train_params.get("spec_augment", False),
                               noise_mix=train_params.get("noise_mix"), noise_cuts=noise_cuts)
    valid_loader = make_loader(valid_cuts, train_params["max_duration"], shuffle=False, seed=run.seed)

    step, first_epoch, train_seconds, valid_losses = 0, 1, 0.0, []
    checkpoints = _checkpoints(exp_dir)
    resumable = [path for _, path, written_with in checkpoints if written_with == run_hash]
    if resumable:
        path = resumable[-1]
        checkpoint = torch.load(path, map_location="cpu")
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        step, first_epoch = checkpoint["step"], checkpoint["epoch"]
        train_seconds, valid_losses = checkpoint["train_seconds"], checkpoint["valid_losses"]
        if checkpoint["sampler"] is not None:
            train_loader.sampler.load_state_dict(checkpoint["sampler"])
        else:
            first_epoch += 1  # an end-of-epoch checkpoint: the next epoch starts fresh
        log.info("resuming from %s (epoch %d, step %d)", path, checkpoint["epoch"], step)
    else:
        if checkpoints:
            log.info("removing %d checkpoints written with another config", len(checkpoints))
            for _, path, _ in checkpoints:
                path.unlink()
        log.info("model: %s, %d parameters (%d trainable); loss: %s", model_params["type"],
                 num_parameters(model), trainable_parameters(model), loss_params["type"])

    writer = SummaryWriter(str(exp_dir / "tensorboard"), purge_step=step)

    def state(epoch: int, sampler_state: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "sampler": sampler_state,
            "epoch": epoch, "step": step, "config_hash": run_hash, "model_params": dict(model.params),
            "loss_params": dict(loss_params), "tokens": tokens, "train_seconds": train_seconds,
            "valid_losses": valid_losses, "seed": run.seed,
        }

    patience = train_params.get("early_stopping_patience", 0)
    for epoch in range(first_epoch, train_params["epochs"] + 1):
        if patience and valid_losses and len(valid_losses) - 1 - valid_losses.index(min(valid_losses)) >= patience:
            log.info("early stop: no better validation loss in the last %d epochs", patience)
            break
        train_mode(model)
        train_loader.sampler.set_epoch(epoch)
        epoch_loss, epoch_frames = 0.0, 0
        started = time.time()
        progress = tqdm(train_loader, desc=f"{run.stage} epoch {epoch}", unit="batch", mininterval=5)
        for batch in progress:
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(train_params, step, epoch) * group.get("lr_factor", 1.0)
            log_probs = batch_log_probs(model, batch, device)
            loss, info = loss_fn(log_probs, batch["supervisions"])
            if info["frames"] == 0:
                continue
            objective, terms = method.objective(model, batch, log_probs, loss, info) if method else (loss / info["frames"], {})
            optimizer.zero_grad()
            objective.backward()
            nn.utils.clip_grad_norm_(model.parameters(), train_params["grad_clip"])
            optimizer.step()
            step += 1
            if step % ORTHONORMAL_CONSTRAINT_INTERVAL == 0:
                model.constrain_orthonormal()
            epoch_loss += info["loss"]
            epoch_frames += info["frames"]
            per_frame = info["loss"] / info["frames"]
            progress.set_postfix(loss=f"{per_frame:.3f}", refresh=False)
            writer.add_scalar("train/loss", per_frame, step)
            writer.add_scalar("train/objective", float(objective), step)
            for name, value in terms.items():
                writer.add_scalar(f"train/{name}", value, step)
            writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
            if train_params["save_every_steps"] and step % train_params["save_every_steps"] == 0:
                train_seconds += time.time() - started
                started = time.time()
                save_checkpoint(exp_dir / f"checkpoint-{step}.pt", state(epoch, train_loader.sampler.state_dict()))
                for _, old, _ in [c for c in _checkpoints(exp_dir) if c[1].name.startswith("checkpoint-")][:-2]:
                    old.unlink()
        train_seconds += time.time() - started
        valid_losses.append(validation_loss(model, loss_fn, valid_loader, device))
        writer.add_scalar("valid/loss", valid_losses[-1], step)
        log.info("epoch %d: train loss %.4f, valid loss %.4f per frame, %d steps, %.0f s so far",
                 epoch, epoch_loss / max(epoch_frames, 1), valid_losses[-1], step, train_seconds)
        save_checkpoint(exp_dir / f"epoch-{epoch}.pt", state(epoch, None))
    writer.close()

    chosen = averaged_epochs(valid_losses, train_params["average_last"], train_params.get("model_selection", "last"))
    model.load_state_dict(average_checkpoints([exp_dir / f"epoch-{e}.pt" for e in chosen]))
    summary = {
        "train_seconds": round(train_seconds, 1), "steps": step, "epochs_trained": len(valid_losses),
        "averaged_epochs": chosen, "parameters": num_parameters(model),
        "trainable_parameters": trainable_parameters(model),
        "regularizer": method.regularizer if method else "none", "alpha": method.alpha if method else 0.0,
        "valid_loss": validation_loss(model, loss_fn, valid_loader, device),
    }
    save_checkpoint(exp_dir / "model.pt", {**state(len(valid_losses), None), "averaged_epochs": chosen})
    run.write_provenance(exp_dir / "provenance.json", **summary)
    logging.getLogger("speechtune").removeHandler(file_log)
    log.info("wrote %s: %s", exp_dir / "model.pt", summary)
    return summary


def model_from_checkpoint(path: Path) -> nn.Module:
    """Rebuild the model a checkpoint was trained as and load its weights (strict keys)."""
    if not Path(path).is_file():
        raise StageError(f"{path} is missing: train that system first")
    checkpoint = torch.load(path, map_location="cpu")
    model = build_model(checkpoint["model_params"])
    model.load_state_dict(checkpoint["model"])
    return model.eval()

