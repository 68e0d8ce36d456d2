"""Data-parallel training (torch DDP under torchrun, gloo on the CPU), through the training
stages' ``--processes``: two processes train what one does with the same global batch (exactly,
where batch normalization is frozen; as far, where it is not), rank 0 alone writes, and a killed
two-process run resumes from its checkpoint to the weights of an uninterrupted one."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import pytest
import torch

from speechtune.cli import free_local_port
from tests.conftest import REPO_ROOT
from tests.test_losses import CHAR_LEXICON, write_char_lang_dir
from tests.tiny_training import LOSS, MODEL, TRAIN, feature_cuts

CONFIG = {
    "model": {key: value for key, value in MODEL.items() if key != "feature_dim"},
    "loss": LOSS,
    # Five steps an epoch: two processes split each 6-second global batch.
    "pretrain": {**TRAIN, "epochs": 3, "max_duration": 6.0, "valid_fraction": 0.2},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("distributed")
    cuts_path = root / "cuts.jsonl.gz"
    feature_cuts(root / "feats", "a", 40, seed=1).to_file(cuts_path)
    return {"root": root, "cuts": cuts_path, "lang": write_char_lang_dir(root / "lang", CHAR_LEXICON)}


def pretrain(data: Dict[str, Path], exp_dir: Path, processes: int, **overrides) -> List[str]:
    config = {**CONFIG, "pretrain": {**CONFIG["pretrain"], **overrides}}
    return [sys.executable, "-m", "stages.pretrain", str(data["cuts"]), str(data["lang"]), str(exp_dir),
            "--processes", str(processes), "--threads", "2", "--device", "cpu",
            "--config-json", json.dumps(config), "--seed", "3"]


def train(command: List[str]) -> Dict[str, torch.Tensor]:
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(Path(command[5]) / "model.pt")["model"]


def valid_loss(exp_dir: Path) -> float:
    return json.loads((exp_dir / "provenance.json").read_text())["valid_loss"]


@pytest.fixture(scope="module")
def one_and_two(data) -> Dict[str, Dict[str, torch.Tensor]]:
    root = data["root"]
    return {"one": train(pretrain(data, root / "one", 1)), "two": train(pretrain(data, root / "two", 2)),
            "start": train(pretrain(data, root / "start", 1, epochs=1, lr=1e-9))}


def test_two_processes_train_exactly_what_one_does_where_no_utterance_depends_on_its_batch(data):
    # With batch normalization frozen and cuts of one length (no padding), an utterance's output
    # does not depend on the others in its batch: the only difference two processes may make is
    # the order of float sums. A process that divided by its own frames, or stepped without DDP's
    # averaging, or drew other batches, ends far off.
    root = data["root"] / "exact"
    cuts = root / "cuts.jsonl.gz"
    feature_cuts(root / "feats", "e", 20, seed=1, frames_range=(80, 81)).to_file(cuts)
    worker = [str(REPO_ROOT / "tests" / "distributed_worker.py"), str(cuts), str(data["lang"])]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for command in ([sys.executable, *worker, str(root / "one")],
                    [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                     str(free_local_port()), *worker, str(root / "two")]):
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = (torch.load(root / name / "model.pt") for name in ("one", "two"))
    assert one["step"] == two["step"] > 0 and two["processes"] == 2
    differences = {k: float((one["model"][k] - two["model"][k]).abs().max()) for k in one["model"]
                   if one["model"][k].is_floating_point()}
    assert max(differences.values()) < 1e-5, differences


def test_with_batch_normalization_two_processes_train_as_far_as_one(data, one_and_two):
    # Batch normalization normalizes each process's share alone, so the weights take another
    # path; the same steps on the same utterances must still bring the validation loss as far:
    # within a quarter of what training gained from the start (measured: 0.830 vs 0.850 from 1.128).
    root = data["root"]
    gained = valid_loss(root / "start") - valid_loss(root / "one")
    assert gained > 0
    assert abs(valid_loss(root / "two") - valid_loss(root / "one")) < 0.25 * gained
    provenance = json.loads((root / "two" / "provenance.json").read_text())
    assert provenance["processes"] == 2
    assert provenance["steps"] == json.loads((root / "one" / "provenance.json").read_text())["steps"]


def test_rank_0_alone_writes_logs_and_checkpoints(data, one_and_two):
    log = (data["root"] / "two" / "log" / "log-train.txt").read_text()
    for epoch in (1, 2, 3):
        assert log.count(f"epoch {epoch}: train loss") == 1, log
    assert "; process 0 of 2 (gloo)" in log
    assert sorted(p.name for p in (data["root"] / "two").glob("epoch-*.pt")) == ["epoch-1.pt", "epoch-2.pt",
                                                                                 "epoch-3.pt"]


def test_a_killed_two_process_run_resumes_to_the_uninterrupted_weights(data, one_and_two):
    exp_dir = data["root"] / "killed"
    command = pretrain(data, exp_dir, 2, save_every_steps=1)
    # Its own session: the kill takes the launcher, torchrun and both workers.
    proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 120
    while not list(exp_dir.glob("checkpoint-*.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert list(exp_dir.glob("checkpoint-*.pt")), "no mid-epoch checkpoint before the kill"
    assert not (exp_dir / "model.pt").exists(), "the run ended before the kill"
    resumed = train(command)
    log = (exp_dir / "log" / "log-train.txt").read_text()
    assert "resuming from" in log and "checkpoint-" in log.split("resuming from")[1].splitlines()[0]
    # save_every_steps is part of the config, not of what training computes: same weights.
    assert all(torch.equal(resumed[k], one_and_two["two"][k]) for k in resumed)
