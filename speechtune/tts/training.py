"""Training Tacotron 2 (:mod:`speechtune.tts.model`): the loss, the loop, fine-tuning by rehearsal.

Read :func:`train_tts` top to bottom like an icefall ``train.py``. The data comes as callables
``batches(epoch) -> Iterable[Batch]`` (epochs count from 1; the same batches for the same epoch,
every time: that is what makes a resumed run end with the weights of an uninterrupted one), each
batch a dict::

    {"phones": LongTensor (N, L) 0-padded, "phone_lens": (N,), "mels": FloatTensor (N, T, 80)
     log mel 0-padded, "mel_lens": (N,), "speakers": (N,), "ids": [str, ...]}

Usage::

    pretrained = train_tts(Path("exp/tts_pretrained"), train_batches, dev_batches,
                           TtsTrainingParams(epochs=30), TacotronConfig(num_phones=71, num_speakers=40))
    # a new voice: the pretrained weights, one new speaker row (id 40), half of each step's
    # objective on a batch of the pretraining data (rehearsal against forgetting)
    train_tts(Path("exp/tts_finetuned"), target_batches, target_dev_batches,
              TtsTrainingParams(epochs=10, lr=3e-4, alpha=0.5),
              init_from=Path("exp/tts_pretrained/model.pt"), pretraining_batches=train_batches)
    model = load_tts_model(Path("exp/tts_finetuned/model.pt"))

The system directory holds the last two ``epoch-<n>.pt`` (everything a resume needs: weights,
Adam, the random generator, the history), ``log/log-train.txt`` (one line per epoch: each loss term,
the validation loss and the attention's diagonality on the dev batches), ``model.pt``
(``{"model": state_dict, "tts_config": ..., ...}``, the last epoch's weights; the mel
normalization is in the state dict as the buffers ``mel_mean``/``mel_std``) and, when the
stage passes its :class:`~speechtune.provenance.StageRun`, ``provenance.json``. ``model.pt``
is written last and atomically: its presence means training finished. A rerun resumes from the
newest epoch checkpoint written with the same resume key (params, model config, the start, the
caller's data fingerprint, the library's code) and removes checkpoints written for anything else.

Choices made for small CPU budgets:

* ``reduction`` frames per decoder step (default 2) divides the autoregressive steps, the
  loop's cost, by that much, and gives attention fewer, more distinct steps to align.
* The guided attention loss (Tachibana et al. 2017) penalizes attention far from the diagonal:
  plain Tacotron learns to align only after many thousands of steps, often never on minutes of
  data; with the guide it aligns within a few hundred.
* Log mels are normalized per mel bin with the mean and standard deviation of the training
  frames (computed once, before a fresh run's first step): the network's inputs and targets are
  then of unit scale in every bin. A fine-tuned model keeps its pretrained normalization, the
  space its weights were trained in. The loss compares normalized frames too, so that no bin
  (silence's floor in the low ones spans the widest range) outweighs the others.
"""
import contextlib
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from speechtune.errors import StageError
from speechtune.models import num_parameters
from speechtune.provenance import StageRun, code_fingerprint, file_sha256
from speechtune.training.checkpoint import find_checkpoints, load_checkpoint, save_checkpoint
from speechtune.training.loop import config_hash, learning_rate
from speechtune.tts.model import Tacotron2, TacotronConfig, TacotronOutput, length_mask

log = logging.getLogger("speechtune.tts")

# Epoch checkpoints kept: the newest resumes; the one before it stands in if that one is unreadable.
KEEP_CHECKPOINTS = 2

Batch = Dict[str, Any]
Batches = Callable[[int], Iterable[Batch]]


