"""The whole Snakemake chain on the tiny preset, corpus -> WER: every system scored on both
test sets, cached, and rerunning only what a changed key feeds."""
import json
import re
from html import escape
import subprocess
import sys
from pathlib import Path
import os
from typing import Dict, List, Tuple

import pytest
import yaml
from lhotse import CutSet

from speechtune.config import load_config
from speechtune.experiment import TESTSETS, sweep_variants, system_names
from tests.conftest import MAIN_TARGET, PRESETS, REPO_ROOT, TINY, snakemake

TINY_CONFIG = load_config([REPO_ROOT / "config" / "config.yaml", *PRESETS])
SYSTEMS = system_names(TINY_CONFIG)


def most_busy_threads(output: str) -> int:
    """The most cpu_threads that Snakemake's log shows held by jobs running at once (a job runs
    from its block, which ends at a blank line, to its 'Finished job N.')."""
    running: Dict[str, int] = {}
    job: Dict[str, str] = {}
    most = 0
    for line in output.splitlines() + [""]:
        line = line.strip()
        if re.match(r"(local)?rule \w+:$", line):
            job = {}
        elif line.startswith("jobid: "):
            job["id"] = line.split()[1]
        elif line.startswith("resources: "):
            found = re.search(r"cpu_threads=(\d+)", line)
            job["threads"] = found.group(1) if found else "0"
        elif not line and "id" in job:
            running[job["id"]] = int(job.get("threads", 0))
            most = max(most, sum(running.values()))
            job = {}
        elif line.startswith("Finished job "):
            running.pop(line.split()[2].rstrip("."), None)
    return most


def test_jobs_never_keep_more_threads_busy_than_the_machine_has_cores(built):
    output = (built / "snakemake.out").read_text()
    assert "cpu_threads=2" in output  # training and decoding hold two each
    assert 2 <= most_busy_threads(output) <= (os.cpu_count() or 1)


def test_main_target_scores_every_system_on_both_test_sets(built):
    assert {"pretrained", "finetuned", "finetuned_mmi", "finetuned_kld", "finetuned_l2sp",
            "finetuned_rehearsal", "adapted", "adapted_lhuc", "scratch"} <= set(SYSTEMS)
    report = json.loads((built / "exp" / "report.json").read_text())
    assert sorted(report["systems"]) == sorted(SYSTEMS)
    for system in SYSTEMS:
        entry = report["systems"][system]
        assert entry["train_seconds"] > 0 and 0 < entry["trainable_parameters"]
        for testset in TESTSETS:
            scores = entry[testset]
            assert set(scores) == {"wer", "words", "ins", "del", "sub", "ci95"}
            assert scores["words"] > 0 and scores["ci95"][0] <= scores["wer"] <= scores["ci95"][1]
            assert scores["wer"] == pytest.approx(100 * (scores["ins"] + scores["del"] + scores["sub"]) / scores["words"], abs=1e-3)
            wer_txt = (built / "exp" / system / "decode" / testset / "hlg" / "wer.txt").read_text()
            assert wer_txt.startswith(f"%WER {scores['wer']:.2f} [ ")
    main = (built / MAIN_TARGET).read_text()
    assert main == (built / "exp" / "finetuned" / "decode" / "target_test" / "hlg" / "wer.txt").read_text()
    assert "| finetuned |" in (built / "exp" / "report.md").read_text()
    # Adapters train alone; the source domain bypasses them: the pretrained model's WER there.
    systems = report["systems"]
    assert systems["adapted_lhuc"]["trainable_parameters"] < systems["adapted"]["trainable_parameters"] \
        < systems["finetuned"]["trainable_parameters"]
    assert systems["adapted"]["source_test"] == systems["pretrained"]["source_test"]
    assert systems["pretrained"]["forgetting"] == 0.0
    against_pretrained = {c["system"] for c in report["comparisons"] if c["against"] == "pretrained"}
    assert against_pretrained == set(SYSTEMS) - {"pretrained"}
    time_to_target = json.loads((built / "exp" / "time_to_target.json").read_text())
    for system in ("finetuned", "scratch"):
        epochs = time_to_target["systems"][system]["epochs"]
        assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1)) and epochs
        assert all(0 <= e["dev_wer"] for e in epochs)
    html = (built / "exp" / "report.html").read_text()
    assert all(system in html for system in SYSTEMS) and "95% CI" in html
    assert html.index("What fine-tuning bought") < html.index("Word error rates") and escape(time_to_target["statement"]) in html


