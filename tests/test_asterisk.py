"""local/asterisk.py: Asterisk's recorded English prompts as a Kaldi corpus.

Most tests build a small copy of the Debian packages' layout in tmp_path (8 kHz WAVs, some in
subdirectories, and a gzipped ``name: transcript`` file); the last one reads the installed
packages and is skipped where they are absent.
"""
import gzip
import json
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import soundfile as sf

from local.asterisk import (
    DEFAULT_CONFIG, NO_TEXT, NO_WAV, NON_SPEECH, Prompt, read_catalog, read_prompts, spoken_words,
    split_prompts, write_asterisk_corpus,
)
from speechtune.data.tables import read_table
from speechtune.errors import ConfigError, StageError
from speechtune.provenance import StageRun

INSTALL = "apt-get install asterisk-core-sounds-en-wav asterisk-core-sounds-en"
SPLITS = {"train": 0.6, "dev": 0.2, "test": 0.2}

# name -> transcript, as core-sounds-en.txt writes them; None: a WAV with no line in the text.
FIXTURE = {
    "activated": "Activated.",
    "agent-pass": "Please enter your password followed by the pound key.",
    "dictate/pause": "pause",
    "dictate/both_help": "press * to toggle pause, press # to enter a new dictation filename",
    "digits/1": "one",
    "digits/star": "star",
    "letters/ascii42": "star",  # the same words as digits/star
    "letters/at": "at [@]",
    "vm-Cust1": "folder 5",
    "vm-next": "Press 6 to play the next message.",
    "dir-multi2": "... for ...",
    "spy-iax2": 'IAX (note: does not say "2")',
    "demo-instruct": "dial 500, or 25, at 28.8 kilobit; 50% sure",
    "beep": "[this is a simple beep tone]",
    "silence/1": "(1 second of silence)",
    "orphan": None,
}
NO_WAV_LINE = "pls-try-call-later: Please try your call later."
SPEECH = sorted(n for n, t in FIXTURE.items() if t is not None and t[0] not in "[(")


