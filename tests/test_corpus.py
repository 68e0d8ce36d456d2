"""Stage ``corpus``: the embedded default corpus, synthesized with the tiny preset."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import soundfile as sf

import local.embedded_corpus as embedded_corpus
import local.voices as voice_families
import stages.corpus as corpus_stage
from local.embedded_corpus import (Room, Utterance, check_unseen_split, mix_at_snr, noise_clip, plan_corpus,
                                   synthesize)
from local.target_grammar import intent_sentences
from local.voices import Speaker
from speechtune.config import CONFIG_DIR, deep_merge, load_config, REPO_ROOT, validate_config
from speechtune.errors import ConfigError, StageError
from speechtune.text import normalize_text

TINY = load_config([CONFIG_DIR / "config.yaml", CONFIG_DIR / "tiny.yaml"])
DEFAULT = load_config([])
KALDI_FILES = ("wav.scp", "text", "utt2spk", "spk2utt", "spk2voice")


def build(domain: str, workdir: Path, seed: int = 1234, **overrides) -> Path:
    """Run the stage on the tiny preset, its keys deep-merged with ``overrides``, from
    ``workdir`` (as Snakemake runs it from the repo root), writing the relative OUT_DIR
    ``<domain>``; return ``workdir / domain``."""
    config = deep_merge(TINY["corpus"][domain], overrides)
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        corpus_stage.main(["--domain", domain, domain, "--config-json", json.dumps(config), "--seed", str(seed)])
    finally:
        os.chdir(cwd)
    return workdir / domain


def read_table(path: Path) -> Dict[str, str]:
    """A Kaldi table as {key: rest of line}, asserting its keys are sorted and unique."""
    keys, values = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition(" ")
        keys.append(key)
        values.append(value)
    assert keys == sorted(set(keys)), f"{path} is not sorted by unique key"
    return dict(zip(keys, values))


def tree_bytes(root: Path) -> Dict[str, bytes]:
    """Every file under ``root`` but provenance.json (it holds the wall time), by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*")) if p.is_file() and p.name != "provenance.json"
    }


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture(scope="module")
def target(workdir: Path) -> Path:
    return build("target", workdir)


@pytest.fixture(scope="module")
def source(workdir: Path) -> Path:
    return build("source", workdir)


def voices(data_dir: Path) -> List[str]:
    """The ``voice=`` of each speaker in a split's spk2voice."""
    return [value.split("voice=")[1].split()[0] for value in read_table(data_dir / "spk2voice").values()]


def speakers(data_dir: Path) -> Dict[str, str]:
    """spk2voice: speaker id -> its family, voice and settings."""
    return read_table(data_dir / "spk2voice")


def transcripts(data_dir: Path) -> set:
    return set(read_table(data_dir / "text").values())


# (1) determinism


def test_same_seed_gives_identical_bytes_whatever_the_workers(target: Path, tmp_path: Path, monkeypatch) -> None:
    # One worker instead of several: the stopping point is decided in utterance order.
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    again = build("target", tmp_path)
    assert tree_bytes(again) == tree_bytes(target)


def test_another_seed_gives_another_corpus(target: Path, tmp_path: Path) -> None:
    other = build("target", tmp_path, seed=99)
    for split in ("train", "dev", "test", "test_unseen"):
        assert (other / split / "text").read_bytes() != (target / split / "text").read_bytes()


# (2) Kaldi data dirs and audio