def tts_loss(output: TacotronOutput, batch: Batch, guided_sigma: float = 0.2, guided_weight: float = 1.0,
             stop_pos_weight: float = 5.0) -> Tuple[torch.Tensor, Dict[str, float]]:
    """The loss of a teacher-forced pass and its terms: L1 + MSE of the frames before and after
    the postnet (normalized log mel: every bin weighs alike, whatever its range), BCE of the stop
    logits (target 1 on each utterance's last frame alone, weighted ``stop_pos_weight``: one
    frame in hundreds), and ``guided_weight`` times the guided attention loss. Every term is a
    mean over the valid frames (steps) only: padding changes nothing."""
    mel_lens, phone_lens, targets = batch["mel_lens"], batch["phone_lens"], output.target
    padded_frames, num_mels = output.mel.shape[1:]
    mask = length_mask(mel_lens, padded_frames)
    valid = mask.sum() * num_mels

    def masked(errors: torch.Tensor) -> torch.Tensor:
        return (errors * mask[:, :, None]).sum() / valid

    terms = {
        "mel_l1": masked((output.mel - targets).abs()), "mel_mse": masked((output.mel - targets) ** 2),
        "post_l1": masked((output.mel_post - targets).abs()), "post_mse": masked((output.mel_post - targets) ** 2),
    }
    stop_targets = (torch.arange(padded_frames, device=mel_lens.device)[None, :] == (mel_lens - 1)[:, None]).float()
    stop = F.binary_cross_entropy_with_logits(output.stop_logits, stop_targets, reduction="none",
                                              pos_weight=torch.tensor(stop_pos_weight))
    terms["stop"] = (stop * mask).sum() / mask.sum()
    terms["guided"] = guided_attention_loss(output.alignments, phone_lens, mel_lens,
                                            padded_frames // output.alignments.shape[1], guided_sigma)
    total = sum(value for name, value in terms.items() if name != "guided") + guided_weight * terms["guided"]
    return total, {name: float(value) for name, value in terms.items()}


def guided_attention_loss(alignments: torch.Tensor, phone_lens: torch.Tensor, mel_lens: torch.Tensor,
                          reduction: int, sigma: float = 0.2) -> torch.Tensor:
    """Tachibana et al.'s penalty: the attention mass at phone ``l`` of step ``s`` costs
    ``1 - exp(-(l/L - s/S)^2 / (2 sigma^2))``; summed over phones, averaged over valid steps
    (so 0 on the diagonal, at most 1)."""
    steps = -(-mel_lens // reduction)
    s = torch.arange(alignments.shape[1], device=steps.device)[None, :, None] / steps[:, None, None]
    ell = torch.arange(alignments.shape[2], device=steps.device)[None, None, :] / phone_lens[:, None, None]
    penalty = 1.0 - torch.exp(-(ell - s) ** 2 / (2 * sigma ** 2))
    step_mask = length_mask(steps, alignments.shape[1])
    mask = step_mask[:, :, None] & length_mask(phone_lens, alignments.shape[2])[:, None, :]
    return (alignments * penalty * mask).sum() / step_mask.sum()


def attention_diagonality(alignment: torch.Tensor, phone_len: int, steps: int, band: float = 0.1) -> float:
    """The share of an alignment's (steps, L; a tensor or an array) attention mass within ``band`` of the diagonal
    (``band * phone_len`` phones either side of where a steady speaking rate would be, at least
    one phone): near 1 for a clean monotonic alignment, about ``2 * band`` for attention smeared
    over the phones. ``steps`` and ``phone_len``: the utterance's own, without padding."""
    weights = torch.as_tensor(alignment, dtype=torch.float64)[:steps, :phone_len]
    expected = (torch.arange(steps, dtype=torch.float64)[:, None] + 0.5) / steps * phone_len - 0.5
    width = max(1.0, band * phone_len)
    near = (torch.arange(phone_len, dtype=torch.float64)[None, :] - expected).abs() <= width
    return float((weights * near).sum() / weights.sum().clamp(min=1e-12))


def mel_statistics(batches: Iterable[Batch]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per mel bin mean and standard deviation (floored at 1e-3) of the valid frames."""
    total, squares, frames = 0.0, 0.0, 0
    for batch in batches:
        mask = length_mask(batch["mel_lens"], batch["mels"].shape[1])
        valid = batch["mels"][mask].double()
        total = total + valid.sum(0)
        squares = squares + (valid ** 2).sum(0)
        frames += len(valid)
    if not frames:
        raise StageError("the training batches hold no frames: check the TTS data stage's output")
    mean = total / frames
    return mean.float(), (squares / frames - mean ** 2).clamp(min=1e-6).sqrt().float()


def model_loss(model: Tacotron2, batch: Batch, params: "TtsTrainingParams") -> Tuple[torch.Tensor, Dict[str, float]]:
    """:func:`tts_loss` of the model's teacher-forced pass over ``batch``."""
    num_phones, num_speakers = model.config.num_phones, model.config.num_speakers
    if int(batch["phones"].max()) >= num_phones or int(batch["speakers"].max()) >= num_speakers:
        raise StageError(f"batch {batch['ids'][:3]}... has phone ids up to {int(batch['phones'].max())} and speaker "
                         f"ids up to {int(batch['speakers'].max())}, the model {num_phones} phones and "
                         f"{num_speakers} speakers: make the data stage use the model's phone and speaker tables")
    output = model(batch["phones"], batch["phone_lens"], batch["mels"], batch["mel_lens"], batch["speakers"])
    return tts_loss(output, batch, params.guided_sigma, params.guided_weight)


@dataclass
class TtsTrainingParams:
    """The loop's settings; every one is part of the resume key."""

    epochs: int = 30
    lr: float = 1e-3             # Adam
    warmup_steps: int = 200      # linear warm-up, then
    lr_decay: float = 0.95       # per finished epoch
    grad_clip: float = 1.0
    seed: int = 0
    guided_sigma: float = 0.2
    guided_weight: float = 1.0
    alpha: float = 0.0           # fine-tuning: alpha * L_pre + (1 - alpha) * L_task; 0 = plain fine-tuning


@dataclass
class History:
    """What the epochs so far measured: kept in every checkpoint, summarized at the end."""

    step: int = 0
    epochs_done: int = 0
    train_seconds: float = 0.0
    train_losses: List[float] = field(default_factory=list)
    valid_losses: List[float] = field(default_factory=list)
    diagonalities: List[float] = field(default_factory=list)


@contextlib.contextmanager
def log_to(path: Path) -> Iterator[None]:
    """The library's INFO lines also go to ``path`` (log-train.txt, appended on resume)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    library_log = logging.getLogger("speechtune")
    library_log.addHandler(handler)
    if library_log.getEffectiveLevel() > logging.INFO:
        library_log.setLevel(logging.INFO)
    try:
        yield
    finally:
        library_log.removeHandler(handler)
        handler.close()


def start_model(config: Optional[TacotronConfig], init_from: Optional[Path], new_speakers: int) -> Tacotron2:
    """A fresh model of ``config``, or the pretrained ``init_from`` with ``new_speakers`` rows
    added to its speaker table (the new voices' ids follow the pretrained ones)."""
    if (config is None) == (init_from is None):
        raise StageError("train_tts takes a model config (training from nothing) or init_from (fine-tuning): "
                         "exactly one of the two")
    if config is not None:
        return Tacotron2(config)
    model = load_tts_model(init_from).train()
    model.set_speakers(model.config.num_speakers + new_speakers)
    return model


def resume(exp_dir: Path, resume_key: str, model: Tacotron2, optimizer: torch.optim.Optimizer) -> Optional[History]:
    """The newest epoch checkpoint written with ``resume_key`` loaded into the model, optimizer
    and random generator; None (and no stale checkpoints left) where there is none."""
    checkpoints = find_checkpoints(exp_dir)
    resumable = [c.path for c in checkpoints if c.resume_key == resume_key]
    if not resumable:
        if checkpoints:
            log.info("removing %d checkpoints written with another config", len(checkpoints))
            for checkpoint in checkpoints:
                checkpoint.path.unlink()
        return None
    checkpoint = load_checkpoint(resumable[-1])
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["rng_state"])
    log.info("resuming from %s (epoch %d, step %d)", resumable[-1], checkpoint["epoch"], checkpoint["step"])
    return History(**checkpoint["history"])


def train_one_epoch(model: Tacotron2, optimizer: torch.optim.Optimizer, params: TtsTrainingParams, epoch: int,
                    batches: Batches, pretraining_batches: Optional[Batches], history: History) -> Dict[str, float]:
    """One pass over ``batches(epoch)``; the epoch's mean of each loss term (and of ``pre``,
    the rehearsal loss, where ``alpha`` > 0)."""
    model.train()
    rehearsal = iter(pretraining_batches(epoch)) if params.alpha > 0 else None
    sums: Dict[str, float] = {}
    count = 0
    bar = tqdm(batches(epoch), desc=f"tts epoch {epoch}", unit="batch", mininterval=5)
    for batch in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(asdict(params), history.step, epoch)
        task_loss, terms = model_loss(model, batch, params)
        objective = task_loss
        if rehearsal is not None:
            pre_batch = next(rehearsal, None)
            if pre_batch is None:  # fewer pretraining batches than target ones: go round again
                rehearsal = iter(pretraining_batches(epoch))
                pre_batch = next(rehearsal, None)
            if pre_batch is None:
                raise StageError(f"pretraining_batches({epoch}) yielded no batch: check the pretraining data")
            pre_loss, _ = model_loss(model, pre_batch, params)
            objective = params.alpha * pre_loss + (1 - params.alpha) * task_loss
            terms = {**terms, "pre": float(pre_loss)}
        optimizer.zero_grad()
        objective.backward()
        nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip)
        optimizer.step()
        history.step += 1
        count += 1
        for name, value in {"loss": float(task_loss), **terms}.items():
            sums[name] = sums.get(name, 0.0) + value
        bar.set_postfix(loss=f"{float(task_loss):.3f}", refresh=False)
    if not count:
        raise StageError(f"batches({epoch}) yielded no batch: check the TTS data stage's output")
    return {name: value / count for name, value in sums.items()}


def validate(model: Tacotron2, valid_batches: Iterable[Batch], params: TtsTrainingParams) -> Tuple[float, float]:
    """The mean loss per batch and the mean attention diagonality per utterance, teacher-forced.
    The prenet's dropout draws from a generator seeded alike every time: the numbers are
    comparable between epochs and the training's random sequence is left as it was."""
    model.eval()
    losses, diagonalities = [], []
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(params.seed)
        for batch in valid_batches:
            output = model(batch["phones"], batch["phone_lens"], batch["mels"], batch["mel_lens"], batch["speakers"])
            losses.append(float(tts_loss(output, batch, params.guided_sigma, params.guided_weight)[0]))
            steps = -(-batch["mel_lens"] // model.config.reduction)
            diagonalities.extend(attention_diagonality(a, int(p), int(s))
                                 for a, p, s in zip(output.alignments, batch["phone_lens"], steps))
    if not losses:
        raise StageError("the validation batches are empty: check the TTS data stage's dev output")
    return sum(losses) / len(losses), sum(diagonalities) / len(diagonalities)


def train_tts(
    exp_dir: Path,
    batches: Batches,
    valid_batches: Batches,
    params: Optional[TtsTrainingParams] = None,
    config: Optional[TacotronConfig] = None,
    init_from: Optional[Path] = None,
    new_speakers: int = 1,
    pretraining_batches: Optional[Batches] = None,
    data_fingerprint: str = "",
    run: Optional[StageRun] = None,
) -> Dict[str, Any]:
    """Train a Tacotron 2 into ``exp_dir`` (layout in the module docstring); return a summary.

    Either ``config`` (from nothing; the mel normalization computed on ``batches(1)``) or
    ``init_from``, a pretrained ``model.pt`` whose speaker table grows by ``new_speakers``.
    ``params.alpha`` > 0 adds rehearsal: each step's objective is ``alpha * L_pre + (1 - alpha)
    * L_task``, L_pre the same loss on the next of ``pretraining_batches(epoch)``.
    ``data_fingerprint`` (e.g. the cuts' fingerprint) joins the resume key: checkpoints of other
    data are not resumed. ``run``: the stage's, for ``provenance.json``. ``params``: the
    defaults where None.
    """
    params = params or TtsTrainingParams()
    if params.alpha > 0 and pretraining_batches is None:
        raise StageError(f"alpha = {params.alpha} mixes in the pretraining loss: pass pretraining_batches, "
                         "or set alpha to 0 for plain fine-tuning")
    with log_to(exp_dir / "log" / "log-train.txt"):
        torch.manual_seed(params.seed)
        model = start_model(config, init_from, new_speakers)
        optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
        resume_key = config_hash({
            "params": asdict(params), "model": asdict(model.config), "data": data_fingerprint,
            "start": file_sha256(init_from) if init_from is not None else None, "code": code_fingerprint()})
        history = resume(exp_dir, resume_key, model, optimizer)
        if history is None:
            history = History()
            if init_from is None:
                model.set_normalization(*mel_statistics(batches(1)))
            log.info("Tacotron 2, %d parameters, %s; %s", num_parameters(model), model.config,
                     f"from {init_from}" if init_from is not None else "from nothing")

        for epoch in range(history.epochs_done + 1, params.epochs + 1):
            started = time.time()
            terms = train_one_epoch(model, optimizer, params, epoch, batches, pretraining_batches, history)
            valid_loss, diagonality = validate(model, valid_batches(epoch), params)
            history.epochs_done = epoch
            history.train_seconds += time.time() - started
            history.train_losses.append(terms["loss"])
            history.valid_losses.append(valid_loss)
            history.diagonalities.append(diagonality)
            log.info("epoch %d: %s; valid loss %.4f, diagonality %.3f; lr %.2e, %d steps, %.0f s so far", epoch,
                     ", ".join(f"{name} {value:.4f}" for name, value in terms.items()), valid_loss, diagonality,
                     optimizer.param_groups[0]["lr"], history.step, history.train_seconds)
            save_checkpoint(exp_dir / f"epoch-{epoch}.pt", {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng_state": torch.get_rng_state(),
                "epoch": epoch, "step": history.step, "config_hash": resume_key, "tts_config": asdict(model.config),
                "params": asdict(params), "history": asdict(history)})
            for old in find_checkpoints(exp_dir)[:-KEEP_CHECKPOINTS]:
                old.path.unlink()

        summary = {"steps": history.step, "epochs_trained": history.epochs_done,
                   "train_seconds": round(history.train_seconds, 1), "parameters": num_parameters(model),
                   "train_losses": history.train_losses, "valid_losses": history.valid_losses,
                   "diagonalities": history.diagonalities,
                   "init_from": str(init_from) if init_from is not None else None}
        save_checkpoint(exp_dir / "model.pt", {
            "model": model.state_dict(), "tts_config": asdict(model.config), "epoch": history.epochs_done,
            "step": history.step, "config_hash": resume_key, "params": asdict(params)})
        if run is not None:
            run.write_provenance(exp_dir / "provenance.json", **summary)
        log.info("wrote %s: %s", exp_dir / "model.pt", summary)
        return summary


def load_tts_model(path: Path) -> Tacotron2:
    """The Tacotron 2 a ``model.pt`` (or ``epoch-<n>.pt``) holds, its weights and mel
    normalization loaded, in eval mode; a StageError naming the file when it is not one."""
    checkpoint = load_checkpoint(path)
    if "tts_config" not in checkpoint:
        raise StageError(f"{path} is not a TTS model (no 'tts_config'): point to a model.pt the TTS training wrote")
    model = Tacotron2(TacotronConfig(**checkpoint["tts_config"]))
    model.load_state_dict(checkpoint["model"])
    return model.eval()
