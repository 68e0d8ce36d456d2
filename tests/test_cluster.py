"""The SLURM profile (profiles/slurm/): the tiny chain runs with every job submitted through a
fake ``sbatch`` that records its options and runs the job here, a fake ``sacct``/``squeue``
answering for it; every rule's jobs ask for that rule's threads, memory and time limit. That run
is also the second run from nothing: in another directory, with another string-hash seed, it
must give what ``built`` holds, bit for bit."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from speechtune.config import load_config
from speechtune.experiment import system_names
from tests.conftest import MAIN_TARGET, PRESETS, REPO_ROOT

PROFILE = REPO_ROOT / "profiles" / "slurm"
FAKE_SBATCH = f"""#!{sys.executable}
import json, os, subprocess, sys
from pathlib import Path
state = Path(os.environ["FAKE_SLURM_DIR"])
job_id = len(list(state.glob("*.job"))) + 1
args = sys.argv[1:]
(state / f"{{job_id}}.job").write_text(json.dumps(args))
output = next(a.split("=", 1)[1] for a in args if a.startswith("--output=")).replace("%j", str(job_id))
# Detached from sbatch's stdout, which Snakemake reads to its end: jobs run side by side.
subprocess.Popen(["bash", "-c", 'bash "$0" > "$1" 2>&1; echo $? > "$2.tmp"; mv "$2.tmp" "$2"',
                  args[-1], output, str(state / f"{{job_id}}.rc")], start_new_session=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(f"{{job_id}};fakecluster")
"""
FAKE_SACCT = """#!/bin/bash
# sacct -j ID ...: the finished job's state, nothing while it runs
rc="$FAKE_SLURM_DIR/$2.rc"
[ -f "$rc" ] || exit 0
[ "$(cat "$rc")" = 0 ] && echo COMPLETED || echo FAILED
"""
FAKE_SQUEUE = """#!/bin/bash
# squeue -h -j ID -o %T: RUNNING until the job has finished
[ -f "$FAKE_SLURM_DIR/$4.rc" ] || echo RUNNING
"""
# Fewer systems than ``built`` (a cluster job pays for its own Snakemake start): the main three,
# and the two whose batches draw most on the seed (rehearsal's source mix, augmentation).
FEWER_SYSTEMS = {"finetune_variants": {"finetuned_mmi": None, "finetuned_l2sp": None, "finetuned_kld": None},
                 "adapt_variants": {"adapted": None, "adapted_lhuc": None}}
CHAIN_RULES = {"corpus", "prepare", "features", "lang", "pretrain", "finetune", "scratch", "decode", "time_to_target",
               "report"}


@pytest.fixture(scope="module")
def submitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("slurm")
    fake_bin, state, workdir = root / "bin", root / "state", root / "work"
    for folder in (fake_bin, state, workdir):
        folder.mkdir()
    for name, script in (("sbatch", FAKE_SBATCH), ("sacct", FAKE_SACCT), ("squeue", FAKE_SQUEUE)):
        (fake_bin / name).write_text(script)
        (fake_bin / name).chmod(0o755)
    preset = root / "fewer.yaml"
    preset.write_text(json.dumps(FEWER_SYSTEMS))
    # CI=true: Snakemake polls job status every second instead of every ten.
    env = dict(os.environ, PATH=f"{fake_bin}:{os.environ['PATH']}", FAKE_SLURM_DIR=str(state), CI="true",
               PYTHONHASHSEED="7")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(REPO_ROOT / "Snakefile"), MAIN_TARGET,
         "--profile", str(PROFILE), "-d", str(workdir), "--jobs", "2", "--latency-wait", "5",
         "--configfile", *PRESETS, str(preset)],
        capture_output=True, text=True, env=env, timeout=1500,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    jobs = [json.loads(p.read_text()) for p in sorted(state.glob("*.job"))]
    return workdir, jobs, load_config([REPO_ROOT / "config" / "config.yaml", *PRESETS, preset])


def option(args, name):
    return next(a.split("=", 1)[1] for a in args if a.startswith(f"--{name}="))


def test_the_chain_completes_through_the_cluster(submitted):
    workdir, _, config = submitted
    assert (workdir / "exp" / "finetuned" / "wer.txt").read_text().startswith("%WER ")
    assert json.loads((workdir / "exp" / "report.json").read_text())["systems"].keys() == set(system_names(config))
    assert list((workdir / "logs" / "slurm" / "pretrain").glob("*.log"))


def test_every_rule_is_submitted_with_its_resources(submitted):
    _, jobs, config = submitted
    rules = {option(args, "job-name").split("-")[1] for args in jobs}
    assert rules == CHAIN_RULES  # fbank, wer and score run locally
    for args in jobs:
        rule = option(args, "job-name").split("-")[1]
        asked = {**config["resources"]["default"], **config["resources"].get(rule, {})}
        assert option(args, "cpus-per-task") == str(asked["threads"]), (rule, args)
        assert option(args, "mem") == f"{asked['mem_mb']}M" and option(args, "time") == str(asked["runtime"])
        assert not any(a.startswith("--gpus") for a in args)  # gpus 0: not asked
        assert args[-1].endswith(".sh") and "--parsable" in args


def test_a_second_run_from_nothing_gives_identical_results(submitted, built):
    import torch

    again, _, config = submitted
    for system in system_names(config):
        testsets = sorted(p.name for p in (again / "exp" / system / "decode").iterdir())
        assert testsets == sorted(p.name for p in (built / "exp" / system / "decode").iterdir()), system
        for testset in testsets:
            for name in ("hyp.txt", "wer.txt", "per_utt.txt", "per_spk.txt"):
                path = Path("exp", system, "decode", testset, "hlg", name)
                assert (again / path).read_text() == (built / path).read_text(), path
        a = torch.load(built / "exp" / system / "model.pt")["model"]
        b = torch.load(again / "exp" / system / "model.pt")["model"]
        assert all(torch.equal(a[k], b[k]) for k in a), system


def test_a_failed_job_is_reported_failed(tmp_path):
    """status.py: the fake sacct's FAILED is a failure, and no sacct at all is an error, never a
    guessed success."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    (tmp_path / "7.rc").write_text("1\n")
    (fake_bin / "sacct").write_text(FAKE_SACCT)
    (fake_bin / "sacct").chmod(0o755)
    env = dict(os.environ, PATH=f"{fake_bin}:{os.environ['PATH']}", FAKE_SLURM_DIR=str(tmp_path))
    status = subprocess.run([sys.executable, str(PROFILE / "status.py"), "7"], capture_output=True, text=True, env=env)
    assert status.stdout.strip() == "failed"
    (fake_bin / "sacct").unlink()
    env["PATH"] = f"{fake_bin}:/usr/bin/false-dir"
    status = subprocess.run([sys.executable, str(PROFILE / "status.py"), "7"], capture_output=True, text=True, env=env)
    assert status.returncode != 0 and "sacct" in status.stderr
