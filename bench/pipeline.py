"""Wall time of the whole default run, from nothing, and of the cached rerun.

    .venv/bin/python bench/pipeline.py [--cores 8] [--configfile config/tiny.yaml] [--keep DIR]

Runs ``snakemake --cores N exp/finetuned/wer.txt`` in a fresh working directory (synthesis,
features, lang, pretraining, fine-tuning, scratch, decoding, scoring, time to target, report),
prints the wall time against the goal (40 min on a 2-core machine for the default config,
whatever ``--cores`` says: the rules never keep more threads busy than the machine has
cores), the seconds of every job from its Snakemake benchmark file, then times the second
call ("Nothing to be done", goal <= 5 s). Writes bench/results/pipeline.json.
"""
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def snakemake(workdir: Path, cores: int, configfiles: list) -> float:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO_ROOT / "Snakefile"), "exp/finetuned/wer.txt",
               "--cores", str(cores), "-d", str(workdir)]
    if configfiles:
        command += ["--configfile", *configfiles]
    started = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=8, help="what Snakemake is told (default 8, as the design's command)")
    parser.add_argument("--configfile", nargs="*", default=[], help="presets over config/config.yaml")
    parser.add_argument("--keep", type=Path, default=None, help="run in this directory and keep it")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="speechtune-bench-"))
    configfiles = [str(Path(c).resolve()) for c in args.configfile]
    full = snakemake(workdir, args.cores, configfiles)
    cached = snakemake(workdir, args.cores, configfiles)
    machine = os.cpu_count()
    print(f"full run: {full:.0f} s ({full / 60:.1f} min), --cores {args.cores} on {machine} cores; "
          f"goal 40 min: {full / 2400:.2f}x of it")
    print(f"second call (nothing to do): {cached:.1f} s; goal 5 s: {cached / 5:.2f}x of it")
    jobs = {}
    for tsv in sorted((workdir / "logs").glob("**/*.benchmark.tsv")):
        with open(tsv) as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        jobs[str(tsv.relative_to(workdir / "logs")).replace(".benchmark.tsv", "")] = float(row["s"])
    print(f"{'rule/job':<48} {'seconds':>8}")
    for job, seconds in jobs.items():
        print(f"{job:<48} {seconds:>8.1f}")
    results = REPO_ROOT / "bench" / "results" / "pipeline.json"
    results.parent.mkdir(exist_ok=True)
    commit = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip()
    results.write_text(json.dumps({"commit": commit, "full_run_seconds": round(full, 1), "noop_rerun_seconds": round(cached, 2),
                                   "cores_argument": args.cores, "machine_cores": machine,
                                   "configfiles": args.configfile, "jobs": jobs}, indent=2) + "\n")
    if args.keep is None:
        print(f"(working directory {workdir} left for inspection; delete it when done)")


if __name__ == "__main__":
    main()
