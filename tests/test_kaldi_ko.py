"""local/kaldi_ko: the Korean test set the import is checked on, and the agreement script's
pieces that need neither Vosk nor the model."""
import builtins
from pathlib import Path

import pytest
import soundfile as sf

from local.kaldi_ko.agreement import VoskReference, word_edits
from local.kaldi_ko.testset import read_test_set, sentences, write_test_set
from speechtune.errors import StageError


def test_test_set_is_a_deterministic_kaldi_data_dir(tmp_path: Path) -> None:
    rows = write_test_set(tmp_path / "a", count=3)
    assert [text for _, text in rows] == sentences(3)
    read = read_test_set(tmp_path / "a")
    assert [(utt, text) for utt, _, text in read] == rows
    assert {line.split()[1] for line in (tmp_path / "a" / "utt2spk").read_text().splitlines()} == {"ko0", "ko1", "ko2"}
    for _, wav, _ in read:
        audio, rate = sf.read(str(wav))
        assert rate == 16000 and audio.ndim == 1 and len(audio) > 8000 and abs(audio).max() > 0.05
    write_test_set(tmp_path / "b", count=3)
    for (_, wav_a, _), (_, wav_b, _) in zip(read, read_test_set(tmp_path / "b")):
        assert wav_a.read_bytes() == wav_b.read_bytes()


def test_missing_test_set_says_how_to_make_it(tmp_path: Path) -> None:
    with pytest.raises(StageError, match=r"wav.scp is missing: make the test set with `python -m stages.kaldi_ko_testset"):
        read_test_set(tmp_path)


def test_word_edits_count_levenshtein_operations() -> None:
    assert word_edits([], []) == 0
    assert word_edits("a b c".split(), "a b c".split()) == 0
    assert word_edits("a b c".split(), "a x c d".split()) == 2  # one substitution, one insertion
    assert word_edits("a b c".split(), []) == 3


def test_without_vosk_the_agreement_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_import = builtins.__import__

    def no_vosk(name, *args, **kwargs):
        if name == "vosk":
            raise ImportError("no vosk here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_vosk)
    with pytest.raises(StageError, match=r"vosk package is not installed: run `make setup KALDI_KO=1`"):
        VoskReference(tmp_path)


def test_vosk_views_change_only_the_dither_and_the_graph(tmp_path: Path) -> None:
    from local.kaldi_ko.agreement import undithered_copy

    model = tmp_path / "model"
    for name in ("am/final.mdl", "ivector/final.ie", "graph/HCLr.fst", "graph/phones/word_boundary.int"):
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_text(name)
    (model / "conf").mkdir()
    (model / "conf" / "mfcc.conf").write_text("--num-ceps=40\n")
    (model / "conf" / "model.conf").write_text("--beam=10\n")

    quiet = undithered_copy(model, tmp_path / "quiet")
    assert (quiet / "conf" / "mfcc.conf").read_text() == "--num-ceps=40\n--dither=0\n"
    assert (quiet / "conf" / "model.conf").read_text() == "--beam=10\n"
    assert (quiet / "am" / "final.mdl").read_text() == "am/final.mdl"
    assert (quiet / "graph" / "HCLr.fst").read_text() == "graph/HCLr.fst"
    probe = undithered_copy(model, tmp_path / "probe", ["graph"])  # the frame check's: a graph of its own
    assert sorted(p.name for p in probe.iterdir()) == ["am", "conf", "ivector"]
    assert (probe / "conf" / "mfcc.conf").read_text().endswith("--dither=0\n")
    assert (model / "conf" / "mfcc.conf").read_text() == "--num-ceps=40\n"  # the model is untouched


def test_vosk_runs_in_a_process_of_its_own_and_its_death_is_a_stage_error() -> None:
    import os

    from local.kaldi_ko.agreement import in_own_process

    assert in_own_process(os.getpid) != os.getpid()
    with pytest.raises(StageError, match=r"process running Vosk \(_exit\) died; nothing was written"):
        in_own_process(os._exit, 3)