@pytest.mark.parametrize("domain", ["source", "target"])
def test_kaldi_dirs_are_consistent_and_long_enough(domain: str, request) -> None:
    out_dir: Path = request.getfixturevalue(domain)
    provenance = json.loads((out_dir / "provenance.json").read_text())
    assert provenance["seed"] == 1234 and provenance["domain"] == domain
    for split, split_config in TINY["corpus"][domain]["splits"].items():
        data_dir = out_dir / split
        assert sorted(p.name for p in data_dir.iterdir()) == sorted(KALDI_FILES)
        wav_scp, text, utt2spk, spk2utt, spk2voice = (read_table(data_dir / name) for name in KALDI_FILES)
        assert set(wav_scp) == set(text) == set(utt2spk)
        assert {utt: spk for spk, utts in spk2utt.items() for utt in utts.split()} == utt2spk
        assert set(spk2voice) == set(spk2utt)
        seconds = 0.0
        for utt, path in wav_scp.items():
            assert utt.startswith(f"{utt2spk[utt]}-{split}-")
            assert text[utt] == normalize_text(text[utt]) != ""
            # Relative to where the stage ran, pointing at the final location.
            assert path == f"{domain}/wav/{split}/{utt}.wav"
            info = sf.info(str(out_dir.parent / path))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            seconds += info.frames / info.samplerate
        assert seconds >= split_config["minutes"] * 60
        assert provenance["splits"][split]["utterances"] == len(wav_scp)
        assert provenance["splits"][split]["seconds"] == pytest.approx(seconds, abs=1e-3)
    # Audio past each split's stopping point was removed.
    wavs = {p.stem for p in (out_dir / "wav").rglob("*.wav")}
    assert wavs == {utt for split in TINY["corpus"][domain]["splits"] for utt in read_table(out_dir / split / "text")}


# (3) target held-out sentences and speakers


def test_target_dev_and_test_are_held_out(target: Path) -> None:
    train = transcripts(target / "train")
    assert not transcripts(target / "dev") & train
    assert not transcripts(target / "test") & train
    assert not transcripts(target / "test_unseen") & train
    assert speakers(target / "dev").items() <= speakers(target / "train").items()
    test = speakers(target / "test")
    assert not test.keys() & speakers(target / "train").keys()
    assert not set(test.values()) & set(speakers(target / "train").values())
    assert set(voices(target / "test")) - set(voices(target / "train"))  # a voice train never heard


def test_target_test_unseen_is_read_by_a_family_no_other_split_has(source: Path, target: Path) -> None:
    family = {value.split()[0] for value in speakers(target / "test_unseen").values()}
    assert family == {"flite"}
    for out_dir, splits in ((source, ("train", "test")), (target, ("train", "dev", "test"))):
        for split in splits:
            assert not family & {value.split()[0] for value in speakers(out_dir / split).values()}


def test_source_and_target_never_share_a_speaker(source: Path, target: Path) -> None:
    def settings(out_dir: Path, splits) -> set:
        return {value for split in splits for value in speakers(out_dir / split).values()}

    assert not settings(source, ("train", "test")) & settings(target, ("train", "dev", "test", "test_unseen"))


# (4) source held-out sentences and voices; the default plan's speakers


def test_source_test_voices_and_sentences_are_held_out(source: Path) -> None:
    assert not set(voices(source / "test")) & set(voices(source / "train"))
    assert not transcripts(source / "test") & transcripts(source / "train")


@pytest.fixture(scope="module")
def default_plans() -> Dict[str, Dict[str, embedded_corpus.SplitPlan]]:
    return {domain: plan_corpus(domain, DEFAULT["corpus"][domain], seed=1234) for domain in ("source", "target")}


def test_default_source_has_many_speakers_of_every_family(default_plans) -> None:
    train = default_plans["source"]["train"].speakers
    assert len({s.description for s in train}) == len(train) >= 150
    families = {s.family for s in train}
    assert families == {"espeak-ng", "flite", "piper", "rhvoice", "mbrola"}
    assert min(sum(s.family == f for s in train) for f in families) >= 20
    assert DEFAULT["corpus"]["source"]["splits"]["train"]["minutes"] >= 120
    test = default_plans["source"]["test"].speakers
    assert not {s.description for s in test} & {s.description for s in train}


def test_default_target_speakers_are_new(default_plans) -> None:
    def settings(domain: str, *splits: str) -> set:
        return {s.description for split in splits for s in default_plans[domain][split].speakers}

    source = settings("source", "train", "test")
    assert not source & settings("target", "train", "dev", "test", "test_unseen")
    assert settings("target", "dev") == settings("target", "train")
    assert not settings("target", "test") & settings("target", "train")
    unseen = {s.family for s in default_plans["target"]["test_unseen"].speakers}
    assert len(unseen) == 1
    assert default_plans["target"]["test_unseen"].sentences == default_plans["target"]["test"].sentences
    others = {s.family for domain, splits in (("source", ("train", "test")), ("target", ("train", "dev", "test")))
              for split in splits for s in default_plans[domain][split].speakers}
    assert not unseen & others
    check_unseen_split(DEFAULT["corpus"])


