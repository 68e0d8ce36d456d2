"""Device selection (speechtune.devices), with CUDA's presence mocked: these machines have no
GPU, so only the choice is tested here, not training on one."""
import pytest
import torch

import speechtune.devices as devices
from speechtune.cli import add_compute_arguments, compute_device, stage_parser
from speechtune.errors import StageError


@pytest.fixture
def machine(monkeypatch):
    def set_up(torch_cuda: bool, k2_cuda: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: torch_cuda)
        monkeypatch.setattr(devices, "k2_has_cuda", lambda: k2_cuda)
    return set_up


@pytest.mark.parametrize("torch_cuda, k2_cuda, wanted", [
    (True, True, "cuda"), (False, True, "cpu"), (True, False, "cpu"), (False, False, "cpu"),
])
def test_auto_is_cuda_only_where_torch_and_k2_both_have_it(machine, torch_cuda, k2_cuda, wanted):
    machine(torch_cuda, k2_cuda)
    assert devices.select_device("auto") == torch.device(wanted)
    assert devices.select_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("torch_cuda, k2_cuda, reason", [(False, True, "no CUDA GPU"), (True, False, "k2")])
def test_asking_for_cuda_without_it_says_why(machine, torch_cuda, k2_cuda, reason):
    machine(torch_cuda, k2_cuda)
    with pytest.raises(StageError, match=reason):
        devices.select_device("cuda")


def test_unknown_device_is_an_error():
    with pytest.raises(StageError, match="auto, cpu, cuda"):
        devices.select_device("tpu")


def test_the_stage_options_set_threads_and_device(machine):
    machine(False, False)
    parser = stage_parser("stages.example", "example")
    add_compute_arguments(parser)
    before = torch.get_num_threads()
    try:
        assert compute_device(parser.parse_args(["--threads", "1", "--device", "auto"])) == torch.device("cpu")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit):
        parser.parse_args(["--device", "gpu"])
