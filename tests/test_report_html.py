"""The report stage's HTML page: one self-contained page from a fake exp/ tree scored by the
score stage's library, with intervals, learning curves from real TensorBoard event files and
audio from real lhotse cuts."""
import base64
import io
import json
import logging
import random
import re
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import soundfile as sf
from lhotse import CutSet, MonoCut, Recording, SupervisionSegment

from speechtune.errors import StageError
from speechtune.reporting.html import build_report, pick_examples
from speechtune.reporting.report import collect, write_report
from speechtune.scoring.significance import UtteranceErrors, utterance_errors
from speechtune.scoring.wer import score_decode_dir
from stages.report import main
from tests.conftest import write_tone

VOCAB = "TURN ON OFF THE KITCHEN LIGHTS SET A TIMER FOR TEN MINUTES PLAY SOME JAZZ".split()
SYSTEMS = {"pretrained": 0.6, "finetuned": 0.1, "scratch": 0.2}  # word error probability
TESTSETS = ("target_test", "source_test")
Table = Dict[str, List[str]]


def write_table(path: Path, table: Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{utt} {' '.join(words)}".rstrip() + "\n" for utt, words in table.items()))


def corrupt(words: List[str], rate: float, rng: random.Random) -> List[str]:
    return [rng.choice(VOCAB) if rng.random() < rate else w for w in words if rng.random() > rate / 3]


def decode_dir(exp: Path, system: str, testset: str) -> Path:
    return exp / system / "decode" / testset / "hlg"


@pytest.fixture
def exp(tmp_path: Path) -> Path:
    """exp/<system>/decode/<testset>/hlg/ for three systems, scored and reported
    (exp/report.json); training curves for pretrained and finetuned (scratch has none); two
    plots of other stages."""
    exp = tmp_path / "exp"
    rng = random.Random(0)
    for testset in TESTSETS:
        refs = {f"spk{i % 3}-{testset}-{i:03d}": [rng.choice(VOCAB) for _ in range(rng.randint(3, 8))] for i in range(40)}
        for system, rate in SYSTEMS.items():
            path = decode_dir(exp, system, testset)
            write_table(path / "ref.txt", refs)
            write_table(path / "hyp.txt", {u: corrupt(w, rate, rng) for u, w in refs.items()})
            write_table(path / "utt2spk", {u: [u.split("-")[0]] for u in refs})
            score_decode_dir(path)
    for system in SYSTEMS:
        (exp / system / "provenance.json").write_text(json.dumps({"train_seconds": 1.0, "parameters": 100}))
    write_report(collect(exp, list(SYSTEMS), list(TESTSETS)), exp, "report", list(TESTSETS))
    from torch.utils.tensorboard import SummaryWriter

    for system in ("pretrained", "finetuned"):
        writer = SummaryWriter(str(exp / system / "tensorboard"))
        for step in range(1, 31):
            writer.add_scalar("train/loss", 3.0 / step, step)
            if step % 10 == 0:
                writer.add_scalar("valid/loss", 4.0 / step, step)
        writer.close()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name in ("report_wer.png", "alpha_sweep_alpha.png"):
        plt.plot([0, 1], [1, 0])
        plt.savefig(exp / name)
        plt.close()
    return exp


def write_cuts(path: Path, utterances: List[str], wav_dir: Path) -> None:
    """A cut manifest as the features stage writes (without features here): one recording per
    utterance, at 8 kHz for the first and 16 kHz otherwise."""
    cuts = []
    for i, utt in enumerate(utterances):
        wav = write_tone(wav_dir / f"{utt}.wav", seconds=0.5 + 0.1 * i, sample_rate=8000 if i == 0 else 16000, seed=i)
        recording = Recording.from_file(wav, recording_id=utt)
        supervision = SupervisionSegment(id=utt, recording_id=utt, start=0.0, duration=recording.duration,
                                         text="X", speaker=utt.split("-")[0])
        cuts.append(MonoCut(id=utt, start=0.0, duration=recording.duration, channel=0, recording=recording,
                            supervisions=[supervision]))
    path.parent.mkdir(parents=True, exist_ok=True)
    CutSet.from_cuts(cuts).to_file(path)


def target_test_errors(exp: Path) -> Dict[str, UtteranceErrors]:
    return {s: utterance_errors(decode_dir(exp, s, "target_test") / "ref.txt", decode_dir(exp, s, "target_test") / "hyp.txt")
            for s in SYSTEMS}


def run(exp: Path, *extra: str) -> str:
    """The report stage on ``exp`` (the test sets' cuts, for audio, under data/ beside it)."""
    main([str(exp), "--systems", *SYSTEMS, "--testsets", *TESTSETS, *extra])
    return (exp / "report.html").read_text(encoding="utf-8")


def test_one_self_contained_page_with_intervals(exp: Path):
    page = run(exp)
    assert not re.search(r"https?://|src=\"file|<script|<link", page)
    assert all(src.startswith("data:") for src in re.findall(r'src="([^"]*)"', page))
    for system in SYSTEMS:
        assert f"<td>{system}</td>" in page
    reported = json.loads((exp / "report.json").read_text())
    for testset in TESTSETS:
        for system in SYSTEMS:  # the table's WER is score's, with report.json's interval
            wer = json.loads((decode_dir(exp, system, testset) / "wer.json").read_text())["wer"]
            low, high = reported["systems"][system][testset]["ci95"]
            assert f"<td>{wer:.2f} [{low:.2f}, {high:.2f}]</td>" in page
    rows = re.findall(r"<tr><td>(\w+)</td><td>(\w+)</td><td>(\w+)</td><td>([+\-]\d+\.\d\d)</td>", page)
    assert sorted(rows) == sorted((c["system"], c["against"], c["testset"], f"{c['difference']:+.2f}")
                                  for c in reported["comparisons"])
    # per test set: finetuned and scratch vs pretrained, finetuned vs scratch
    assert len(rows) == 2 * 3 and ("finetuned", "scratch", "target_test") in {r[:3] for r in rows}
    assert all(float(d) < 0 for system, against, _, d in rows if (system, against) == ("finetuned", "pretrained"))
    answer = re.findall(r"<li>(.*?)</li>", page)
    assert answer[0].startswith("Fine-tuning took target_test from ") and "P(fine-tuning better)" in answer[1]
    # the gain/cost scatter, WER bars, training curves, the alpha plot
    assert page.count('src="data:image/png;base64,') == 4
    assert "<h3>alpha_sweep_alpha.png</h3>" in page and "report_wer.png" not in page
    assert "No training curves for: scratch." in page
    assert "<td>spk2</td>" in page  # per-speaker WER
    assert page.count('<table class="ali">') == 2 * 3


def test_the_page_needs_the_report_stage_first(exp: Path):
    (exp / "report.json").unlink()
    with pytest.raises(StageError, match=r"report.json is missing: run the report stage first"):
        build_report(exp, list(SYSTEMS), list(TESTSETS))


def test_examples_go_without_audio_when_the_cuts_are_missing(exp: Path, tmp_path: Path, caplog):
    with caplog.at_level(logging.WARNING, logger="speechtune.report_html"):
        page = run(exp, "--examples", "2")
    assert "<audio" not in page
    assert page.count('<table class="ali">') == 2 * 2
    assert f"{tmp_path / 'data' / 'fbank' / 'target_test_cuts.jsonl.gz'} is missing" in caplog.text


def test_examples_carry_their_audio(exp: Path, tmp_path: Path):
    errors = target_test_errors(exp)
    chosen = pick_examples(errors, 3)
    write_cuts(tmp_path / "data" / "fbank" / "target_test_cuts.jsonl.gz", chosen, tmp_path / "wav")
    page = run(exp)
    uris = re.findall(r'<audio controls preload="none" src="data:audio/wav;base64,([^"]+)">', page)
    assert len(uris) == 3  # target_test's examples; source_test has no cuts
    for i, uri in enumerate(uris):
        audio, rate = sf.read(io.BytesIO(base64.b64decode(uri)))
        expected_rate = 8000 if i == 0 else 16000  # the cut's own
        assert rate == expected_rate and audio.ndim == 1
        assert len(audio) == pytest.approx(expected_rate * (0.5 + 0.1 * i), abs=2)
        assert np.abs(audio).max() > 0.1  # the tone, not silence
    for utt in chosen:
        assert f"<h4>{utt}</h4>" in page


def test_examples_are_where_systems_disagree_most(exp: Path):
    errors = target_test_errors(exp)
    per_utt = np.stack([e.errors / e.words for e in errors.values()])
    spread = dict(zip(errors["finetuned"].utterances, per_utt.max(0) - per_utt.min(0)))
    chosen = pick_examples(errors, 3)
    assert len(chosen) == 3 and chosen == pick_examples(errors, 3)
    assert min(spread[u] for u in chosen) >= max(v for u, v in spread.items() if u not in chosen)


def test_systems_on_different_utterances_are_an_error(exp: Path):
    hyp = decode_dir(exp, "scratch", "source_test") / "hyp.txt"
    ref = decode_dir(exp, "scratch", "source_test") / "ref.txt"
    for path in (hyp, ref):
        path.write_text("".join(line for line in path.read_text().splitlines(keepends=True) if "-000 " not in line))
    with pytest.raises(StageError, match=r"pretrained/decode/source_test/hlg/hyp.txt and "
                                         r".*scratch/decode/source_test/hlg/hyp.txt are not on the same utterances"):
        build_report(exp, list(SYSTEMS), list(TESTSETS))