def test_room_fraction_is_the_share_of_utterances_read_in_a_room(default_plans) -> None:
    def rooms(domain: str, split: str) -> List[bool]:
        plan = default_plans[domain][split]
        return [plan.utterance(i).room is not None for i in range(400)]

    assert all(rooms("target", "train"))  # room_fraction 1.0: every command is far-field
    source = rooms("source", "train")
    assert 0.4 < sum(source) / len(source) < 0.6  # room_fraction 0.5
    clean = deep_merge(DEFAULT["corpus"]["source"], {"room_fraction": 0.0})
    plan = plan_corpus("source", clean, seed=1234)["train"]
    assert not any(plan.utterance(i).room for i in range(100))


def test_a_family_reading_test_unseen_must_read_nothing_else() -> None:
    pico = dict(DEFAULT["corpus"]["target"]["families"]["pico"], speakers={"train": 2})
    corpus = deep_merge(DEFAULT["corpus"], {"source": {"families": {"pico": pico}}})
    with pytest.raises(ConfigError, match="corpus.source.families.pico reads train, but it reads target test_unseen"):
        check_unseen_split(corpus)
    target = deep_merge(DEFAULT["corpus"]["target"], {"families": {"pico": {"speakers": {"test": 1}}}})
    with pytest.raises(ConfigError, match="corpus.target.families.pico reads test"):
        plan_corpus("target", target, seed=1)


def test_a_family_config_is_checked_by_the_schema() -> None:
    config = deep_merge(DEFAULT["corpus"]["source"], {"families": {"flite": {"voice": ["awb"]}}})
    with pytest.raises(ConfigError, match=r"unknown key 'corpus.source.families.flite.voice'.*did you mean 'voices'"):
        validate_config(config, section="corpus.source")


def test_every_configured_espeak_voice_sounds_different() -> None:
    # espeak-ng silently ignores a variant it cannot apply (en-gb+m1 sounds like en-gb+f5).
    config = DEFAULT["corpus"]["source"]["families"]["espeak-ng"]
    audio = {
        f"{accent}+{variant}": subprocess.run(
            ["espeak-ng", "-v", f"{accent}+{variant}", "--stdout", "the quick brown fox"],
            capture_output=True, check=True,
        ).stdout
        for accent in config["accents"] for variant in config["variants"]
    }
    assert len(set(audio.values())) == len(audio)


# (5) missing synthesizer or WordNet