def test_alpha_sweep_is_one_target(built):
    snakemake(built, "alpha_sweep")
    sweep = json.loads((built / "exp" / "alpha_sweep.json").read_text())
    for system in sweep_variants(TINY_CONFIG):
        assert system in sweep["systems"] and system.startswith(f"finetuned_{sweep['systems'][system]['regularizer']}_a")
    assert (built / "exp" / "alpha_sweep_alpha.png").stat().st_size > 0


def test_features_logs_and_provenance_are_in_place(built, monkeypatch):
    monkeypatch.chdir(built)  # manifests hold paths relative to the workflow's directory, as Kaldi's
    for subset in ["source_train", "source_test", "target_train", "target_dev", "target_test"]:
        cut = next(iter(CutSet.from_file(built / "data" / "fbank" / f"{subset}_cuts.jsonl.gz")))
        assert cut.load_features().shape[1] == 80 and cut.supervisions[0].text
        assert (built / "logs" / "features" / "fbank" / f"{subset}.log").is_file()
    for directory in ["data/corpus/source", "data/lang_phone_target", "exp/finetuned"]:
        provenance = json.loads((built / directory / "provenance.json").read_text())
        assert {"config", "seed", "versions", "git_commit", "wall_seconds"} <= set(provenance)
    # The fine-tuned model is an icefall-format checkpoint.
    import torch

    checkpoint = torch.load(built / "exp" / "finetuned" / "model.pt", map_location="cpu")
    assert {"model", "optimizer", "epoch"} <= set(checkpoint)


def test_second_call_has_nothing_to_do(built):
    assert "Nothing to be done" in snakemake(built, MAIN_TARGET)


def planned_jobs(output: str) -> List[Tuple[str, Dict[str, str]]]:
    """(rule, wildcards) of every job in a dry run's output."""
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", output):
        rule = re.match(r"(?:local)?rule (\w+):\n", block)
        if rule:
            wildcards = re.search(r"wildcards: (.*)", block)
            pairs = wildcards.group(1).split(", ") if wildcards else []
            jobs.append((rule.group(1), dict(pair.split("=", 1) for pair in pairs)))
    return jobs


def test_changing_a_finetune_key_reruns_finetune_and_what_follows_only(built, tmp_path):
    """Snakemake's plan (a dry run) after a fine-tuning key changes: every system fine-tuned with
    the finetune section, and what reads their models; nothing upstream, no adapter."""
    override = tmp_path / "finetune.yaml"
    override.write_text(yaml.safe_dump({"finetune": {"lr": 0.0007}}))
    jobs = planned_jobs(snakemake(built, MAIN_TARGET, str(override), dry_run=True))
    finetuned = {wildcards["system"] for rule, wildcards in jobs if rule == "finetune"}
    assert "finetuned" in finetuned and not {"pretrained", "scratch"} & finetuned
    assert not any(system.startswith("adapted") for system in finetuned)
    assert {rule for rule, _ in jobs} == {"finetune", "decode", "score", "report", "time_to_target", "wer"}
    assert all(wildcards["system"] in finetuned for rule, wildcards in jobs if rule in ("decode", "score"))
    for system in finetuned:
        decoded = [testset.name for testset in (built / "exp" / system / "decode").iterdir()]
        planned = [wildcards["testset"] for rule, wildcards in jobs
                   if rule == "decode" and wildcards["system"] == system]
        assert sorted(planned) == sorted(decoded), system


def test_changing_a_target_synthesis_key_reruns_only_the_target_chain(built, tmp_path):
    """The plan after the target corpus' noise changes: its synthesis, data dirs and features;
    nothing of the source (its corpus, features and the pretrained model stay)."""
    override = tmp_path / "snr.yaml"
    override.write_text(yaml.safe_dump({"corpus": {"target": {"snr_db_range": [0, 3]}}}))
    jobs = planned_jobs(snakemake(built, "fbank", str(override), dry_run=True))
    splits = TINY_CONFIG["corpus"]["target"]["splits"]
    assert {rule for rule, _ in jobs} == {"corpus", "prepare", "features", "fbank"}
    assert all(wildcards["domain"] == "target" for rule, wildcards in jobs if rule in ("corpus", "prepare"))
    assert sorted(wildcards["split"] for rule, wildcards in jobs if rule == "prepare") == sorted(splits)
    # not target_train_sp: only the augmented system asks for it
    assert sorted(wildcards["subset"] for rule, wildcards in jobs if rule == "features") == sorted(
        f"target_{split}" for split in splits)


