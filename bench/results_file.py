"""What every benchmark writes: bench/results/<name>.json with the commit and the machine, so a
figure in docs/benchmarks.md names where it came from."""
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def current_commit() -> str:
    """The commit the benchmarks run (``git describe --always``), with ``-dirty`` when a tracked
    file outside bench/results/ differs from it: a benchmark rewriting its results does not make
    the next one's code dirty."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(RESULTS_DIR.parent.parent), *args],
                              capture_output=True, text=True).stdout.strip()
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)bench/results")
    return git("describe", "--always") + ("-dirty" if changed else "")


def write_results(name: str, figures: Mapping[str, Any]) -> Path:
    """Write ``figures`` to bench/results/<name>.json beside the commit (``current_commit``),
    the machine's cores and CPU, the load as it ended and the date."""
    commit = current_commit()
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps({
        "commit": commit, "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
        "load_average_1min": round(os.getloadavg()[0], 2), "date": time.strftime("%Y-%m-%d %H:%M"),
        **figures}, indent=2) + "\n")
    print(f"wrote {path}")
    return path
