"""Atomic writes and provenance: a killed or failed stage leaves nothing a later stage trusts."""
import json
import signal
import subprocess
import sys
import time

import pytest

from speechtune.provenance import atomic_dir, atomic_file, git_commit, StageRun
from tests.conftest import REPO_ROOT


def test_atomic_dir_appears_whole_or_not_at_all(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("stage failed")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(final) as tmp:
        (tmp / "whole.txt").write_text("whole")
        assert not final.exists()
    assert (final / "whole.txt").read_text() == "whole"


def test_atomic_file_keeps_the_extension_and_replaces_the_old_file(tmp_path):
    final = tmp_path / "cuts.jsonl.gz"
    final.write_text("old")
    with atomic_file(final) as tmp:
        assert tmp.name.endswith(".jsonl.gz") and tmp.parent == tmp_path
        tmp.write_text("new")
        assert final.read_text() == "old"
    assert final.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["cuts.jsonl.gz"]


KILLED_WRITER = """
import sys, time
from pathlib import Path
from speechtune.provenance import atomic_dir
with atomic_dir(Path(sys.argv[1])) as tmp:
    (tmp / "part").write_text("x")
    print("writing", flush=True)
    time.sleep(60)
"""


def test_a_killed_writer_leaves_no_output_and_the_rerun_cleans_up(tmp_path):
    final = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(final)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not final.exists()
    assert len(list(tmp_path.glob(".tmp-*-out"))) == 1  # what the kill left, under a name nobody reads
    with atomic_dir(final) as tmp:
        (tmp / "done").write_text("y")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_provenance_records_config_seed_versions_commit_and_time(tmp_path):
    run = StageRun("demo", {"a": 1}, seed=7)
    time.sleep(0.05)
    run.write_provenance(tmp_path / "provenance.json", utterances=3)
    record = json.loads((tmp_path / "provenance.json").read_text())
    assert record["stage"] == "demo" and record["config"] == {"a": 1} and record["seed"] == 7
    assert record["utterances"] == 3 and record["wall_seconds"] >= 0.05
    assert record["versions"]["torch"].startswith("1.13.1") and record["versions"]["k2"] == "1.23.4"
    assert record["git_commit"] == git_commit() and record["git_commit"] != ""


def test_a_second_writer_leaves_a_live_writers_temporaries_alone(tmp_path):
    final = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(final)], cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "writing"
        with atomic_dir(final) as tmp:  # a second process writing the same output meanwhile
            (tmp / "done").write_text("y")
        (live,) = tmp_path.glob(".tmp-*-out")  # the first writer's work is still there
        assert (live / "part").read_text() == "x"
    finally:
        proc.kill()
        proc.wait()
