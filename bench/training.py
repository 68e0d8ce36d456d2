"""Training speed: input frames per second of pretraining and of fine-tuning steps, and the
share of training time spent waiting for the next batch (goal < 10%), in one run; side by side
on each device (the CPU, and CUDA where torch and k2 have it) and process count (torch DDP).

    cd <a built tree> && <repo>/.venv/bin/python <repo>/bench/training.py [--minutes 5] [--threads 2]
        [--config PRESET] [--devices cpu cuda] [--processes 1 2]

Reads a built tree (the main target run first): source_train and target_train cuts with
features, the lang dirs, exp/pretrained/model.pt. Runs the real stages (``stages.pretrain`` on
the first ``--minutes`` of source_train, ``stages.finetune`` and ``stages.scratch`` on
target_train), one epoch each, into a temporary directory, and reads what the training loop
records in provenance.json: frames, train_seconds, data_wait_seconds. Writes
bench/results/training.json. Each device and process count trains the same epoch; the ratio
column is its frames per second over the first one's (the CPU, one process).
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
from speechtune.devices import select_device  # noqa: E402
from results_file import write_results  # noqa: E402


def run_stage(stage: str, args: list, sections: dict, threads: int, seed: int, device: str, processes: int) -> dict:
    out_dir = Path(args[-1])
    result = subprocess.run([sys.executable, "-m", f"stages.{stage}", *map(str, args), "--threads", str(threads),
                             "--device", device, "--processes", str(processes), "--config-json", json.dumps(sections),
                             "--seed", str(seed)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"stages.{stage} failed:\n{result.stderr[-3000:]}")
    return json.loads((out_dir / "provenance.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5, help="of source_train for the pretraining epoch")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", type=Path, action="append", default=[], help="presets layered on the default")
    parser.add_argument("--devices", nargs="+", choices=["cpu", "cuda"], default=None,
                        help="default: cpu, and cuda where torch and k2 have it")
    parser.add_argument("--processes", nargs="+", type=int, default=[1],
                        help="data-parallel process counts to compare (default 1)")
    args = parser.parse_args()
    devices = args.devices or ["cpu"] + (["cuda"] if select_device("auto").type == "cuda" else [])
    setups = [(device, processes) for device in devices for processes in args.processes]
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
        pretrain_sections = ex.training_sections(config, ex.BASELINE)
        pretrain_sections = {**pretrain_sections, "pretrain": {**pretrain_sections["pretrain"], **one_epoch}}
        for device, processes in setups:
            where = Path(tmp) / f"{device}-{processes}"
            results[("pretrain", device, processes)] = run_stage(
                "pretrain", [subset_path, ex.lang_dir(config, "source"), where / "pretrain"], pretrain_sections,
                args.threads, config["seed"], device, processes)
            for system, stage in ((ex.PLAIN, "finetune"), (ex.SCRATCH, "scratch")):
                sections = ex.training_sections(config, system)
                sections["finetune"] = {**sections["finetune"], **one_epoch}
                inputs = ex.training_inputs(config, system)
                positional = ([inputs["init"]] if stage == "finetune" else []) + [inputs["cuts"], inputs["valid"],
                                                                                    inputs["lang"], where / system]
                keep = {"finetune": ["loss", "finetune"], "scratch": ["model", "loss", "finetune", "scratch"]}[stage]
                results[(system, device, processes)] = run_stage(
                    stage, positional, {k: sections[k] for k in keep}, args.threads, config["seed"], device, processes)
    print(f"{'training':<12} {'device':>6} {'procs':>5} {'frames':>10} {'seconds':>8} {'frames/s':>9} {'ratio':>6} "
          f"{'data wait':>10}")
    summary = []
    for (name, device, processes), provenance in results.items():
        if provenance["train_seconds"] == 0:  # (provenance.json rounds to 0.1 s)
            raise SystemExit(f"{name} on {device}, {processes} processes, trained in under 0.1 s: too little to "
                             "time; train on more (--minutes, a larger preset)")
        rate = provenance["frames"] / provenance["train_seconds"]
        first = results[(name, *setups[0])]
        ratio = rate / (first["frames"] / first["train_seconds"])
        wait = provenance["data_wait_seconds"] / provenance["train_seconds"]
        summary.append({"training": name, "device": device, "processes": processes, "frames": provenance["frames"],
                        "train_seconds": provenance["train_seconds"], "frames_per_second": round(rate, 1),
                        "ratio_to_first": round(ratio, 2), "data_wait_fraction": round(wait, 4)})
        print(f"{name:<12} {device:>6} {processes:>5} {provenance['frames']:>10} {provenance['train_seconds']:>8.1f} "
              f"{rate:>9.0f} {ratio:>5.2f}x {100 * wait:>9.1f}%   (goal < 10%)")
    write_results("training", {"threads": args.threads, "source_minutes": args.minutes, "results": summary})


if __name__ == "__main__":
    main()
