"""Checkpoints in icefall's format, in the manner of icefall's ``icefall/checkpoint.py``: a dict
``torch.save``d with ``model`` (the state dict), ``optimizer``, ``sampler``, ``epoch``,
``step``, ``model_params`` (rebuilds the model), ``tokens`` and the training loop's own keys::

    save_checkpoint(exp_dir / "epoch-3.pt", state)           # atomic: never half-written
    checkpoints = find_checkpoints(exp_dir)                    # oldest first
    model.load_state_dict(average_checkpoints([exp_dir / "epoch-2.pt", exp_dir / "epoch-3.pt"]))
    model = model_from_checkpoint(exp_dir / "model.pt")       # what decoding reads

A system directory holds ``epoch-<n>.pt`` (end of epoch ``n``), ``checkpoint-<step>.pt``
(mid-epoch, every ``save_every_steps``; :func:`remove_old_checkpoints` keeps the last two) and
``model.pt`` (the average the loop chose).
"""
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple

import torch
from torch import nn

from speechtune.errors import StageError
from speechtune.models import build_model
from speechtune.provenance import atomic_file

log = logging.getLogger("speechtune.training")


class Checkpoint(NamedTuple):
    """Where a checkpoint is, when it was written and with which run's resume key."""

    step: int
    path: Path
    resume_key: str


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """``torch.save(state)`` under a temporary name, renamed when complete."""
    with atomic_file(path) as tmp:
        torch.save(dict(state), tmp)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """A checkpoint's dict, tensors on the CPU; a StageError naming the file when it is missing
    or not a whole checkpoint (truncated, not torch's format)."""
    if not Path(path).is_file():
        raise StageError(f"{path} is missing: train that system first")
    try:
        checkpoint = torch.load(path, map_location="cpu")
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a bad file
        raise StageError(f"{path} is not a readable checkpoint ({type(e).__name__}: {' '.join(str(e).split())[:120]}); "
                         "delete it and rerun the stage that writes it") from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise StageError(f"{path} is not a checkpoint (no 'model' state dict); delete it and rerun the stage that writes it")
    return checkpoint


def find_checkpoints(exp_dir: Path) -> List[Checkpoint]:
    """Every readable epoch and mid-epoch checkpoint in ``exp_dir``, oldest (fewest steps)
    first. An unreadable one (a disk filled up, a file cut short by hand) is removed with a
    warning, so the run falls back to the previous one."""
    found = []
    for path in list(exp_dir.glob("epoch-*.pt")) + list(exp_dir.glob("checkpoint-*.pt")):
        try:
            checkpoint = load_checkpoint(path)
        except StageError as e:
            log.warning("removing %s: %s", path, e)
            path.unlink()
            continue
        found.append(Checkpoint(checkpoint["step"], path, checkpoint["config_hash"]))
    return sorted(found)


def remove_old_checkpoints(exp_dir: Path, keep: int = 2) -> None:
    """Delete all but the newest ``keep`` mid-epoch checkpoints (epoch checkpoints stay: the
    average is taken over them)."""
    mid_epoch = [c for c in find_checkpoints(exp_dir) if c.path.name.startswith("checkpoint-")]
    for checkpoint in mid_epoch[:-keep]:
        checkpoint.path.unlink()


def average_checkpoints(paths: List[Path]) -> Dict[str, torch.Tensor]:
    """The element-wise mean of the checkpoints' models (icefall's average_checkpoints)."""
    average: Dict[str, torch.Tensor] = {}
    for path in paths:
        state = load_checkpoint(path)["model"]
        for key, value in state.items():
            if value.is_floating_point():
                average[key] = average.get(key, 0) + value.double() / len(paths)
            else:
                average[key] = value  # counters such as BatchNorm's num_batches_tracked
    return {k: v.to(torch.float32) if v.is_floating_point() else v for k, v in average.items()}


def model_from_checkpoint(path: Path) -> nn.Module:
    """Rebuild the model a checkpoint was trained as and load its weights (strict keys), in
    eval mode."""
    checkpoint = load_checkpoint(path)
    model = build_model(checkpoint["model_params"])
    model.load_state_dict(checkpoint["model"])
    return model.eval()