def path_without(tool: str, tmp_path: Path) -> str:
    """A PATH holding every tool the stage runs but ``tool``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("espeak-ng", "flite", "sox", "dpkg-query"):
        if name != tool:
            (bin_dir / name).symlink_to(shutil.which(name))
    return str(bin_dir)


@pytest.mark.parametrize("domain, tool", [("source", "espeak-ng"), ("target", "flite"), ("target", "sox")])
def test_missing_tool_names_the_debian_package(domain: str, tool: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "stages.corpus", "--domain", domain, str(tmp_path / domain),
         "--config-json", json.dumps(TINY["corpus"][domain]), "--seed", "1"],
        cwd=REPO_ROOT, capture_output=True, text=True, env={"PATH": path_without(tool, tmp_path)},
    )
    assert result.returncode == 1
    assert f"{tool} not found: install the Debian package with `apt-get install {tool}`" in result.stderr
    assert not (tmp_path / domain).exists()


def test_missing_optional_family_is_left_out_with_a_warning(tmp_path: Path, monkeypatch, caplog) -> None:
    which = voice_families.shutil.which
    monkeypatch.setattr(voice_families.shutil, "which", lambda name: None if name == "flite" else which(name))
    flite = dict(DEFAULT["corpus"]["source"]["families"]["flite"], optional=True, speakers={"train": 2, "test": 1})
    out_dir = build("source", tmp_path, families={"flite": flite})
    assert "corpus.source.families.flite is optional and left out: flite not found" in caplog.text
    provenance = json.loads((out_dir / "provenance.json").read_text())
    assert provenance["families"] == ["espeak-ng"]
    assert "apt-get install flite" in provenance["skipped_families"]["flite"]
    assert {value.split()[0] for value in speakers(out_dir / "train").values()} == {"espeak-ng"}


def test_optional_family_that_alone_reads_a_split_must_be_there(tmp_path: Path, monkeypatch) -> None:
    which = voice_families.shutil.which
    monkeypatch.setattr(voice_families.shutil, "which", lambda name: None if name == "flite" else which(name))
    with pytest.raises(StageError, match="split 'test_unseen' is read by flite only.*apt-get install flite"):
        build("target", tmp_path, families={"flite": {"optional": True}})


def test_failing_synthesizer_shows_command_and_stderr() -> None:
    speaker = Speaker("spk", "espeak-ng", "xx-nonexistent")
    failed = r"`espeak-ng -v xx-nonexistent --stdout 'hello world'` failed.*does not exist"
    with pytest.raises(StageError, match=failed):
        synthesize(Utterance("u", speaker, "HELLO WORLD", room=None))


def test_missing_wordnet_names_the_debian_package(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(embedded_corpus, "WORDNET_DIR", tmp_path)
    with pytest.raises(StageError, match="apt-get install wordnet-base"):
        build("source", tmp_path)


def test_unknown_flite_voice_is_a_config_error(tmp_path: Path) -> None:
    # flite itself would read with its default voice instead.
    with pytest.raises(ConfigError, match="no voice 'slt16'"):
        build("target", tmp_path, families={"flite": {"voices": ["slt16"]}})


# (6) grammar


def test_grammar_sentences_are_normalized_words() -> None:
    sentences = [s for intent in intent_sentences().values() for s in intent]
    assert all(normalize_text(s) == s and not any(c.isdigit() for c in s) for s in sentences)
    assert 100 <= len({w for s in sentences for w in s.split()}) <= 500


# (7) noise mixing


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    speaker = Speaker("spk", "flite", "awb", (("duration_stretch", 1.1),))
    return synthesize(Utterance("u", speaker, "SET A TIMER FOR TEN MINUTES", room=None))


@pytest.mark.parametrize("noise_type", ["pinknoise", "brownnoise", "whitenoise"])
@pytest.mark.parametrize("snr_db", [0.0, 7.5, 20.0])
def test_mixed_utterance_has_the_requested_snr(speech: np.ndarray, noise_type: str, snr_db: float) -> None:
    noise = noise_clip(Room(50, 50, noise_type, snr_db, noise_offset=0.3), len(speech))
    mixed = mix_at_snr(speech, noise, snr_db)
    measured = 10 * np.log10(np.sum(speech.astype(np.float64) ** 2) / np.sum((mixed - speech).astype(np.float64) ** 2))
    assert measured == pytest.approx(snr_db, abs=0.1)


# (8) CLI and atomic output


def test_help_works() -> None:
    result = subprocess.run([sys.executable, "-m", "stages.corpus", "--help"],
                            cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and "--domain" in result.stdout


def test_failed_run_leaves_no_out_dir(tmp_path: Path, monkeypatch) -> None:
    def failing(utt: Utterance) -> np.ndarray:
        if utt.id.endswith("-00005"):
            raise StageError("synthesizer crashed")
        return synthesize(utt)

    monkeypatch.setattr(embedded_corpus, "synthesize", failing)
    with pytest.raises(StageError, match="synthesizer crashed"):
        build("target", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_source_sentences_do_not_depend_on_string_hashing() -> None:
    # Counter.most_common breaks ties by first-seen order, which a set of strings takes from
    # PYTHONHASHSEED: the sentence pool must not.
    code = ("import hashlib; from local.source_text import wordnet_sentences; "
            "print(hashlib.sha256('\\n'.join(wordnet_sentences(4, 20, 2000)).encode()).hexdigest())")
    digests = {
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT,
                       env={**os.environ, "PYTHONHASHSEED": seed}).stdout
        for seed in ("1", "2", "3")
    }
    assert len(digests) == 1
