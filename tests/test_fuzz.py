"""Seeded fuzz: a Kaldi data dir of 240 utterances, most of them damaged in one of the ways real
data is (cut-off, corrupt, empty, NaN or out-of-range audio, a wrong rate, too short or too long,
a missing file or line, a failing wav.scp command, an empty, non-UTF-8, markup-only or far too
long transcript; and harmless oddities: stereo, control characters, markup, a working command),
run through the stage CLIs prepare -> features -> lang -> one epoch of training -> decode.
No stage may end in a traceback or hang; every utterance is kept or skipped, once; every kept
one is intact (its normalized text, its audio's length)."""
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import soundfile as sf
import yaml
from lhotse import CutSet

from speechtune.text import normalize_text
from tests.conftest import REPO_ROOT, write_tone

NUM_UTTERANCES = 240
WORDS = "TURN ON OFF THE KITCHEN LIGHTS SET A TIMER FOR TEN MINUTES PLAY SOME JAZZ MUSIC".split()
# damage kind -> whether the utterance is kept
KINDS = {
    "none": True, "stereo": True, "control_chars": True, "markup": True, "good_command": True,
    "truncated": False, "corrupt": False, "empty_file": False, "nan": False, "inf": False, "huge": False,
    "wrong_rate": False, "too_short": False, "too_long": False, "missing_file": False,
    "failing_command": False, "empty_text": False, "non_utf8": False, "markup_only": False,
    "novel": False, "no_speaker": False, "no_audio_line": False,
}
PRESET = {
    "prepare": {"max_skip_fraction": 0.9, "max_duration": 3.0},
    "model": {"num_layers": 3, "full_rate_layers": 1, "hidden_dim": 32, "bottleneck_dim": 12, "prefinal_dim": 16},
    "pretrain": {"epochs": 1, "max_duration": 20, "warmup_steps": 1, "average_last": 1, "save_every_steps": 0,
                 "valid_fraction": 0.1},
}


def damage(kind: str, utt: str, wav: Path, rng: random.Random) -> Tuple[str, str, Dict[str, str]]:
    """Write ``utt``'s audio at ``wav`` damaged in the ``kind`` way; return (its wav.scp
    value, its raw text line, {index file: line} overrides)."""
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 5)))
    seconds = rng.uniform(1.2, 2.5)
    write_tone(wav, seconds=seconds, seed=rng.randint(0, 1000))
    value, overrides = str(wav), {}
    if kind == "stereo":
        audio, rate = sf.read(str(wav), dtype="float32")
        sf.write(str(wav), np.stack([audio, audio[::-1]], axis=1), rate)
    elif kind == "control_chars":
        text = f"\x1b[1m{text}\x1b[0m\x07"
    elif kind == "markup":
        text = f"{text} [laughter] <unk> <noise>"
    elif kind == "good_command":
        value = f"sox {wav} -t wav - |"
    elif kind == "truncated":
        wav.write_bytes(wav.read_bytes()[:rng.randint(45, 2000)])
    elif kind == "corrupt":
        data = bytearray(wav.read_bytes())
        data[8:40] = bytes(rng.randrange(256) for _ in range(32))
        wav.write_bytes(bytes(data))
    elif kind == "empty_file":
        wav.write_bytes(b"")
    elif kind in ("nan", "inf", "huge"):
        audio, rate = sf.read(str(wav), dtype="float32")
        audio[rng.randrange(len(audio))] = {"nan": np.nan, "inf": -np.inf, "huge": 3e8}[kind]
        sf.write(str(wav), audio, rate, subtype="FLOAT")
    elif kind == "wrong_rate":
        write_tone(wav, seconds=seconds, sample_rate=rng.choice([8000, 22050, 44100]))
    elif kind == "too_short":
        write_tone(wav, seconds=rng.uniform(0.001, 0.05))
    elif kind == "too_long":
        write_tone(wav, seconds=rng.uniform(3.5, 6.0))
    elif kind == "missing_file":
        wav.unlink()
    elif kind == "failing_command":
        value = f"sox {wav}.gone -t wav - |"
    elif kind == "empty_text":
        text = rng.choice(["", "  ...  ", "?!"])
    elif kind == "non_utf8":
        text = "caf\udce9 " + text  # a Latin-1 byte where UTF-8 was expected
    elif kind == "markup_only":
        text = "[noise] <noise>"
    elif kind == "novel":
        text = " ".join([text] * 60)  # far more words than 2 s of audio can hold
    elif kind == "no_speaker":
        overrides["utt2spk"] = ""
    elif kind == "no_audio_line":
        overrides["wav.scp"] = ""
    return value, text, overrides


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> Tuple[Path, Dict[str, str]]:
    """The damaged data dir and each utterance's damage."""
    root = tmp_path_factory.mktemp("fuzz")
    data_dir = root / "kaldi"
    rng = random.Random(20261202)
    kinds = [list(KINDS)[i % len(KINDS)] for i in range(NUM_UTTERANCES)]
    rng.shuffle(kinds)
    lines: Dict[str, List[bytes]] = {"wav.scp": [], "text": [], "utt2spk": []}
    damage_of = {}
    for i, kind in enumerate(kinds):
        utt = f"spk{i % 7}-{i:04d}"
        value, text, overrides = damage(kind, utt, data_dir / "wav" / f"{utt}.wav", rng)
        damage_of[utt] = kind
        entries = {"wav.scp": value, "text": text, "utt2spk": f"spk{i % 7}", **overrides}
        for name, entry in entries.items():
            if not (name in overrides and overrides[name] == ""):
                lines[name].append(f"{utt} {entry}".encode("utf-8", "surrogateescape"))
    for name, rows in lines.items():
        (data_dir / name).write_bytes(b"\n".join(rows) + b"\n")
    return data_dir, damage_of


