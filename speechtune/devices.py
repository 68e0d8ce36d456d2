"""Where training and decoding run. ``auto`` is CUDA where torch sees a GPU and k2 was built with
CUDA, else the CPU; ``cuda`` insists and says why it cannot; ``cpu`` never uses a GPU::

    device = select_device("auto")        # torch.device("cuda") on a GPU machine, else "cpu"
    model.to(device)

Stages take it as ``--device`` (the config's top-level ``device``, passed by the rules): it is
not part of any stage's config, so moving a run to a GPU reruns nothing.
"""
from typing import Tuple

import torch

from speechtune.errors import StageError

DEVICES: Tuple[str, ...] = ("auto", "cpu", "cuda")


def k2_has_cuda() -> bool:
    """Whether the installed k2 was built with CUDA (PyPI's CPU wheels were not)."""
    import k2

    return bool(getattr(k2, "with_cuda", False))


def select_device(wanted: str = "auto") -> torch.device:
    """The torch device for ``wanted`` (one of :data:`DEVICES`)."""
    if wanted not in DEVICES:
        raise StageError(f"device {wanted!r}: expected one of {', '.join(DEVICES)}")
    if wanted == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if wanted == "cuda":
            raise StageError("device cuda: torch sees no CUDA GPU (torch.cuda.is_available() is False); "
                             "use device auto or cpu, or install torch's CUDA build on a GPU machine")
        return torch.device("cpu")
    if not k2_has_cuda():
        if wanted == "cuda":
            raise StageError("device cuda: this k2 was built without CUDA; install k2's CUDA build for this "
                             f"torch ({torch.__version__}) or use device cpu")
        return torch.device("cpu")
    return torch.device("cuda")
