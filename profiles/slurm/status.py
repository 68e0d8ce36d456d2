#!/usr/bin/env python3
"""Snakemake 7's --cluster-status command for SLURM: print running, success or failed for one
job id, from sacct (the accounting database keeps finished jobs' exit states; without it a
finished job's outcome is unknown, so it is required), or from squeue while sacct has no record
of the job yet.

    status.py JOB_ID
"""
import subprocess
import sys

RUNNING = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
           "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT", "STOPPED"}


def state_of(job_id: str) -> str:
    try:
        sacct = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"],
                               capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        sys.exit("status.py: sacct (SLURM accounting) is not on PATH: it tells a finished job's success "
                 "from its failure; run on a host that has it, or without --cluster-status")
    states = [line.split()[0] for line in sacct.stdout.splitlines() if line.strip()]
    if sacct.returncode == 0 and states:
        return states[0]
    squeue = subprocess.run(["squeue", "-h", "-j", job_id, "-o", "%T"], capture_output=True, text=True, timeout=60)
    state = squeue.stdout.strip()
    return state or "PENDING"  # just submitted: in neither yet


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    state = state_of(sys.argv[1])
    print("success" if state == "COMPLETED" else "running" if state in RUNNING else "failed")


if __name__ == "__main__":
    main()
