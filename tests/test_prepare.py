"""prepare: Kaldi data dir <-> lhotse manifests, and every kind of bad input."""
import json
from pathlib import Path

import pytest
from lhotse import CutSet, SupervisionSet

from speechtune.errors import StageError
from speechtune.data.kaldi_dir import export_kaldi_data_dir, import_kaldi_data_dir, manifest_paths
from speechtune.provenance import StageRun
from tests.conftest import write_kaldi_dir, write_tone

CONFIG = {"sample_rate": 16000, "max_skip_fraction": 0.5}


def run_import(data_dir: Path, out: Path, config=CONFIG, subset="t") -> CutSet:
    return import_kaldi_data_dir(data_dir, out, subset, config, StageRun("prepare", config, 0))


def skipped_lines(out: Path, subset="t"):
    return manifest_paths(out, subset)["skipped"].read_text().splitlines()


def test_import_writes_normalized_validated_manifests(kaldi_dir, tmp_path):
    cuts = run_import(kaldi_dir, tmp_path / "m")
    paths = manifest_paths(tmp_path / "m", "t")
    assert all(paths[k].is_file() for k in paths)
    on_disk = CutSet.from_file(paths["cuts"]).to_eager()
    assert sorted(c.id for c in on_disk) == ["spk1-a", "spk1-b", "spk2-c", "spk2-d"]
    texts = {c.supervisions[0].id: c.supervisions[0].text for c in on_disk}
    assert texts["spk1-b"] == "SET A TIMER FOR TEN MINUTES"
    assert texts["spk2-c"] == "WHAT'S THE WEATHER"
    assert {c.supervisions[0].speaker for c in cuts} == {"spk1", "spk2"}
    cut = on_disk["spk1-a"]
    assert cut.sampling_rate == 16000 and cut.duration == pytest.approx(0.5, abs=1e-3)
    assert cut.load_audio().shape == (1, 8000)
    provenance = json.loads(paths["provenance"].read_text())
    assert provenance["utterances"] == 4 and provenance["skipped"] == 0
    assert provenance["config"] == CONFIG and "lhotse" in provenance["versions"]


def test_round_trip_through_a_kaldi_data_dir(kaldi_dir, tmp_path):
    run_import(kaldi_dir, tmp_path / "m1")
    export_kaldi_data_dir(tmp_path / "m1", "t", tmp_path / "exported")
    for name in ("wav.scp", "text", "utt2spk", "segments"):
        assert (tmp_path / "exported" / name).is_file()
    run_import(tmp_path / "exported", tmp_path / "m2")  # now through the segments file
    first = SupervisionSet.from_file(manifest_paths(tmp_path / "m1", "t")["supervisions"]).to_eager()
    second = SupervisionSet.from_file(manifest_paths(tmp_path / "m2", "t")["supervisions"]).to_eager()
    assert len(first) == len(second) == 4
    for a in first:
        b = second[a.id]
        assert (a.recording_id, a.text, a.speaker, a.start) == (b.recording_id, b.text, b.speaker, b.start)
        assert a.duration == pytest.approx(b.duration, abs=1e-5)


