"""The voice families of the embedded corpus (local/voices.py): each one speaks, 16 kHz float32,
the same samples for the same speaker, text and seed, and a missing engine names its package."""
import hashlib
import subprocess
import sys
from importlib import metadata
from typing import Dict

import numpy as np
import pytest

import local.voices as voices
from local.voices import FAMILIES, Speaker, speak
from tests.conftest import REPO_ROOT

TEXT = "SET A TIMER FOR TEN MINUTES"
# One speaker per family, every setting of the family given (the config draws them in ranges).
SPEAKERS: Dict[str, Speaker] = {
    "espeak-ng": Speaker("t", "espeak-ng", "en-us+m3", (("rate", 160), ("pitch", 45), ("formant", 0.95))),
    "flite": Speaker("t", "flite", "awb", (("duration_stretch", 1.05), ("f0_mean", 120), ("formant", 1.04))),
    "piper": Speaker("t", "piper", "en_US-joe-medium",
                     (("length_scale", 1.1), ("noise_scale", 0.6), ("noise_w", 0.8), ("formant", 0.97))),
    "rhvoice": Speaker("t", "rhvoice", "slt", (("rate", 105), ("pitch", 95), ("formant", 1.02))),
    "pico": Speaker("t", "pico", "en-GB", (("tempo", 1.08), ("formant", 0.96))),
    "mbrola": Speaker("t", "mbrola", "mb-us2", (("rate", 170), ("pitch", 55), ("formant", 1.03))),
}


def digest(audio: np.ndarray) -> str:
    return hashlib.sha256(audio.tobytes()).hexdigest()


def median_f0(audio: np.ndarray, sample_rate: int = 16000) -> float:
    """Median autocorrelation pitch of the voiced 40 ms frames, Hz."""
    frame, found = int(0.04 * sample_rate), []
    for start in range(0, len(audio) - frame, frame // 4):
        x = audio[start:start + frame].astype(np.float64)
        x -= x.mean()
        if np.sqrt(np.mean(x ** 2)) < 0.02:
            continue
        ac = np.correlate(x, x, "full")[frame - 1:]
        lo, hi = sample_rate // 400, sample_rate // 60
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.5 * ac[0]:
            found.append(sample_rate / lag)
    return float(np.median(found))


def test_every_family_is_tested() -> None:
    assert sorted(SPEAKERS) == FAMILIES.names()
    for name, speaker in SPEAKERS.items():
        assert [k for k, _ in speaker.settings] == list(FAMILIES.get(name).settings), name


@pytest.mark.parametrize("family", sorted(SPEAKERS))
def test_family_speaks_16k_float32_speech_deterministically(family: str) -> None:
    speaker = SPEAKERS[family]
    assert FAMILIES.get(family)().missing([speaker.voice]) is None
    audio = speak(speaker, TEXT, seed=3)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 1.0 < len(audio) / 16000 < 4.0           # six words at 16 kHz, not at 22.05 or 24 kHz
    assert 0.02 < float(np.sqrt(np.mean(audio ** 2))) and float(np.max(np.abs(audio))) <= 1.0
    speak(speaker, "SOMETHING ELSE IN BETWEEN", seed=4)   # no state carried from one call to the next
    assert digest(speak(speaker, TEXT, seed=3)) == digest(audio)


def test_piper_noise_comes_from_the_seed_in_any_process() -> None:
    speaker = SPEAKERS["piper"]
    here = digest(speak(speaker, TEXT, seed=3))
    assert digest(speak(speaker, TEXT, seed=4)) != here   # noise_scale and noise_w are in use
    code = ("import hashlib; from tests.test_voices import SPEAKERS, TEXT; from local.voices import speak; "
            "print(hashlib.sha256(speak(SPEAKERS['piper'], TEXT, seed=3).tobytes()).hexdigest())")
    other = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    assert other.stdout.strip() == here


def test_formant_setting_scales_pitch_at_the_same_duration() -> None:
    plain = Speaker("t", "espeak-ng", "en-us+m3")
    shifted = Speaker("t", "espeak-ng", "en-us+m3", (("formant", 1.1),))
    a, b = speak(plain, TEXT), speak(shifted, TEXT)
    assert len(b) == pytest.approx(len(a), rel=0.02)
    assert median_f0(b) / median_f0(a) == pytest.approx(1.1, abs=0.04)


@pytest.mark.parametrize("family, voice, tool, package", [
    ("espeak-ng", "en-us+m3", "espeak-ng", "apt-get install espeak-ng"),
    ("flite", "awb", "flite", "apt-get install flite"),
    ("rhvoice", "slt", "RHVoice-test", "apt-get install rhvoice rhvoice-english"),
    ("pico", "en-US", "pico2wave", "apt-get install libttspico-utils"),
    ("mbrola", "mb-us1", "mbrola", "apt-get install espeak-ng mbrola"),
])
def test_missing_engine_names_its_debian_packages(family: str, voice: str, tool: str, package: str,
                                                  monkeypatch) -> None:
    which = voices.shutil.which
    monkeypatch.setattr(voices.shutil, "which", lambda name: None if name == tool else which(name))
    assert f"{tool} not found: install the Debian package" in FAMILIES.get(family)().missing([voice])
    assert f"`{package}`" in FAMILIES.get(family)().missing([voice])


def test_missing_voice_data_names_its_package(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(voices.Mbrola, "database_dir", tmp_path)
    assert "apt-get install mbrola-us3" in FAMILIES.get("mbrola")().missing(["mb-us3"])
    monkeypatch.setattr(voices.RHVoice, "voice_dir", tmp_path)
    assert "apt-get install rhvoice-english" in FAMILIES.get("rhvoice")().missing(["alan"])


def test_missing_piper_names_its_pip_package(monkeypatch) -> None:
    version = metadata.version

    def without_piper(name: str) -> str:
        if name == "piper-tts":
            raise metadata.PackageNotFoundError(name)
        return version(name)

    monkeypatch.setattr(voices.metadata, "version", without_piper)
    problem = FAMILIES.get("piper")().missing(["en_US-joe-medium"])
    assert "piper-tts is not installed" in problem and "pip install -r requirements.txt" in problem
