"""prepare: Kaldi data dir <-> lhotse manifests, and every kind of bad input."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, SupervisionSet

from speechtune.config import DEFAULT_CONFIG_PATH, load_config
from speechtune.data.kaldi_dir import export_kaldi_data_dir, import_kaldi_data_dir, manifest_paths
from speechtune.errors import StageError
from speechtune.provenance import StageRun
from tests.conftest import write_kaldi_dir, write_tone

CONFIG = {**load_config([DEFAULT_CONFIG_PATH])["prepare"], "max_skip_fraction": 0.5}


def run_import(data_dir: Path, out: Path, config=CONFIG, subset="t") -> CutSet:
    return import_kaldi_data_dir(data_dir, out, subset, config, StageRun("prepare", config, 0)).to_eager()


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
    assert cut.sampling_rate == 16000 and cut.duration == pytest.approx(1.5, abs=1e-3)
    assert cut.load_audio().shape == (1, 24000)
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
    cuts = run_import(data_dir, tmp_path / "m", config={**CONFIG, "max_skip_fraction": 0.4})
    assert {c.id: round(c.duration, 3) for c in cuts} == {"spk-1": 1.0, "spk-2": 1.5}
    assert skipped_lines(tmp_path / "m") == ["spk-3 segment [2.5, 9.0] outside the recording"]


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("corrupt", "unreadable audio"),
        ("empty_audio", "empty audio"),
        ("wrong_rate", "wrong sample rate: 8000 Hz, expected 16000 Hz"),
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
    cuts = run_import(data_dir, tmp_path / "m", config={**CONFIG, "max_skip_fraction": 0.7})
    assert [c.id for c in cuts] == ["a-1"]
    assert skipped_lines(tmp_path / "m") == ["a-2 no line in text", "b-3 no line in utt2spk"]


def replace_text(data_dir: Path, utt: str, text: str) -> None:
    lines = (data_dir / "text").read_text().splitlines()
    (data_dir / "text").write_text("".join((f"{utt} {text}" if line.split()[0] == utt else line) + "\n"
                                           for line in lines))


def import_expecting_one_skip(data_dir: Path, out: Path, utt: str, reason: str, config=CONFIG) -> CutSet:
    cuts = run_import(data_dir, out, config=config)
    assert utt not in {c.id for c in cuts} and len(cuts) == 3
    (line,) = skipped_lines(out)
    assert line.startswith(f"{utt} ") and reason in line, line
    return cuts


def test_a_truncated_wav_is_skipped_not_kept_short(kaldi_dir, tmp_path):
    wav = kaldi_dir / "wav" / "spk2-d.wav"
    wav.write_bytes(wav.read_bytes()[:200])  # the header promises 1.8 s, 156 bytes of it are there
    import_expecting_one_skip(kaldi_dir, tmp_path / "m", "spk2-d",
                              "truncated WAV: its header declares 57600 bytes of audio, 156 are present")


@pytest.mark.parametrize("value, reason", [(np.nan, "non-finite samples"), (np.inf, "non-finite samples"),
                                           (1e6, "samples out of range: peak 1e+06")])
def test_nan_inf_and_huge_samples_are_skipped(kaldi_dir, tmp_path, value, reason):
    wav = kaldi_dir / "wav" / "spk2-d.wav"
    audio, rate = sf.read(str(wav), dtype="float32")
    audio[100] = value
    sf.write(str(wav), audio, rate, subtype="FLOAT")
    import_expecting_one_skip(kaldi_dir, tmp_path / "m", "spk2-d", reason)


def test_audio_shorter_or_longer_than_the_bounds_is_skipped(kaldi_dir, tmp_path):
    write_tone(kaldi_dir / "wav" / "spk2-d.wav", seconds=0.005)
    import_expecting_one_skip(kaldi_dir, tmp_path / "short", "spk2-d", "too short: 0.005 s, under prepare.min_duration")
    write_tone(kaldi_dir / "wav" / "spk2-d.wav", seconds=5.0)
    import_expecting_one_skip(kaldi_dir, tmp_path / "long", "spk2-d", "too long: 5.0 s, over prepare.max_duration=4",
                              config={**CONFIG, "max_duration": 4})


def test_a_transcript_the_audio_cannot_hold_is_skipped(kaldi_dir, tmp_path):
    replace_text(kaldi_dir, "spk2-d", " ".join(["play some jazz"] * 3000))
    import_expecting_one_skip(kaldi_dir, tmp_path / "m", "spk2-d", "transcript too long for its audio: 36000 letters")


def test_kaldi_markup_becomes_the_oov_word_or_goes_counted(kaldi_dir, tmp_path):
    replace_text(kaldi_dir, "spk2-d", "play <UNK> jazz [laughter] <noise> [um-hm]")
    replace_text(kaldi_dir, "spk2-c", "[noise]")  # nothing but markup: no transcript left
    cuts = run_import(kaldi_dir, tmp_path / "m")
    assert cuts["spk2-d"].supervisions[0].text == "PLAY <UNK> JAZZ"
    assert skipped_lines(tmp_path / "m") == ["spk2-c empty transcript"]
    provenance = json.loads(manifest_paths(tmp_path / "m", "t")["provenance"].read_text())
    assert provenance["notes"] == {"<unk> -> <UNK>": 1, "[laughter] dropped": 1, "<noise> dropped": 1,
                                    "[noise] dropped": 1, "[um-hm] unlisted": 1}


def test_every_utterance_of_text_is_kept_or_skipped_once(kaldi_dir, tmp_path):
    with open(kaldi_dir / "text", "a") as f:
        f.write("spk3-e an utterance wav.scp does not have\n")
    cuts = run_import(kaldi_dir, tmp_path / "m")
    skipped = skipped_lines(tmp_path / "m")
    assert skipped == ["spk3-e recording not in wav.scp: 'spk3-e'"]
    provenance = json.loads(manifest_paths(tmp_path / "m", "t")["provenance"].read_text())
    assert provenance["utterances"] + provenance["skipped"] == 5 == len(cuts) + len(skipped)


def test_wav_scp_commands_are_run_and_their_failures_skipped(kaldi_dir, tmp_path):
    wav = kaldi_dir / "wav" / "spk1-a.wav"
    scp = (kaldi_dir / "wav.scp").read_text().splitlines()
    scp[0] = f"spk1-a sox {wav} -t wav - |"
    scp[1] = "spk1-b sox /nonexistent.wav -t wav - |"
    (kaldi_dir / "wav.scp").write_text("\n".join(scp) + "\n")
    cuts = run_import(kaldi_dir, tmp_path / "m")
    assert cuts["spk1-a"].recording.sources[0].type == "command"
    assert cuts["spk1-a"].load_audio().shape == (1, 24000)  # lhotse reruns the command
    (line,) = skipped_lines(tmp_path / "m")
    assert line.startswith("spk1-b command failed (exit 2: ") and "/nonexistent.wav" in line


def test_a_byte_order_mark_and_tabs_are_read_as_kaldi_does(kaldi_dir, tmp_path):
    text = (kaldi_dir / "text").read_text().replace("spk1-b ", "spk1-b\t")
    (kaldi_dir / "text").write_bytes(b"\xef\xbb\xbf" + text.encode())
    cuts = run_import(kaldi_dir, tmp_path / "m")
    assert sorted(c.id for c in cuts) == ["spk1-a", "spk1-b", "spk2-c", "spk2-d"]
    assert cuts["spk1-b"].supervisions[0].text == "SET A TIMER FOR TEN MINUTES"


def test_utt2spk_with_more_than_a_speaker_is_an_error(kaldi_dir, tmp_path):
    (kaldi_dir / "utt2spk").write_text((kaldi_dir / "utt2spk").read_text().replace("spk1-a spk1", "spk1-a spk1 extra"))
    with pytest.raises(StageError, match=r"utt2spk: 'spk1-a' has 2 fields after the id"):
        run_import(kaldi_dir, tmp_path / "m")


def test_stereo_audio_uses_channel_0_and_says_so(kaldi_dir, tmp_path, caplog):
    wav = kaldi_dir / "wav" / "spk2-d.wav"
    audio, rate = sf.read(str(wav), dtype="float32")
    sf.write(str(wav), np.stack([audio, np.zeros_like(audio)], axis=1), rate)
    cuts = run_import(kaldi_dir, tmp_path / "m")
    assert np.allclose(cuts["spk2-d"].load_audio()[0], audio, atol=1e-4)
    assert "spk2-d: 2 channels; channel 0 is used" in caplog.text
    provenance = json.loads(manifest_paths(tmp_path / "m", "t")["provenance"].read_text())
    assert provenance["notes"] == {"multi-channel recordings, channel 0 used": 1}
    if shutil.which("ffmpeg") is None:
        with pytest.raises(StageError, match="several channels .*ffmpeg is not installed"):
            export_kaldi_data_dir(tmp_path / "m", "t", tmp_path / "exported")


@pytest.mark.parametrize("subset", ["../x", "a/b", "", ".hidden"])
def test_a_subset_is_a_name_not_a_path(kaldi_dir, tmp_path, subset):
    with pytest.raises(StageError, match="use a name of letters"):
        run_import(kaldi_dir, tmp_path / "m", subset=subset)
    assert not (tmp_path / "x_cuts.jsonl.gz").exists()


def test_utterances_of_a_broken_recording_are_each_skipped_once(tmp_path):
    data_dir = tmp_path / "seg"
    data_dir.mkdir()
    write_tone(data_dir / "good.wav", seconds=3.0)
    (data_dir / "bad.wav").write_bytes(b"not audio at all")
    (data_dir / "wav.scp").write_text(f"rec1 {data_dir / 'good.wav'}\nrec2 {data_dir / 'bad.wav'}\n")
    (data_dir / "segments").write_text("u-1 rec1 0.0 1.5\nu-2 rec2 0.0 1.0\nu-3 rec2 1.0 2.0\n")
    (data_dir / "text").write_text("u-1 one\nu-2 two\nu-3 three\n")
    (data_dir / "utt2spk").write_text("u-1 u\nu-2 u\nu-3 u\n")
    cuts = run_import(data_dir, tmp_path / "m", config={**CONFIG, "max_skip_fraction": 0.7})
    assert [c.id for c in cuts] == ["u-1"]
    skipped = skipped_lines(tmp_path / "m")
    assert [line.split()[0] for line in skipped] == ["u-2", "u-3"]
    assert all(line.split(" ", 1)[1].startswith("recording skipped (rec2: unreadable audio") for line in skipped)