def test_segments_cut_recordings_into_utterances(tmp_path):
    data_dir = tmp_path / "seg"
    data_dir.mkdir()
    wav = write_tone(data_dir / "long.wav", seconds=3.0)
    (data_dir / "wav.scp").write_text(f"rec1 {wav}\n")
    (data_dir / "segments").write_text("spk-1 rec1 0.0 1.0\nspk-2 rec1 1.5 -1\nspk-3 rec1 2.5 9.0\n")
    (data_dir / "text").write_text("spk-1 one\nspk-2 two\nspk-3 three\n")
    (data_dir / "utt2spk").write_text("spk-1 spk\nspk-2 spk\nspk-3 spk\n")
    cuts = run_import(data_dir, tmp_path / "m", config={"sample_rate": 16000, "max_skip_fraction": 0.4})
    assert {c.id: round(c.duration, 3) for c in cuts} == {"spk-1": 1.0, "spk-2": 1.5}
    assert skipped_lines(tmp_path / "m") == ["spk-3 segment [2.5, 9.0] outside the recording"]


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("corrupt", "unreadable audio"),
        ("empty_audio", "empty audio"),
        ("wrong_rate", "sample rate 8000 Hz, expected 16000 Hz"),
        ("missing_file", "audio file missing"),
        ("empty_text", "empty transcript"),
        ("non_utf8", "transcript is not UTF-8"),
    ],
)
def test_a_bad_utterance_is_skipped_counted_and_logged(kaldi_dir, tmp_path, caplog, damage, reason):
    wav = kaldi_dir / "wav" / "spk2-d.wav"
    if damage == "corrupt":
        wav.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage that is not audio")
    elif damage == "empty_audio":
        wav.write_bytes(b"")
        write_tone(wav, seconds=0.0)
    elif damage == "wrong_rate":
        write_tone(wav, sample_rate=8000)
    elif damage == "missing_file":
        wav.unlink()
    elif damage in ("empty_text", "non_utf8"):
        lines = (kaldi_dir / "text").read_bytes().splitlines()
        new_text = b"  ...  " if damage == "empty_text" else "caf\u00e9 lights".encode("latin-1")
        lines = [b"spk2-d " + new_text if line.startswith(b"spk2-d ") else line for line in lines]
        (kaldi_dir / "text").write_bytes(b"\n".join(lines) + b"\n")
    cuts = run_import(kaldi_dir, tmp_path / "m")
    assert sorted(c.id for c in cuts) == ["spk1-a", "spk1-b", "spk2-c"]
    (line,) = skipped_lines(tmp_path / "m")
    assert line.startswith("spk2-d ") and reason in line
    assert "skipping spk2-d: " in caplog.text
    provenance = json.loads(manifest_paths(tmp_path / "m", "t")["provenance"].read_text())
    assert provenance["skipped"] == 1


def test_too_many_skips_fail_and_write_no_manifest(kaldi_dir, tmp_path):
    for utt in ("spk1-a", "spk1-b", "spk2-c"):
        (kaldi_dir / "wav" / f"{utt}.wav").unlink()
    with pytest.raises(StageError, match=r"3 of 4 utterances unusable.*max_skip_fraction"):
        run_import(kaldi_dir, tmp_path / "m")
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


@pytest.mark.parametrize("table", ["wav.scp", "text", "utt2spk"])
def test_duplicate_ids_are_an_error_naming_file_line_and_id(kaldi_dir, tmp_path, table):
    path = kaldi_dir / table
    first_line = path.read_text().splitlines()[0]
    path.write_text(path.read_text() + first_line + "\n")
    with pytest.raises(StageError) as err:
        run_import(kaldi_dir, tmp_path / "m")
    assert f"{path}:5: duplicate id 'spk1-a'" in str(err.value)


@pytest.mark.parametrize("table", ["wav.scp", "text", "utt2spk"])
def test_missing_index_file_is_an_error_naming_it(kaldi_dir, tmp_path, table):
    (kaldi_dir / table).unlink()
    with pytest.raises(StageError, match=f"{kaldi_dir / table} is missing"):
        run_import(kaldi_dir, tmp_path / "m")


def test_utterances_and_speakers_must_line_up(tmp_path):
    data_dir = write_kaldi_dir(tmp_path / "k", {"a-1": "one", "a-2": "two", "b-3": "three"})
    (data_dir / "utt2spk").write_text("a-1 a\na-2 a\n")
    (data_dir / "text").write_text("a-1 one\nb-3 three\n")
    cuts = run_import(data_dir, tmp_path / "m", config={"sample_rate": 16000, "max_skip_fraction": 0.7})
    assert [c.id for c in cuts] == ["a-1"]
    assert skipped_lines(tmp_path / "m") == ["a-2 no line in text", "b-3 no line in utt2spk"]
