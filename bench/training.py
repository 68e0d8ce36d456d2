"""Training speed: input frames per second of pretraining and of fine-tuning steps, and the
share of training time spent waiting for the next batch (goal < 10%), in one run.

    cd <a built tree> && <repo>/.venv/bin/python <repo>/bench/training.py [--minutes 5] [--threads 2]
        [--config PRESET]

Reads a built tree (the main target run first): source_train and target_train cuts with
features, the lang dirs, exp/pretrained/model.pt. Runs the real stages (``stages.pretrain`` on
the first ``--minutes`` of source_train, ``stages.finetune`` and ``stages.scratch`` on
target_train), one epoch each, into a temporary directory, and reads what the training loop
records in provenance.json: frames, train_seconds, data_wait_seconds. Writes
bench/results/training.json.
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
from speechtune import experiment as ex  # noqa: E402
from speechtune.config import DEFAULT_CONFIG_PATH, load_config  # noqa: E402
from speechtune.data.cuts import load_cuts  # noqa: E402
from results_file import write_results  # noqa: E402


def run_stage(stage: str, args: list, sections: dict, threads: int, seed: int) -> dict:
    out_dir = Path(args[-1])
    result = subprocess.run([sys.executable, "-m", f"stages.{stage}", *map(str, args), "--threads", str(threads),
                             "--device", "cpu", "--config-json", json.dumps(sections), "--seed", str(seed)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"stages.{stage} failed:\n{result.stderr[-3000:]}")
    return json.loads((out_dir / "provenance.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5, help="of source_train for the pretraining epoch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", type=Path, action="append", default=[], help="presets layered on the default")
    args = parser.parse_args()
    config = load_config([DEFAULT_CONFIG_PATH, *args.config])
    one_epoch = {"epochs": 1, "save_every_steps": 0, "average_last": 1}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        source = load_cuts(Path(ex.feature_cuts("source_train")))
        subset = source.subset(first=max(1, int(len(source) * args.minutes * 60 / sum(c.duration for c in source))))
        subset_path = Path(tmp) / "source_subset_cuts.jsonl.gz"
        subset.to_file(subset_path)
        sections = ex.training_sections(config, ex.BASELINE)
        sections = {**sections, "pretrain": {**sections["pretrain"], **one_epoch}}
        results["pretrain"] = run_stage("pretrain", [subset_path, ex.lang_dir(config, "source"), Path(tmp) / "pretrain"],
                                        sections, args.threads, config["seed"])
        for system, stage in ((ex.PLAIN, "finetune"), (ex.SCRATCH, "scratch")):
            sections = ex.training_sections(config, system)
            sections["finetune"] = {**sections["finetune"], **one_epoch}
            inputs = ex.training_inputs(config, system)
            positional = ([inputs["init"]] if stage == "finetune" else []) + [inputs["cuts"], inputs["valid"],
                                                                                inputs["lang"], Path(tmp) / system]
            keep = {"finetune": ["loss", "finetune"], "scratch": ["model", "loss", "finetune", "scratch"]}[stage]
            results[system] = run_stage(stage, positional, {k: sections[k] for k in keep}, args.threads, config["seed"])
    print(f"{'training':<12} {'frames':>10} {'seconds':>8} {'frames/s':>9} {'data wait':>10}")
    summary = {}
    for name, provenance in results.items():
        rate = provenance["frames"] / provenance["train_seconds"]
        wait = provenance["data_wait_seconds"] / provenance["train_seconds"]
        summary[name] = {"frames": provenance["frames"], "train_seconds": provenance["train_seconds"],
                         "frames_per_second": round(rate, 1), "data_wait_fraction": round(wait, 4)}
        print(f"{name:<12} {provenance['frames']:>10} {provenance['train_seconds']:>8.1f} {rate:>9.0f} "
              f"{100 * wait:>9.1f}%   (goal < 10%)")
    write_results("training", {"threads": args.threads, "source_minutes": args.minutes, "results": summary})


if __name__ == "__main__":
    main()
