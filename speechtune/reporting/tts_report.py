"""The TTS report: every system's measures side by side, what fine-tuning bought against
training on the voice's minutes alone, and the listening test (the ``tts_report`` stage)::

    write_tts_report(Path("exp/tts"), ["pretrained", "finetuned", "scratch"],
                     Path("data/tts/fbank/voice_test_cuts.jsonl.gz"), sentences=10, seed=1234)

reads ``exp/tts/<system>/eval.json`` (the tts_evaluate stage) and ``synth/`` (the syntheses)
and writes, under ``exp/tts/``:

    report.json       every system's eval.json, and finetuned - scratch per measure: the paired
                      MCD difference over utterances with its bootstrap interval
    report.md         the table of README's TTS results
    report.html       the table, each system's attention plot, a link to the listening page
    listening.html    the listening test (speechtune.tts.listening): the first ``sentences`` test
                      sentences by every system and by the voice's own recording, shuffled and
                      unlabeled, rated 1-5, with A/B questions finetuned vs scratch; its saved
                      ratings give MOS with ``speechtune mos`` (from people only)
"""
import html
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import soundfile as sf

from speechtune.errors import StageError
from speechtune.provenance import atomic_file
from speechtune.reporting.html import STYLE, html_table, png_file_uri
from speechtune.scoring.significance import bootstrap_mean
from speechtune.tts.data import load_tts_cuts
from speechtune.tts.listening import Sentence, write_listening_page

RECORDING = "recording"  # the voice's own recording, on the listening page as the natural anchor
COMPARED = ("finetuned", "scratch")


def _interval(measure: Mapping[str, Any], value: str = "mean", digits: int = 2) -> str:
    """'6.12 [5.80, 6.44]', or why the measure was skipped."""
    if "skipped" in measure:
        return "skipped"
    return f"{measure[value]:.{digits}f} [{measure['ci_low']:.{digits}f}, {measure['ci_high']:.{digits}f}]"


def measure_rows(evals: Mapping[str, Mapping[str, Any]]) -> List[List[str]]:
    """One row per system: MCD and its DTW alignment penalty, both WERs, similarity to target and
    to source, DNSMOS OVRL, attention diagonality and stop-token errors."""
    rows = []
    for system, result in evals.items():
        similarity = result["speaker_similarity"]
        dnsmos = result["dnsmos"]
        attention = result["attention"]
        rows.append([
            system, _interval(result["mcd_db"]), _interval(result["mcd_alignment_penalty"], digits=3),
            _interval(result["asr_wer"], "wer", 1),
            _interval(result["whisper_wer"], "wer", 1),
            _interval(similarity["target"], digits=3) if "target" in similarity else "skipped",
            _interval(similarity["source"], digits=3) if "source" in similarity else "skipped",
            _interval(dnsmos["ovrl"]) if "ovrl" in dnsmos else "skipped",
            f"{attention['mean_diagonality']:.3f}",
            f"{attention['stop_token_errors']} ({len(attention['failed'])} never stopped)"])
    return rows


HEADER = ["system", "MCD dB", "MCD's DTW penalty", "ASR %WER (ours)", "Whisper %WER", "similarity to target",
          "similarity to source", "DNSMOS OVRL (predicted)", "attention diagonality", "stop-token errors"]


def paired_mcd(evals: Mapping[str, Mapping[str, Any]], a: str, b: str) -> Dict[str, Any]:
    """``a`` - ``b`` MCD per utterance (the same test sentences), mean and bootstrap interval."""
    per_a, per_b = evals[a]["mcd_db"]["per_utterance"], evals[b]["mcd_db"]["per_utterance"]
    if set(per_a) != set(per_b):
        raise StageError(f"{a} and {b} were evaluated on different sentences: rerun tts_evaluate for both")
    return bootstrap_mean([per_a[utt] - per_b[utt] for utt in sorted(per_a)])


def write_tts_report(tts_dir: Path, systems: Sequence[str], test_cuts: Path, sentences: int, seed: int) -> Dict[str, Any]:
    """The stage: see the module docstring. Returns report.json's content."""
    evals = {}
    for system in systems:
        path = tts_dir / system / "eval.json"
        if not path.is_file():
            raise StageError(f"{path} is missing: run the tts_evaluate stage for {system}")
        evals[system] = json.loads(path.read_text())
    report: Dict[str, Any] = {"systems": evals}
    if all(system in evals for system in COMPARED):
        report["finetuned_minus_scratch"] = {"mcd_db": paired_mcd(evals, *COMPARED)}
    rows = measure_rows(evals)
    with atomic_file(tts_dir / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    markdown = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    markdown += ["| " + " | ".join(row) + " |" for row in rows]
    if "finetuned_minus_scratch" in report:
        markdown += ["", f"finetuned - scratch, MCD per utterance: "
                         f"{_interval(report['finetuned_minus_scratch']['mcd_db'])} dB (negative: finetuned closer)"]
    with atomic_file(tts_dir / "report.md") as tmp:
        tmp.write_text("\n".join(markdown) + "\n")

    cuts = load_tts_cuts(test_cuts)
    shown = sorted(next(iter(evals.values()))["mcd_db"]["per_utterance"])[:sentences]
    page_sentences = {}
    for utt in shown:
        audio = {system: sf.read(str(tts_dir / system / "synth" / "wav" / f"{utt}.wav"), dtype="float32")[0]
                 for system in systems}
        page_sentences[utt] = Sentence(cuts[utt].supervisions[0].text, {**audio, RECORDING: cuts[utt].load_audio()[0]})
    write_listening_page(page_sentences, tts_dir / "listening.html", pairs=[COMPARED], seed=seed,
                         title="speechtune TTS listening test")

    plots = "".join(f"<h3>{html.escape(system)}</h3><img alt='attention of {html.escape(system)}' "
                    f"src='{png_file_uri(tts_dir / system / 'synth' / 'alignments.png')}'>" for system in systems)
    body = [f"<h1>TTS: {html.escape(', '.join(systems))} on the target voice</h1>",
            "<p>Means over the held-out test sentences with 95% bootstrap intervals. DNSMOS is a "
            "predictor of listeners' ratings, not a MOS: MOS comes from the <a href='listening.html'>"
            "listening test</a> and <code>speechtune mos</code>.</p>",
            html_table(HEADER, [[html.escape(cell) for cell in row] for row in rows])]
    if "finetuned_minus_scratch" in report:
        body.append(f"<p>finetuned - scratch, MCD per utterance: "
                    f"{_interval(report['finetuned_minus_scratch']['mcd_db'])} dB (negative: finetuned closer).</p>")
    body += ["<h2>Attention at inference</h2>", plots]
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>speechtune TTS report</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
    with atomic_file(tts_dir / "report.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return report