def stage(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A stage CLI run as the Snakefile runs it; it must finish in time and without a traceback."""
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_damaged_data_goes_through_every_stage(damaged, tmp_path):
    data_dir, damage_of = damaged
    preset = tmp_path / "fuzz.yaml"
    preset.write_text(yaml.safe_dump(PRESET))
    config = ["--config", str(REPO_ROOT / "config" / "config.yaml"), "--config", str(preset)]
    stage("stages.prepare", "import", str(data_dir), "data/manifests", "--subset", "fuzz", *config, cwd=tmp_path)

    kept = {cut.id: cut for cut in CutSet.from_file(tmp_path / "data" / "manifests" / "fuzz_cuts.jsonl.gz")}
    skipped = dict(line.split(" ", 1) for line in
                   (tmp_path / "data" / "manifests" / "fuzz_skipped.txt").read_text().splitlines())
    assert len(kept) + len(skipped) == NUM_UTTERANCES and not set(kept) & set(skipped)
    assert {utt for utt, kind in damage_of.items() if KINDS[kind]} == set(kept)
    texts = dict(line.split(" ", 1) for line in (data_dir / "text").read_bytes().decode("utf-8", "replace").splitlines())
    for utt, cut in kept.items():  # intact: the words said, the whole audio
        expected = normalize_text(texts[utt].replace("<unk>", "<UNK>").replace("[laughter]", "").replace("<noise>", ""))
        assert cut.supervisions[0].text == expected, utt
        assert cut.load_audio().shape[1] == pytest.approx(cut.duration * 16000, abs=1), utt
    provenance = json.loads((tmp_path / "data" / "manifests" / "fuzz.provenance.json").read_text())
    assert provenance["utterances"] + provenance["skipped"] == NUM_UTTERANCES

    stage("stages.features", "data/manifests/fuzz_cuts.jsonl.gz", "data/fbank/fuzz_cuts.jsonl.gz", *config, cwd=tmp_path)
    stage("stages.lang", "data/manifests/fuzz_cuts.jsonl.gz", "--lm-text", "target=data/manifests/fuzz_cuts.jsonl.gz",
          "data/lang", *config, cwd=tmp_path)
    stage("stages.pretrain", "data/fbank/fuzz_cuts.jsonl.gz", "data/lang", "exp/fuzz", *config, cwd=tmp_path)
    stage("stages.decode", "exp/fuzz/model.pt", "data/lang", "target", "data/fbank/fuzz_cuts.jsonl.gz",
          "exp/fuzz/decode", *config, cwd=tmp_path)
    hyps = (tmp_path / "exp" / "fuzz" / "decode" / "hlg" / "hyp.txt").read_text().splitlines()
    assert sorted(line.split()[0] for line in hyps) == sorted(kept)
