"""Shared fixtures: small audio written with numpy + soundfile, Kaldi data dirs built from it;
``built``, the tiny pipeline run once per session for every test that needs trained systems."""
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import pytest
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parent.parent
# More cores than the machine has, as the design's `snakemake --cores 8 ...` on a laptop.
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO_ROOT / "Snakefile"), "--cores", "8"]
TINY = str(REPO_ROOT / "config" / "tiny.yaml")
# The tiny preset with every system the extended preset adds, so that each method runs here.
PRESETS = [TINY, str(REPO_ROOT / "config" / "extended.yaml")]
MAIN_TARGET = "exp/finetuned/wer.txt"


def write_tone(path: Path, seconds: float = 1.0, sample_rate: int = 16000, seed: int = 0) -> Path:
    """A tone plus a little noise: real audio for I/O tests that do not need speech."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    audio = 0.3 * np.sin(2 * np.pi * (200 + 50 * seed) * t) + 0.01 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.astype(np.float32), sample_rate, subtype="PCM_16")
    return path


def write_kaldi_dir(
    data_dir: Path, texts: Dict[str, str], wavs: Optional[Dict[str, Path]] = None
) -> Path:
    """A Kaldi data dir with one recording per utterance (1.5 s and up: long enough to say
    a short command); speaker = the id's prefix before '-'."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if wavs is None:
        wavs = {
            utt: write_tone(data_dir / "wav" / f"{utt}.wav", seconds=1.5 + 0.1 * i, seed=i)
            for i, utt in enumerate(sorted(texts))
        }
    (data_dir / "wav.scp").write_text("".join(f"{u} {wavs[u]}\n" for u in sorted(wavs)))
    (data_dir / "text").write_text("".join(f"{u} {texts[u]}\n" for u in sorted(texts)))
    (data_dir / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in sorted(texts)))
    return data_dir


@pytest.fixture
def kaldi_dir(tmp_path: Path) -> Path:
    texts = {
        "spk1-a": "turn on the kitchen lights",
        "spk1-b": "Set a timer, for ten minutes!",
        "spk2-c": "what's the weather",
        "spk2-d": "play some jazz",
    }
    return write_kaldi_dir(tmp_path / "kaldi", texts)


def snakemake(workdir: Path, target: str, *configfiles: str, env: Optional[Dict[str, str]] = None,
              dry_run: bool = False) -> str:
    """Run the pipeline on PRESETS (+ ``configfiles``) in ``workdir``; its output, or a failed
    assertion with the end of it. ``dry_run``: Snakemake's plan (each job's rule, wildcards and
    reason), nothing run."""
    # --configfile takes several files: the target must come before it.
    result = subprocess.run(
        SNAKEMAKE + [target, "-d", str(workdir), *(["--dry-run"] if dry_run else []),
                     "--configfile", *PRESETS, *configfiles],
        capture_output=True, text=True, env=env,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> Path:
    """The tiny chain built once per session (several minutes), with its Snakemake output in
    ``snakemake.out``. tests/test_pipeline.py changes it on purpose (reruns, extra systems);
    other tests only read it and write under their own tmp_path."""
    workdir = tmp_path_factory.mktemp("pipeline")
    output = snakemake(workdir, MAIN_TARGET)
    (workdir / "snakemake.out").write_text(output)
    return workdir