def _write_prompt(path: Path, samples: int, seed: int) -> None:
    """A tone with a little noise, 8 kHz 16-bit mono like the package's prompts."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / 8000
    audio = 0.3 * np.sin(2 * np.pi * (300 + 40 * seed) * t) + 0.01 * rng.standard_normal(samples)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio.astype(np.float32), 8000, subtype="PCM_16")


@pytest.fixture
def package(tmp_path: Path) -> Dict[str, Path]:
    """The two packages' files, in their layout, under tmp_path."""
    sounds = tmp_path / "sounds" / "en_US_f_Allison"
    for i, name in enumerate(sorted(FIXTURE)):
        _write_prompt(sounds / f"{name}.wav", samples=1601 + 397 * i, seed=i)  # odd lengths, 0.2-0.9 s
    lines = ["; Core Asterisk Sounds in English", ""]
    lines += [f"{name}: {text}" for name, text in FIXTURE.items() if text is not None]
    lines.insert(5, NO_WAV_LINE)
    text = tmp_path / "doc" / "core-sounds-en.txt.gz"
    text.parent.mkdir()
    with gzip.open(text, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    return {"sounds_dir": sounds, "text": text}


def test_read_prompts_pairs_wavs_and_speech_transcripts(package):
    catalog = read_catalog(package["sounds_dir"], package["text"])
    assert sorted(p.name for p in catalog.prompts) == SPEECH
    assert catalog.left_out == {
        NO_WAV: ["pls-try-call-later"],
        NO_TEXT: ["orphan"],
        NON_SPEECH: ["beep", "silence/1"],
    }
    by_name = {p.name: p for p in catalog.prompts}
    pause = by_name["dictate/pause"]
    assert (pause.id, pause.path, pause.transcript, pause.text) == (
        "ast-dictate-pause", package["sounds_dir"] / "dictate" / "pause.wav", "pause", "PAUSE")
    assert by_name["vm-Cust1"].id == "ast-vm-cust1"
    assert [p.id for p in catalog.prompts] == sorted(p.id for p in catalog.prompts)
    assert read_prompts(package["sounds_dir"], package["text"]) == catalog.prompts


def test_transcripts_become_words(package):
    texts = {p.name: p.text for p in read_prompts(package["sounds_dir"], package["text"])}
    assert texts["dictate/both_help"] == "PRESS STAR TO TOGGLE PAUSE PRESS POUND TO ENTER A NEW DICTATION FILENAME"
    assert texts["vm-Cust1"] == "FOLDER FIVE"
    assert texts["vm-next"] == "PRESS SIX TO PLAY THE NEXT MESSAGE"
    assert texts["letters/at"] == "AT"                   # "[@]" shows the symbol; it is not said
    assert texts["spy-iax2"] == "IAX"                    # the editor's note is not said either
    assert texts["dir-multi2"] == "FOR"                  # "..." is where another prompt goes
    assert texts["demo-instruct"] == (
        "DIAL FIVE ZERO ZERO OR TWENTY FIVE AT TWENTY EIGHT POINT EIGHT KILOBIT FIFTY PERCENT SURE")
    for text in texts.values():
        assert text == text.upper() and not any(ch.isdigit() for ch in text), text


@pytest.mark.parametrize("written, said", [
    ("1", "ONE"), ("25", "TWENTY FIVE"), ("0", "ZERO"), ("extension 1234", "EXTENSION ONE TWO THREE FOUR"),
    ("3D audio", "THREE D AUDIO"), ("H.323", "H THREE TWO THREE"), ("A.M.", "A M"),
    ("followed by #", "FOLLOWED BY POUND"), ("press *", "PRESS STAR"), ("50%", "FIFTY PERCENT"),
    ("the time will be exactly...", "THE TIME WILL BE EXACTLY"), ("Call-Forward on Busy.", "CALL FORWARD ON BUSY"),
    ("visit www.asterisk.org.", "VISIT W W W DOT ASTERISK DOT ORG"), ("a PBX", "A P B X"),
    ('a polite "don\'t call" menu', "A POLITE DON'T CALL MENU"), ("space [ ]", "SPACE"),
    ("fourtieth", "FORTIETH"), ("exclaimation-point [!]", "EXCLAMATION POINT"),
    ("<beep ascending>", ""), ("[sound of monkeys screaming]", ""), ("(10 seconds of silence)", ""),
])
def test_spoken_words(written, said):
    assert spoken_words(written) == said


def _prompts(n: int) -> list:
    return [Prompt(f"ast-p{i:03d}", f"p{i:03d}", Path(f"p{i:03d}.wav"), "", f"WORD{i}") for i in range(n)]


def test_split_is_deterministic_and_partitions_the_prompts(package):
    prompts = read_prompts(package["sounds_dir"], package["text"]) + _prompts(200)
    splits = split_prompts(prompts, SPLITS, seed=1234)
    assert list(splits) == ["train", "dev", "test"]
    ids = [p.id for members in splits.values() for p in members]
    assert sorted(ids) == sorted(p.id for p in prompts)  # every prompt once
    for split, fraction in SPLITS.items():
        assert abs(len(splits[split]) - fraction * len(prompts)) <= 2, split
        assert [p.id for p in splits[split]] == sorted(p.id for p in splits[split])
    assert split_prompts(list(reversed(prompts)), SPLITS, seed=1234) == splits
    assert split_prompts(prompts, SPLITS, seed=4321) != splits
    # The same words are never in two splits.
    star = {split for split, members in splits.items() for p in members if p.text == "STAR"}
    assert len(star) == 1
    with pytest.raises(ConfigError, match="add up to 1"):
        split_prompts(prompts, {"train": 0.7, "test": 0.2}, seed=1)


def _write(package: Dict[str, Path], out_dir: Path, seed: int = 1234) -> dict:
    config = {"sounds_dir": str(package["sounds_dir"]), "text": str(package["text"]), "splits": SPLITS}
    write_asterisk_corpus(out_dir, config, StageRun("corpus", config, seed))
    return json.loads((out_dir / "provenance.json").read_text())


def test_written_data_dirs_are_valid(package, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # as the pipeline runs: a relative out_dir, relative wav.scp paths
    out_dir = Path("corpus/target")
    provenance = _write(package, out_dir)
    originals = {p.id: p.path for p in read_prompts(package["sounds_dir"], package["text"])}
    seen = []
    for split in SPLITS:
        data_dir = out_dir / split
        wav_scp, text = read_table(data_dir / "wav.scp"), read_table(data_dir / "text")
        utt2spk, spk2utt = read_table(data_dir / "utt2spk"), read_table(data_dir / "spk2utt")
        assert list(wav_scp) == sorted(wav_scp) and list(text) == list(wav_scp) == list(utt2spk)
        assert set(utt2spk.values()) == {"ast-allison"} and spk2utt == {"ast-allison": " ".join(wav_scp)}
        seconds = 0.0
        for utt, path in wav_scp.items():
            assert path == str(out_dir / "wav" / split / f"{utt}.wav") and Path(path).is_file()
            info, original = sf.info(path), sf.info(str(originals[utt]))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert abs(info.duration - original.duration) <= 1 / 8000, utt
            seconds += info.duration
        assert provenance["splits"][split] == {"utterances": len(wav_scp), "seconds": pytest.approx(seconds, abs=1e-3)}
        seen += wav_scp
    assert sorted(seen) == sorted(originals)
    assert provenance["left_out"] == {NO_TEXT: 1, NO_WAV: 1, NON_SPEECH: 2}
    assert provenance["left_out_prompts"][NON_SPEECH] == ["beep", "silence/1"]
    assert "CC-BY-SA-3.0" in provenance["license"] and provenance["seed"] == 1234
    assert sorted(p.name for p in out_dir.parent.iterdir()) == ["target"]  # no temporary left

    # The same seed writes the same bytes (sox -R); the tables do not depend on the run.
    first = {p: p.read_bytes() for p in sorted(out_dir.rglob("*")) if p.is_file() and p.name != "provenance.json"}
    _write(package, out_dir)
    assert {p: p.read_bytes() for p in first} == first


def test_a_missing_package_names_the_debian_packages(package, tmp_path):
    for missing in ("sounds_dir", "text"):
        broken = dict(package, **{missing: tmp_path / "not-installed"})
        with pytest.raises(StageError, match=INSTALL):
            _write(broken, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_split_with_no_prompt_is_a_config_error(package, tmp_path):
    config = {"sounds_dir": str(package["sounds_dir"]), "text": str(package["text"]),
              "splits": {"train": 0.98, "dev": 0.01, "test": 0.01}}
    with pytest.raises(ConfigError, match="gets none of the"):
        write_asterisk_corpus(tmp_path / "out", config, StageRun("corpus", config, 1234))
    assert not (tmp_path / "out").exists()


def test_installed_package():
    sounds, text = Path(DEFAULT_CONFIG["sounds_dir"]), Path(DEFAULT_CONFIG["text"])
    if not sounds.is_dir() or not text.is_file():
        pytest.skip(f"the Asterisk prompts are not installed: {INSTALL}")
    # Which prompts have a speech transcript, read here without the module's parser.
    with gzip.open(text, "rt", encoding="utf-8") as f:
        lines = [line.split(":", 1) for line in f if ":" in line and not line.startswith(";")]
    speech = {name.strip() for name, transcript in lines
              if transcript.strip()[:1] not in ("[", "<", "(") and (sounds / f"{name.strip()}.wav").is_file()}
    catalog = read_catalog(sounds, text)
    assert {p.name for p in catalog.prompts} == speech
    assert len(speech) > 500
    for prompt in catalog.prompts:
        assert prompt.text and not any(ch.isdigit() for ch in prompt.text), prompt
    minutes = sum(sf.info(str(p.path)).duration for p in catalog.prompts) / 60
    assert 22 < minutes < 26  # 25.5 minutes of WAVs, less beeps and silences
