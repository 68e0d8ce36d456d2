"""Data-parallel training: one process per CPU share or GPU, torch DistributedDataParallel, as
icefall trains. The training stages take ``--processes N`` and start themselves again under
torchrun (``python -m torch.distributed.run``); torchrun may also start them directly::

    python -m stages.pretrain CUTS LANG exp/pretrained --processes 2 --config-json ... --seed 1
    torchrun --nproc_per_node 2 -m stages.pretrain CUTS LANG exp/pretrained ...   # the same

Under torchrun every process runs the same loop (:mod:`speechtune.training.loop`): lhotse's
sampler draws the batches one process would draw, in every process, and each trains on its
share of every batch (:func:`speechtune.training.batches.share_of_batch`). DDP averages the
gradients (gloo on the CPU, NCCL on GPUs) and each process divides its loss by the frames of
the whole batch over the number of processes, so a step is the one-process step on the same
utterances; only batch normalization, which normalizes each share alone, differs. The process
count is therefore not part of a run's identity (like threads and device): a run killed in one
count resumes in another. Only rank 0 writes checkpoints, logs, TensorBoard scalars and
``model.pt``, and computes the validation loss::

    world = join_process_group(device)       # World(size=1, rank=0) outside torchrun
    model = wrap(model, world)               # DistributedDataParallel where size > 1
    frames, loss = all_reduce_sum(world, [frames, loss])
"""
import logging
import os
from dataclasses import dataclass
from typing import List, Sequence

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """The processes training together: how many, and which one this is."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str = ""   # torch.distributed's: gloo or nccl

    def __str__(self) -> str:
        return f"process {self.rank} of {self.size} ({self.backend})" if self.size > 1 else "one process"

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes checkpoints, logs and model.pt."""
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """Whether this process is one of torchrun's workers (it sets these variables)."""
    return all(name in os.environ for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"))


def join_process_group(device: torch.device) -> World:
    """The world torchrun started this process in, its process group joined (gloo on the CPU,
    NCCL on CUDA); ``World()`` outside torchrun. On CUDA each process takes the GPU of its local
    rank: use :func:`process_device`."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return World()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    world = World(int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]),
                  dist.get_backend())
    if not world.is_main:  # rank 0 tells how training goes; the others only what goes wrong
        logging.getLogger("speechtune").setLevel(logging.WARNING)
    return world


def process_device(device: torch.device, world: World) -> torch.device:
    """This process's device: on CUDA the GPU of its local rank."""
    if device.type == "cuda" and world.size > 1:
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return device


def leave_process_group(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, world: World) -> nn.Module:
    """``model`` for the training forward: DistributedDataParallel where there are several
    processes (parameters a domain or a frozen layer leaves unused are allowed)."""
    if world.size == 1:
        return model
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)


def all_reduce_sum(world: World, values: Sequence[float]) -> List[float]:
    """``values`` summed over every process (as they are, with one process)."""
    if world.size == 1:
        return list(values)
    tensor = _collective_tensor(values)
    dist.all_reduce(tensor)
    return tensor.tolist()


def from_main(world: World, value: float) -> float:
    """Rank 0's ``value`` in every process (decisions all must take alike, e.g. early stopping)."""
    if world.size == 1:
        return value
    tensor = _collective_tensor([value])
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


def _collective_tensor(values: Sequence[float]) -> torch.Tensor:
    # NCCL reduces CUDA tensors only.
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    return torch.tensor(list(values), dtype=torch.float64, device=device)


def barrier(world: World) -> None:
    """Wait until every process is here (e.g. rank 0 has written what all read next)."""
    if world.size > 1:
        dist.barrier()
