"""The TTS chain end to end on the tiny preset (``exp/tts/report.html``: the voice's corpus,
phones and mels, Tacotron pretraining, fine-tuning and scratch, synthesis, evaluation, the
report and the listening page), and the pieces a wrong result could hide in: which source
utterances count as clean, the phones, words that cannot be said, the vocoder, synthesis
being repeatable."""
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

from conftest import TINY, snakemake
from local.tts_voice import check_voice
from speechtune.config import DEFAULT_CONFIG_PATH, load_config
from speechtune.errors import ConfigError, StageError
from speechtune.experiment import TTS_SYSTEMS
from speechtune.provenance import StageRun
from speechtune.tts.data import WORD_BOUNDARY, PhoneInventory, first_pronunciations, phones_of, prepare_tts_cuts
from speechtune.tts.features import log_mel
from speechtune.tts.synthesis import synthesize_test_set
from speechtune.tts.vocoder import VOCODERS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tts_tree(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("tts")
    snakemake(workdir, "exp/tts/report.html")
    return workdir


def test_the_report_holds_every_system_with_intervals(tts_tree: Path) -> None:
    report = json.loads((tts_tree / "exp/tts/report.json").read_text())
    assert sorted(report["systems"]) == sorted(TTS_SYSTEMS)
    test_ids = set((tts_tree / "exp/tts/finetuned/synth/text").read_text().split("\n")[0].split()[:1])
    for system, result in report["systems"].items():
        mcd = result["mcd_db"]
        assert 0 < mcd["ci_low"] <= mcd["mean"] <= mcd["ci_high"], (system, mcd)
        assert set(mcd["per_utterance"]) >= test_ids
        penalty = result["mcd_alignment_penalty"]
        assert 0 <= penalty["ci_low"] <= penalty["mean"] <= penalty["ci_high"] < 1, (system, penalty)
        assert 0 <= result["asr_wer"]["wer"] <= 100 * 10
        for optional in ("whisper_wer", "speaker_similarity", "dnsmos"):
            value = result[optional]
            assert "skipped" in value and "TTS_EVAL=1" in value["skipped"] or "skipped" not in value, value
        assert 0 <= result["attention"]["mean_diagonality"] <= 1
    difference = report["finetuned_minus_scratch"]["mcd_db"]
    per = {s: report["systems"][s]["mcd_db"]["per_utterance"] for s in ("finetuned", "scratch")}
    assert difference["mean"] == pytest.approx(np.mean([per["finetuned"][u] - per["scratch"][u] for u in per["scratch"]]))
    assert "| finetuned |" in (tts_tree / "exp/tts/report.md").read_text()
    page = (tts_tree / "exp/tts/listening.html").read_text()
    key = json.loads(page.split('id="listening-data">')[1].split("</script>")[0])["key"]
    assert sorted(set(key.values())) == sorted([*TTS_SYSTEMS, "recording"])


def test_syntheses_are_a_kaldi_data_dir_of_the_test_sentences(tts_tree: Path) -> None:
    test_cuts = CutSet.from_file(tts_tree / "data/tts/fbank/voice_test_cuts.jsonl.gz")
    for system in TTS_SYSTEMS:
        synth = tts_tree / "exp/tts" / system / "synth"
        lines = (synth / "wav.scp").read_text().splitlines()
        assert sorted(line.split()[0] for line in lines) == sorted(test_cuts.ids)
        for line in lines:
            audio, rate = sf.read(tts_tree / line.split()[1])
            assert rate == 16000 and len(audio) > 0 and np.abs(audio).max() <= 1.0
        summary = json.loads((synth / "synthesis.json").read_text())
        assert summary["unseen_voice"] == (system == "pretrained")
        assert (synth / "alignments.png").stat().st_size > 0


def test_synthesis_is_repeatable(tts_tree: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tts_tree)
    tts = load_config([DEFAULT_CONFIG_PATH, Path(TINY)])["tts"]
    cuts = Path("data/tts/fbank/voice_test_cuts.jsonl.gz")
    for name in ("a", "b"):
        synthesize_test_set(Path("exp/tts/finetuned/model.pt"), cuts, tmp_path / name, tts, seed=1234)
    for wav in sorted((tmp_path / "a" / "wav").iterdir()):
        assert wav.read_bytes() == (tmp_path / "b" / "wav" / wav.name).read_bytes()


def test_source_utterances_read_in_a_room_are_left_out(tts_tree: Path) -> None:
    """The skipped ones are those with reverb and noise: their quietest frames are far louder
    (background noise at 15-35 dB SNR) than a clean synthesis's digital silence."""
    skipped = {line.split()[0] for line in (tts_tree / "data/tts/fbank/source_train_skipped.txt").read_text().splitlines()}
    kept = set(CutSet.from_file(tts_tree / "data/tts/fbank/source_train_cuts.jsonl.gz").ids)
    assert skipped and kept and not skipped & kept

    def floor_db(utt: str) -> float:
        audio, _ = sf.read(tts_tree / "data/corpus/source/wav/train" / f"{utt}.wav")
        frames = audio[: len(audio) // 400 * 400].reshape(-1, 400)
        return float(10 * np.log10(np.percentile((frames ** 2).mean(axis=1), 5) + 1e-12))

    assert max(floor_db(utt) for utt in kept) < min(floor_db(utt) for utt in skipped) - 20


def test_the_phone_inventory_is_the_phone_lang_dirs(tts_tree: Path) -> None:
    tokens = [line.split()[0] for line in (tts_tree / "data/lang_phone_target/tokens.txt").read_text().splitlines()]
    assert PhoneInventory.cmudict().symbols == (*[t for t in tokens if not t.startswith("#")], WORD_BOUNDARY)
    lexicon = first_pronunciations(["TURN", "ON", "LIGHTS"])
    assert phones_of("TURN ON", lexicon) == ["T", "ER", "N", WORD_BOUNDARY, "AA", "N"]
    assert phones_of("TURN XYZZYQ", lexicon) is None


def _cut(tmp_path: Path, utt: str, text: str) -> MonoCut:
    path = tmp_path / f"{utt}.wav"
    sf.write(path, 0.1 * np.sin(np.arange(8000) * 0.05).astype(np.float32), 16000)
    recording = Recording.from_file(path, recording_id=utt)
    return MonoCut(utt, 0.0, recording.duration, 0, recording=recording,
                   supervisions=[SupervisionSegment(utt, utt, 0.0, recording.duration, text=text, speaker="spk")])


def test_a_word_that_cannot_be_said_skips_its_utterance(tmp_path: Path) -> None:
    cuts = CutSet.from_cuts([_cut(tmp_path, "u1", "TURN ON THE LIGHTS"), _cut(tmp_path, "u2", "TURN ON XYZZYQ")])
    out = tmp_path / "fbank" / "x_cuts.jsonl.gz"
    out.parent.mkdir()
    kept = prepare_tts_cuts(cuts, out, StageRun("tts_data", {}, 0))
    assert kept.ids == ["u1"] if isinstance(kept.ids, list) else list(kept.ids) == ["u1"]
    assert (tmp_path / "fbank" / "x_skipped.txt").read_text().startswith("u2 ")
    with pytest.raises(StageError, match="would be empty"):
        prepare_tts_cuts(CutSet.from_cuts([_cut(tmp_path, "u3", "XYZZYQ")]), tmp_path / "fbank" / "y_cuts.jsonl.gz",
                         StageRun("tts_data", {}, 0))


def test_the_voice_must_be_one_pretraining_never_heard() -> None:
    config = load_config([DEFAULT_CONFIG_PATH])
    with pytest.raises(ConfigError, match="reads the source domain"):
        check_voice({**config["tts"]["voice"], "family": "espeak-ng", "voice": "en-us+m1"}, config["corpus"]["source"])


def test_griffin_lim_gives_back_the_spectrogram_it_was_given() -> None:
    """The vocoder's audio has nearly the mel frames it came from (level aside), far nearer
    than noise of the same length."""
    t = np.arange(16000) / 16000
    speechlike = (np.sin(2 * np.pi * 150 * t) * (1 + np.sin(2 * np.pi * 3 * t)) * 0.2).astype(np.float32)
    mel = log_mel(speechlike)
    audio = VOCODERS.get("griffin_lim")(iterations=32).vocode(mel)
    again, noise = log_mel(audio), log_mel(np.random.default_rng(0).normal(0, 0.05, len(audio)).astype(np.float32))
    n = min(len(mel), len(again))

    def distance(other: np.ndarray) -> float:
        return float(np.abs((mel[:n] - mel[:n].mean()) - (other[:n] - other[:n].mean())).mean())

    assert distance(again) < 0.4 * distance(noise), (distance(again), distance(noise))