def test_training_killed_mid_epoch_resumes_from_its_checkpoint(built, tmp_path, monkeypatch):
    import signal
    import time

    monkeypatch.chdir(built)
    override = tmp_path / "resume.yaml"
    override.write_text(yaml.safe_dump({"pretrain": {"epochs": 3, "save_every_steps": 1, "max_duration": 5}}))
    exp_dir = built / "exp" / "killed"

    def pretrain(into: Path) -> list:
        return [sys.executable, "-m", "stages.pretrain", "data/fbank/source_train_cuts.jsonl.gz",
                "data/lang_phone_source", str(into), "--config", str(REPO_ROOT / "config" / "config.yaml"),
                "--config", TINY, "--config", str(override)]

    command = pretrain(exp_dir)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(exp_dir.glob("checkpoint-*.pt")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(exp_dir.glob("checkpoint-*.pt")), "no mid-epoch checkpoint before the kill"
    assert not (exp_dir / "model.pt").exists()
    subprocess.run(command, check=True, capture_output=True)
    log = (exp_dir / "log" / "log-train.txt").read_text()
    assert "resuming from" in log and "checkpoint-" in log.split("resuming from")[1].splitlines()[0]
    # The resumed run ends where an uninterrupted one does (sampler state and weights restored;
    # CPU training is deterministic): the same weights, exactly.
    uninterrupted = built / "exp" / "uninterrupted"
    subprocess.run(pretrain(uninterrupted), check=True, capture_output=True)
    import torch

    resumed, straight = (torch.load(d / "model.pt")["model"] for d in (exp_dir, uninterrupted))
    assert all(torch.equal(resumed[k], straight[k]) for k in straight)


def test_the_learning_curve_trains_nested_subsets_with_each_seed(built):
    snakemake(built, "learning_curve")
    curve = json.loads((built / "exp" / "learning_curve.json").read_text())
    section = TINY_CONFIG["learning_curve"]
    for base in section["systems"]:
        points = curve["systems"][base]
        assert [p["minutes"] for p in points] == sorted(section["minutes"])
        assert all(sorted(p["wers"]) == sorted(map(str, section["seeds"])) for p in points)
    small, large = (CutSet.from_file(built / "data" / "fbank" / f"target_train_{m:g}min_cuts.jsonl.gz")
                    for m in sorted(section["minutes"]))
    assert set(small.ids) < set(large.ids)
    assert (built / "exp" / "learning_curve.png").is_file() and "| minutes |" in (built / "exp" / "learning_curve.md").read_text()


def test_cross_lingual_system_joins_the_report(built, tmp_path):
    """kaldi_ko_finetuned from a synthetic Kaldi model directory (the released one is an
    optional download): import, its front end's features, fine-tuning, decoding, the report.
    Last in this file: it changes the report's systems, which later calls would rebuild."""
    import torch

    from tests.test_kaldi_nnet3 import write_model_dir

    override = tmp_path / "kaldi_ko.yaml"
    override.write_text(yaml.safe_dump({"kaldi_ko": {"report": True, "model": str(write_model_dir(tmp_path / "ko"))}}))
    output = snakemake(built, "exp/report.json", str(override))
    assert "rule import_kaldi:" in output and "system=kaldi_ko_finetuned" in output
    assert "rule pretrain:" not in output  # the imported model replaces the pretrained start
    report = json.loads((built / "exp" / "report.json").read_text())
    entry = report["systems"]["kaldi_ko_finetuned"]
    assert all(entry[testset]["words"] > 0 for testset in TESTSETS)
    cut = next(iter(CutSet.from_file(built / "data" / "kaldi_ko" / "feats" / "target_train_cuts.jsonl.gz")))
    assert cut.features.type == "kaldi-mfcc-ivector" and cut.num_features == 4
    checkpoint = torch.load(built / "exp" / "kaldi_ko_finetuned" / "model.pt", map_location="cpu")
    assert checkpoint["model_params"]["type"] == "kaldi_nnet3" and checkpoint["tokens"] == torch.load(
        built / "exp" / "finetuned" / "model.pt", map_location="cpu")["tokens"]
