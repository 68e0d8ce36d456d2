"""The report as one HTML page: every system's scores, their uncertainty and examples.

Reads ``exp/report.json`` (:mod:`speechtune.reporting.report`: the WERs, their bootstrap intervals and the
paired comparisons, computed once there), each ``exp/<system>/decode/<testset>/hlg/``
(``ref.txt``, ``hyp.txt``, ``per_spk.txt``), ``exp/<system>/tensorboard/`` (training's
``train/loss`` and ``valid/loss``) and the test sets' cuts ``data/fbank/<testset>_cuts.jsonl.gz``
(for audio), and writes one self-contained HTML file (plots as PNG and audio as WAV data URIs,
inline style, no script, nothing fetched from elsewhere) holding:

- the WER of each system on each test set with its 95% bootstrap interval, and each system
  against ``pretrained`` and plain fine-tuning (the difference, its interval and P(improvement));
- a bar chart of those WERs with their intervals, and the learning curves of each trained system;
- WER per speaker, and per test set the utterances on which the systems disagree most (the
  largest spread of per-utterance WER), each system's hypothesis aligned to the reference
  (kaldialign), with the audio to listen to (left out, logged, where the cuts or audio are missing);
- every other ``exp/*.png`` (e.g. the alpha sweep's plots), under its file name.

Usage (the ``report`` stage writes it beside report.json)::

    page = build_report(Path("exp"), ["pretrained", "finetuned", "scratch"], ["target_test", "source_test"])
"""
import base64
import html
import io
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from speechtune.data.tables import read_word_table
from speechtune.errors import StageError
from speechtune.experiment import PRIMARY_METHOD, decode_dir, feature_cuts
from speechtune.provenance import atomic_file
from speechtune.reporting.plots import figure, png_data_uri
from speechtune.reporting.report import answer
from speechtune.scoring.significance import (DEFAULT_REPLICATIONS, DEFAULT_SEED, UtteranceErrors, check_same_test_set,
                                             utterance_errors)
from speechtune.scoring.wer import EPS, align_utterance

log = logging.getLogger("speechtune.report_html")

LOSS_TAGS = ("train/loss", "valid/loss")  # written by speechtune.training.loop
CURVES_PER_ROW = 4
# speechtune.reporting.report's bar chart: this page draws the same bars with their intervals.
SUPERSEDED_PLOTS = ("report_wer.png",)
STYLE = """
body { font-family: sans-serif; max-width: 80em; margin: 1em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
table.ali th, table.ali td { border: none; text-align: left; font-family: monospace; padding: 0 0.3em; }
table.ali tr.ref > * { padding-top: 0.5em; color: #555; }
.S { background: #fcc; } .I { background: #cfc; } .D { background: #ccf; }
img { max-width: 100%; } p.note { color: #555; font-size: 0.9em; }
"""


