"""Wall time of the whole default run from nothing, of the cached rerun and of a dry run, with
every job's seconds and peak memory from its Snakemake benchmark file.

    .venv/bin/python bench/pipeline.py [--cores 8] [--configfile config/tiny.yaml] [--keep DIR]
    .venv/bin/python bench/pipeline.py --built DIR    # a tree built before: rerun, dry run, jobs

``--built`` must name a tree built by this same commit and config: Snakemake reruns the jobs
whose code or params changed, so a tree from another commit is rebuilt, not measured. It keeps
the full run's wall time that ``--keep`` wrote into bench/results/pipeline.json when that
result is of this same commit (``make bench`` after ``bench/pipeline.py --keep .``).

Runs ``snakemake --cores N exp/finetuned/wer.txt`` in a fresh working directory (synthesis,
features, lang, pretraining, fine-tuning, scratch, decoding, scoring, time to target, report),
prints the wall time against the goal (40 min on a 2-core machine for the default config,
whatever ``--cores`` says: the rules never keep more threads busy than the machine has
cores), then times the second call ("Nothing to be done", goal <= 5 s) and a dry run (``-n``),
and lists each job's seconds and peak RSS (memory). Writes bench/results/pipeline.json.
Measure alone: other work on 2 cores slows torch training several-fold.
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
from results_file import RESULTS_DIR, current_commit, write_results  # noqa: E402


def snakemake(workdir: Path, cores: int, configfiles: list, *options: str) -> float:
    command = [sys.executable, "-m", "snakemake", "-s", str(REPO_ROOT / "Snakefile"), "exp/finetuned/wer.txt",
               "--cores", str(cores), "-d", str(workdir), *options]
    if configfiles:
        command += ["--configfile", *configfiles]
    started = time.time()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.time() - started


def job_figures(workdir: Path) -> dict:
    """{rule/job: {seconds, max_rss_mb}} from the benchmark TSVs under logs/."""
    jobs = {}
    for tsv in sorted((workdir / "logs").glob("**/*.benchmark.tsv")):
        with open(tsv) as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        rss = row.get("max_rss", "NA")
        jobs[str(tsv.relative_to(workdir / "logs")).replace(".benchmark.tsv", "")] = {
            "seconds": float(row["s"]), "max_rss_mb": float(rss) if rss not in ("NA", "-") else None}
    return jobs


def full_run_of_this_commit() -> "float | None":
    """The full run's seconds from an earlier ``--keep`` run of this commit, else None."""
    earlier = RESULTS_DIR / "pipeline.json"
    if not earlier.exists():
        return None
    figures = json.loads(earlier.read_text())
    return figures.get("full_run_seconds") if figures.get("commit") == current_commit() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=8, help="what Snakemake is told (default 8, as the design's command)")
    parser.add_argument("--configfile", nargs="*", default=[], help="presets over config/config.yaml")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--keep", type=Path, default=None, help="run in this directory and keep it")
    where.add_argument("--built", type=Path, default=None, help="a tree already built: no full run")
    args = parser.parse_args()
    workdir = args.built or args.keep or Path(tempfile.mkdtemp(prefix="speechtune-bench-"))
    configfiles = [str(Path(c).resolve()) for c in args.configfile]
    full = full_run_of_this_commit() if args.built else snakemake(workdir, args.cores, configfiles)
    cached = snakemake(workdir, args.cores, configfiles)
    dry = snakemake(workdir, args.cores, configfiles, "-n")
    machine = os.cpu_count()
    if full is not None:
        print(f"full run: {full:.0f} s ({full / 60:.1f} min), --cores {args.cores} on {machine} cores; "
              f"goal 40 min: {full / 2400:.2f}x of it")
    print(f"second call (nothing to do): {cached:.1f} s; goal 5 s: {cached / 5:.2f}x of it; dry run {dry:.1f} s")
    jobs = job_figures(workdir)
    print(f"{'rule/job':<48} {'seconds':>8} {'peak MB':>8}")
    for job, figures in jobs.items():
        rss = figures["max_rss_mb"]
        print(f"{job:<48} {figures['seconds']:>8.1f} {rss if rss is None else round(rss):>8}")
    peak = max(jobs.items(), key=lambda item: item[1]["max_rss_mb"] or 0)
    print(f"largest peak memory: {peak[0]}, {peak[1]['max_rss_mb']:.0f} MB")
    write_results("pipeline", {"full_run_seconds": None if full is None else round(full, 1),
                               "noop_rerun_seconds": round(cached, 2), "dry_run_seconds": round(dry, 2),
                               "cores_argument": args.cores, "configfiles": args.configfile, "jobs": jobs})
    if args.keep is None and args.built is None:
        print(f"(working directory {workdir} left for inspection; delete it when done)")


if __name__ == "__main__":
    main()
