"""Wall time of the whole default run, from nothing, and of the cached rerun.

    .venv/bin/python bench/pipeline.py [--cores 2] [--configfile config/tiny.yaml] [--keep DIR]

Runs ``snakemake --cores N exp/finetuned/wer.txt`` in a fresh working directory (synthesis,
features, lang, pretraining, fine-tuning, scratch, decoding, scoring, report), prints the
wall time against the goal (30 min on 2 cores for the default config), the seconds of every
rule from its Snakemake benchmark file, then times the second call ("Nothing to be done",
goal < 5 s).
"""
import argparse
import csv
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
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--configfile", nargs="*", default=[], help="presets over config/config.yaml")
    parser.add_argument("--keep", type=Path, default=None, help="run in this directory and keep it")
    args = parser.parse_args()
    workdir = args.keep or Path(tempfile.mkdtemp(prefix="speechtune-bench-"))
    configfiles = [str(Path(c).resolve()) for c in args.configfile]
    full = snakemake(workdir, args.cores, configfiles)
    cached = snakemake(workdir, args.cores, configfiles)
    print(f"full run: {full:.0f} s ({full / 60:.1f} min) on {args.cores} cores; goal 30 min: {full / 1800:.2f}x of it")
    print(f"second call (nothing to do): {cached:.1f} s; goal 5 s")
    print(f"{'rule/job':<40} {'seconds':>8}")
    for tsv in sorted((workdir / "logs").glob("*/*.benchmark.tsv")):
        with open(tsv) as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        print(f"{str(tsv.relative_to(workdir / 'logs')).replace('.benchmark.tsv', ''):<40} {float(row['s']):>8.1f}")
    if args.keep is None:
        print(f"(working directory {workdir} left for inspection; delete it when done)")


if __name__ == "__main__":
    main()