def html_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """An HTML table of already-escaped cells."""
    lines = ["<table>", "<tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr>"]
    lines += ["<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows]
    return "\n".join(lines + ["</table>"])


def load_errors(exp_dir: Path, systems: Sequence[str], testsets: Sequence[str]) -> Dict[str, Dict[str, UtteranceErrors]]:
    """Per-utterance errors, ``{testset: {system: UtteranceErrors}}``, from each decode dir;
    the systems of a test set must have decoded the same utterances."""
    errors = {}
    for testset in testsets:
        errors[testset] = {
            system: utterance_errors(Path(decode_dir(system, testset, exp_dir=exp_dir)) / "ref.txt",
                                     Path(decode_dir(system, testset, exp_dir=exp_dir)) / "hyp.txt")
            for system in systems
        }
        first, *others = errors[testset].values()
        for other in others:
            check_same_test_set(first, other)
    return errors


def read_report(path: Path, systems: Sequence[str], testsets: Sequence[str]) -> Dict[str, Any]:
    """report.json (:mod:`speechtune.reporting.report`), which must hold every system on every test set."""
    if not path.is_file():
        raise StageError(f"{path} is missing: run the report stage first")
    report = json.loads(path.read_text())
    missing = [f"{s} on {t}" for s in systems for t in testsets if t not in report["systems"].get(s, {})]
    if missing:
        raise StageError(f"{path} has no scores for {', '.join(missing[:3])}: rerun the report stage with these systems")
    return report


def wer_section(report: Dict[str, Any], errors: Dict[str, Dict[str, UtteranceErrors]]) -> str:
    """The system x test set table with intervals, the comparisons and the bar chart."""
    testsets = list(errors)
    systems = list(errors[testsets[0]])
    scores = {t: {s: report["systems"][s][t] for s in systems} for t in testsets}
    header = ["system"] + [
        f"{html.escape(t)} %WER [95% CI]<br>({len(errors[t][systems[0]].utterances)} utts, "
        f"{scores[t][systems[0]]['words']} words)" for t in testsets
    ]
    parts = ["<h2>Word error rates</h2>", html_table(header, [
        [html.escape(s)] + [f"{scores[t][s]['wer']:.2f} [{scores[t][s]['ci95'][0]:.2f}, {scores[t][s]['ci95'][1]:.2f}]"
                            for t in testsets] for s in systems
    ])]
    differences = [c for c in report.get("comparisons", []) if c["system"] in systems and c["against"] in systems]
    if differences:
        parts += ["<h3>Differences (%WER, negative: fewer errors)</h3>", html_table(
            ["system", "against", "test set", "difference", "95% CI", "P(improvement)"],
            [[html.escape(c["system"]), html.escape(c["against"]), html.escape(c["testset"]),
              f"{c['difference']:+.2f}", f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]", f"{c['p_improvement']:.2f}"]
             for c in differences])]
    parts.append(
        f'<p class="note">Intervals: percentiles of {DEFAULT_REPLICATIONS} bootstrap resamplings of the test '
        f"utterances (seed {DEFAULT_SEED}; Bisani &amp; Ney 2004, as Kaldi's compute-wer-bootci); the two "
        f"systems of a difference are resampled together. P(improvement): the fraction of "
        f"resamplings in which the second system makes fewer errors than the first.</p>"
    )
    fig, axes = figure(1.6 + 1.3 * len(systems), 3.8)
    ax = axes[0][0]
    width = 0.8 / len(testsets)
    for i, testset in enumerate(testsets):
        wer = np.array([scores[testset][s]["wer"] for s in systems])
        low = np.array([scores[testset][s]["ci95"][0] for s in systems])
        high = np.array([scores[testset][s]["ci95"][1] for s in systems])
        bars = ax.bar(np.arange(len(systems)) + i * width, wer, width, yerr=np.maximum(0, [wer - low, high - wer]),
                      capsize=3, label=testset)
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    ax.set_xticks(np.arange(len(systems)) + width * (len(testsets) - 1) / 2, systems, rotation=15)
    ax.set_ylabel("%WER (95% CI)")
    ax.legend()
    parts.append(f'<img alt="WER per system" src="{png_data_uri(fig)}">')
    return "\n".join(parts)


def png_file_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def answer_section(report: Dict[str, Any], tradeoff_png: Path, findings: Sequence[Path]) -> str:
    """What fine-tuning bought, first: the report's answer in sentences, the gain/cost scatter of
    every system, then each finding (a JSON with a ``statement`` and a PNG of the same name:
    time to target, the learning curve)."""
    parts = ["<h2>What fine-tuning bought</h2>", "<ul>"]
    parts += [f"<li>{html.escape(line)}</li>" for line in answer(report)] + ["</ul>"]
    if tradeoff_png.is_file():
        parts.append(f'<img alt="target against source WER" src="{png_file_uri(tradeoff_png)}">')
    for path in findings:
        finding = json.loads(path.read_text())
        parts += [f"<h3>{html.escape(finding['title'])}</h3>", f"<p>{html.escape(finding['statement'])}</p>"]
        if path.with_suffix(".png").is_file():
            parts.append(f'<img alt="{html.escape(finding["title"])}" src="{png_file_uri(path.with_suffix(".png"))}">')
    return "\n".join(parts)


def learning_curves(system_dir: Path) -> Dict[str, Tuple[List[int], List[float]]]:
    """``{tag: (steps, values)}`` of the loss tags in ``system_dir/tensorboard`` (empty when
    there is none, e.g. an imported model)::

        >>> steps, losses = learning_curves(Path("exp/finetuned"))["valid/loss"]
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    directory = system_dir / "tensorboard"
    if not directory.is_dir():
        return {}
    events = EventAccumulator(str(directory), size_guidance={"scalars": 0})  # 0: keep every point
    events.Reload()
    present = set(events.Tags()["scalars"])
    return {
        tag: ([e.step for e in events.Scalars(tag)], [e.value for e in events.Scalars(tag)])
        for tag in LOSS_TAGS if tag in present
    }


def curves_section(exp_dir: Path, systems: Sequence[str]) -> str:
    curves = {system: learning_curves(exp_dir / system) for system in systems}
    skipped = [s for s in systems if not curves[s]]
    for system in skipped:
        log.info("no %s in %s: no learning curve for %s", " or ".join(LOSS_TAGS), exp_dir / system / "tensorboard", system)
    trained = [s for s in systems if curves[s]]
    parts = ["<h2>Training curves</h2>"]
    if trained:
        columns = min(len(trained), CURVES_PER_ROW)
        fig, axes = figure(3.6, 3.0, rows=-(-len(trained) // columns), columns=columns)
        for ax in axes.flat[len(trained):]:
            ax.set_visible(False)
        for ax, system in zip(axes.flat, trained):
            for tag, (steps, values) in curves[system].items():
                style = {"marker": "o", "markersize": 3} if tag.startswith("valid") else {"linewidth": 0.6, "alpha": 0.7}
                ax.plot(steps, values, label=tag, **style)
            ax.set_yscale("log")
            ax.set_title(system)
            ax.set_xlabel("step")
            ax.legend(fontsize=8)
        for row in axes:
            row[0].set_ylabel("loss per frame")
        parts.append(f'<img alt="training curves" src="{png_data_uri(fig)}">')
    if skipped:
        parts.append(f'<p class="note">No training curves for: {html.escape(", ".join(skipped))}.</p>')
    return "\n".join(parts)


def speakers_section(exp_dir: Path, systems: Sequence[str], testsets: Sequence[str]) -> str:
    parts = ["<h2>WER per speaker</h2>"]
    for testset in testsets:
        per_speaker = {}
        for system in systems:
            path = Path(decode_dir(system, testset, exp_dir=exp_dir)) / "wer.json"
            if not path.is_file():
                raise StageError(f"{path} is missing: score {system} on {testset} first")
            per_speaker[system] = json.loads(path.read_text())["per_speaker"]
        speakers = sorted(set().union(*per_speaker.values()))
        rows = [
            [html.escape(spk), str(next(p[spk]["words"] for p in per_speaker.values() if spk in p))]
            + [f"{per_speaker[s][spk]['wer']:.2f}" if spk in per_speaker[s] else "" for s in systems]
            for spk in speakers
        ]
        parts += [f"<h3>{html.escape(testset)}</h3>",
                  html_table(["speaker", "words"] + [f"{html.escape(s)} %WER" for s in systems], rows)]
    return "\n".join(parts)


def pick_examples(errors: Dict[str, UtteranceErrors], count: int) -> List[str]:
    """The ``count`` utterances whose per-utterance WER differs most between systems (largest
    max - min over systems; ties by id): where fine-tuning helped or hurt most."""
    per_utt = np.stack([e.errors / np.maximum(e.words, 1) for e in errors.values()])
    spread = per_utt.max(axis=0) - per_utt.min(axis=0)
    utterances = next(iter(errors.values())).utterances
    order = sorted(range(len(utterances)), key=lambda i: (-spread[i], utterances[i]))
    return [utterances[i] for i in order[:count]]


def audio_data_uris(cuts_path: Path, utterances: Sequence[str]) -> Dict[str, str]:
    """``{utt: "data:audio/wav;base64,..."}`` (16-bit mono WAV at the cut's sampling rate: 16 kHz
    after ``prepare``) of the cuts of ``cuts_path`` with these ids; an absent manifest or
    unreadable audio leaves them out, logged::

        >>> audio_data_uris(Path("data/fbank/target_test_cuts.jsonl.gz"), ["tgt-spk09-test-00000"])
    """
    import soundfile
    from lhotse import CutSet
    from lhotse.audio import AudioLoadingError

    if not cuts_path.is_file():
        log.warning("%s is missing: the examples go without audio", cuts_path)
        return {}
    wanted = set(utterances)
    uris = {}
    for cut in CutSet.from_file(cuts_path):
        if cut.id not in wanted:
            continue
        try:
            samples = cut.load_audio()
        except AudioLoadingError as e:
            log.warning("%s: cannot load the audio of %s (%s): it goes without audio", cuts_path, cut.id, e)
            continue
        buffer = io.BytesIO()
        soundfile.write(buffer, samples[0], cut.sampling_rate, format="WAV", subtype="PCM_16")
        uris[cut.id] = "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    for utt in sorted(wanted - set(uris)):
        log.warning("%s: no audio for %s", cuts_path, utt)
    return uris


def _alignment_rows(label: str, ref: Sequence[str], hyp: Sequence[str]) -> str:
    counts, alignment = align_utterance(ref, hyp)
    ops = ["I" if r == EPS else "D" if h == EPS else "C" if r == h else "S" for r, h in alignment]
    ref_cells = "".join(f'<td class="{o}">{html.escape(r)}</td>' for (r, _), o in zip(alignment, ops))
    hyp_cells = "".join(f'<td class="{o}">{html.escape(h)}</td>' for (_, h), o in zip(alignment, ops))
    return (f'<tr class="ref"><th>ref</th>{ref_cells}</tr>\n'
            f"<tr><th>{html.escape(label)} ({counts.errors} errors)</th>{hyp_cells}</tr>")


def examples_section(
    errors: Dict[str, Dict[str, UtteranceErrors]], root: Path, count: int
) -> str:
    parts = [
        "<h2>Examples</h2>",
        '<p class="note">Per test set, the utterances whose WER differs most between systems. '
        'Each hypothesis is aligned to the reference: <span class="S">substitution</span>, '
        '<span class="I">insertion</span>, <span class="D">deletion</span>.</p>',
    ]
    for testset, by_system in errors.items():
        chosen = pick_examples(by_system, count)
        audio = audio_data_uris(root / feature_cuts(testset), chosen)
        hyps = {system: read_word_table(e.hyp_path) for system, e in by_system.items()}
        refs = read_word_table(next(iter(by_system.values())).ref_path)
        parts.append(f"<h3>{html.escape(testset)}</h3>")
        for utt in chosen:
            parts.append(f"<h4>{html.escape(utt)}</h4>")
            if utt in audio:
                parts.append(f'<audio controls preload="none" src="{audio[utt]}"></audio>')
            rows = [_alignment_rows(system, refs[utt], hyps[system][utt]) for system in by_system]
            parts.append('<table class="ali">\n' + "\n".join(rows) + "\n</table>")
    return "\n".join(parts)


def other_plots_section(exp_dir: Path, shown: Sequence[Path]) -> str:
    """Every ``exp_dir/*.png`` that this page does not show elsewhere (e.g. the alpha sweep's),
    under its file name."""
    parts = []
    for path in sorted(exp_dir.glob("*.png")):
        if path.name not in SUPERSEDED_PLOTS and path not in shown:
            parts += [f"<h3>{html.escape(path.name)}</h3>",
                      f'<img alt="{html.escape(path.name)}" src="{png_file_uri(path)}">']
    return "\n".join(["<h2>Other plots</h2>"] + parts) if parts else ""


def build_report(
    exp_dir: Path, systems: Sequence[str], testsets: Sequence[str], examples: int = 3,
    report_json: Optional[Path] = None, findings: Sequence[Path] = (),
) -> str:
    """The page, as a string (``report_json``: default ``exp_dir/report.json``, its
    ``<name>_tradeoff.png`` beside it; ``findings``: JSON files such as time_to_target.json,
    shown first with their PNGs; the test sets' audio is found under ``data/`` beside
    ``exp_dir``)::

        >>> page = build_report(Path("exp"), ["pretrained", "finetuned", "scratch"], ["target_test", "source_test"])
        >>> Path("report.html").write_text(page, encoding="utf-8")
    """
    exp_dir = Path(exp_dir)
    report_json = Path(report_json or exp_dir / "report.json")
    report = read_report(report_json, systems, testsets)
    errors = load_errors(exp_dir, systems, testsets)
    tradeoff = report_json.with_name(f"{report_json.stem}_tradeoff.png")
    sections = [
        answer_section(report, tradeoff, findings),
        wer_section(report, errors),
        curves_section(exp_dir, systems),
        speakers_section(exp_dir, systems, testsets),
        examples_section(errors, exp_dir.parent, examples) if examples > 0 else "",
        other_plots_section(exp_dir, [tradeoff, *(Path(f).with_suffix(".png") for f in findings)]),
    ]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        "<title>speechtune report</title>", f"<style>{STYLE}</style>", "</head>", "<body>",
        "<h1>speechtune report</h1>",
        f'<p class="note">{html.escape(str(exp_dir))}: {PRIMARY_METHOD.upper()} 1-best decoding.</p>',
        *filter(None, sections), "</body>", "</html>", "",
    ])


def write_html_report(exp_dir: Path, systems: Sequence[str], testsets: Sequence[str], output: Path,
                      report_json: Optional[Path] = None, examples: int = 3, findings: Sequence[Path] = ()) -> None:
    """:func:`build_report` written (atomically) to ``output``."""
    logging.getLogger("tensorboard").setLevel(logging.ERROR)  # its event-file walk, line by line
    page = build_report(exp_dir, systems, testsets, examples, report_json, findings)
    with atomic_file(output) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("wrote %s (%.0f kB)", output, len(page.encode("utf-8")) / 1024)
