#!/usr/bin/env python3
"""Snakemake 7's --cluster command for SLURM: submit one jobscript with sbatch, asking for the
job's threads and resources, and print the job id (Snakemake passes it to status.py).

    submit.py JOBSCRIPT

The job's properties are the JSON that Snakemake writes into the jobscript's
``# properties = {...}`` line (what ``snakemake.utils.read_job_properties`` reads; parsed here
so that any python3 runs this, not only the venv's).
"""
import json
import re
import subprocess
import sys
from pathlib import Path


def job_properties(jobscript: Path) -> dict:
    found = re.search(r"^# properties = (.*)$", jobscript.read_text(), flags=re.MULTILINE)
    if not found:
        sys.exit(f"submit.py: {jobscript} has no '# properties = ...' line: is it a Snakemake jobscript?")
    return json.loads(found.group(1))


def sbatch_command(properties: dict, jobscript: Path) -> list:
    """sbatch's options for one job: name, CPUs, memory, time limit, GPUs, log file."""
    resources = properties.get("resources", {})
    rule = properties.get("rule", "group")
    wildcards = "-".join(str(v) for v in properties.get("wildcards", {}).values())
    log_dir = Path("logs") / "slurm" / rule
    log_dir.mkdir(parents=True, exist_ok=True)  # sbatch drops the output when the folder is missing
    command = ["sbatch", "--parsable", f"--job-name=speechtune-{rule}" + (f"-{wildcards}" if wildcards else ""),
               f"--cpus-per-task={properties.get('threads', 1)}", f"--output={log_dir}/%j.log"]
    if "mem_mb" in resources:
        command.append(f"--mem={resources['mem_mb']}M")
    if "runtime" in resources:
        command.append(f"--time={resources['runtime']}")  # minutes
    if int(resources.get("gpus", 0)) > 0:
        command.append(f"--gpus={resources['gpus']}")
    return command + [str(jobscript)]


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    jobscript = Path(sys.argv[1])
    result = subprocess.run(sbatch_command(job_properties(jobscript), jobscript), capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"submit.py: sbatch failed ({result.returncode}): {result.stderr.strip()}")
    print(result.stdout.strip().split(";")[0])  # --parsable: "<id>" or "<id>;<cluster>"


if __name__ == "__main__":
    main()
