"""``speechtune recognize`` on the tiny pipeline's tree (the session's ``built``, read only):
a test set's data dir gives the decode stage's hypotheses exactly; other formats and sample
rates, long audio in windows and segments give the same words; bad input is one clear error."""
import itertools
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import pytest
import soundfile as sf
import torch
from scipy.signal import resample_poly

from speechtune.__main__ import cli, main
from speechtune.data.tables import read_word_table
from speechtune.errors import StageError
from tests.conftest import PRESETS, write_tone

CONFIG = [option for preset in PRESETS for option in ("--config", preset)]
# The source test set: the pipeline's tests rerun the target domain's synthesis, never the
# source's, so these files and exp/finetuned's decode of them always belong together.
SOURCE_TEST = "data/corpus/source/test"
SOURCE_HYPS = "exp/finetuned/decode/source_test/hlg/hyp.txt"


@pytest.fixture(autouse=True)
def in_the_tree(built: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run where the pipeline ran (its data dirs name audio relative to it); keep torch's
    threads, which ``--threads`` sets, for the tests after these."""
    monkeypatch.chdir(built)
    threads = torch.get_num_threads()
    yield built
    torch.set_num_threads(threads)


def recognized(capsys: pytest.CaptureFixture, *args: str) -> Dict[str, List[str]]:
    """``speechtune recognize --domain source ARGS``'s printed hypotheses."""
    capsys.readouterr()
    main(["recognize", *CONFIG, "--system", "finetuned", "--domain", "source", *args])
    lines = capsys.readouterr().out.splitlines()
    return {line.split()[0]: line.split()[1:] for line in lines}


def test_a_test_sets_data_dir_gives_the_decode_stages_hypotheses(capsys, tmp_path: Path) -> None:
    hyps = recognized(capsys, SOURCE_TEST, "--out", str(tmp_path / "out"))
    expected = read_word_table(Path(SOURCE_HYPS))
    assert hyps == expected and list(hyps) == sorted(expected)
    assert sum(map(len, hyps.values())) >= 3  # words to compare, not only empty hypotheses
    assert (tmp_path / "out" / "text").read_text() == Path(SOURCE_HYPS).read_text()


def source_audio() -> Dict[str, Path]:
    """The source test utterances' WAVs (16 kHz) by id."""
    return {utt: Path(path) for utt, path in
            (line.split() for line in Path(SOURCE_TEST, "wav.scp").read_text().splitlines())}


def test_other_formats_and_rates_are_resampled_to_the_models(capsys, tmp_path: Path) -> None:
    expected = read_word_table(Path(SOURCE_HYPS))
    files = []
    for utt, wav in source_audio().items():
        audio, rate = sf.read(wav, dtype="float32")
        for new_rate, extension in ((44100, "flac"), (48000, "ogg")):
            gcd = np.gcd(new_rate, rate)
            path = tmp_path / f"{utt}.{extension}"
            if extension == "ogg":
                path = tmp_path / "ogg" / f"{utt}.ogg"  # another directory: the ids are the file names
                path.parent.mkdir(exist_ok=True)
            sf.write(path, resample_poly(audio, new_rate // gcd, rate // gcd).astype(np.float32), new_rate)
            files.append(path)
    flac = recognized(capsys, *map(str, files[0::2]))
    ogg = recognized(capsys, *map(str, files[1::2]))
    assert flac == expected and ogg == expected


def test_long_audio_is_recognized_in_windows_joined_in_order(capsys, tmp_path: Path) -> None:
    """Utterances padded with silence to 4 s each, three of them in one 12 s file: with 4 s
    windows, each window is one of them, so its words are theirs in order; a data dir with
    those segments gives them per utterance."""
    pieces = {}
    for utt, wav in source_audio().items():
        samples, rate = sf.read(wav, dtype="float32")
        pieces[utt] = np.concatenate([samples, np.zeros(4 * rate - len(samples), dtype=np.float32)])
        sf.write(tmp_path / f"{utt}.wav", pieces[utt], rate)
    single = recognized(capsys, *(str(tmp_path / f"{utt}.wav") for utt in sorted(pieces)))
    # Three pieces whose words, joined, read differently backwards: the order shows.
    def words(utts: Sequence[str]) -> List[str]:
        return [word for utt in utts for word in single[utt]]

    chosen = next((list(three) for three in itertools.permutations(sorted(u for u in single if single[u]), 3)
                   if words(three) != words(three[::-1])), None)
    assert chosen, f"too few different recognitions to see an order: {single}"
    joined = words(chosen)
    sf.write(tmp_path / "long.wav", np.concatenate([pieces[utt] for utt in chosen]), rate)
    assert recognized(capsys, str(tmp_path / "long.wav"), "--window", "4") == {"long": joined}

    data_dir = tmp_path / "meeting"
    data_dir.mkdir()
    (data_dir / "wav.scp").write_text(f"long {tmp_path / 'long.wav'}\n")
    (data_dir / "segments").write_text("".join(f"long-{i} long {4 * i}.0 {4 * i + 4}.0\n" for i in range(3)))
    assert recognized(capsys, str(data_dir)) == {f"long-{i}": single[utt] for i, utt in enumerate(chosen)}


def test_bad_input_is_one_error_naming_the_file_and_the_fix(capsys, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF" + bytes(range(256)) * 8)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.float32), 16000)
    good = write_tone(tmp_path / "tone.wav")
    (tmp_path / "not_a_data_dir").mkdir()
    cases = [
        ([str(tmp_path / "missing.wav")], r"missing\.wav: no such file"),
        ([str(corrupt)], r"unreadable audio .*corrupt\.wav.*leave the file out, or repair or convert it"),
        ([str(empty)], r"empty audio: .*empty\.wav"),
        ([str(tmp_path / "not_a_data_dir")], r"not_a_data_dir/wav\.scp is missing: .* no Kaldi data dir"),
        ([str(good), "--system", "nonesuch"], r"--system nonesuch: this config has no such system; its systems: pretrained"),
        ([str(good), "--exp-dir", str(tmp_path / "exp")],
         r"exp/finetuned/model\.pt is missing: system finetuned is not trained yet; train it with .*snakemake"),
    ]
    for args, message in cases:
        with pytest.raises(StageError, match=message):
            main(["recognize", *CONFIG, *args])
    # The console script: the same error as one line, exit status 1.
    monkeypatch.setattr(sys, "argv", ["speechtune", "recognize", *CONFIG, str(empty)])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exited:
        cli()
    err = capsys.readouterr().err.strip()
    assert exited.value.code == 1 and err.startswith("ERROR: empty audio: ") and str(empty) in err and "\n" not in err
