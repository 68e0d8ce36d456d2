"""Every system's scores side by side (the ``report`` stage, with :mod:`speechtune.reporting.html`).

Reads ``exp/<system>/decode/<testset>/<method>/wer.json`` (written by ``score``) and
``exp/<system>/provenance.json`` (``train_seconds``, written by the training stages), and writes::

    exp/report.json   {"systems": {"<system>": {"<testset>": {"wer", "words", "ins", "del", "sub"},
                                                 ..., "train_seconds": float}}}
                      (the contract every plot, benchmark and check reads; HLG 1-best scores;
                      greedy CTC ones sit beside them under "<testset>/greedy")
    exp/report.md     the same as a table a person reads, with what fine-tuning gained on the
                      target test set and what it cost on the source test set
    exp/report_wer.png  WER per system and test set (and report_alpha.png: WER against alpha)

Usage::

    report = collect(Path("exp"), ["pretrained", "finetuned", "scratch"], ["target_test", "source_test"])
    write_report(report, Path("exp"), "report", ["target_test", "source_test"])
"""
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from speechtune.errors import StageError
from speechtune.experiment import (BASELINE, PLAIN, PRIMARY_METHOD, SCRATCH, SOURCE_TESTSET, TARGET_TESTSET,
                                   UNSEEN_TESTSET, decode_dir, system_dir)
from speechtune.provenance import atomic_file
from speechtune.reporting.plots import figure, save_png
from speechtune.scoring.significance import format_difference, wer_ci, wer_difference_ci

METHODS = (PRIMARY_METHOD, "greedy")


def _scores(path: Path) -> Dict[str, Any]:
    summary = json.loads(path.read_text())
    return {key: summary[key] for key in ("wer", "words", "ins", "del", "sub")}


def collect(exp_dir: Path, systems: Sequence[str], testsets: Sequence[str], baseline: str = BASELINE) -> Dict[str, Any]:
    """The report.json structure; a system or test set without scores is an error naming it."""
    report: Dict[str, Any] = {"systems": {}}
    for system in systems:
        entry: Dict[str, Any] = {}
        for testset in testsets:
            for method in METHODS:
                path = Path(decode_dir(system, testset, method, exp_dir)) / "wer.json"
                if path.is_file():
                    key = testset if method == PRIMARY_METHOD else f"{testset}/{method}"
                    entry[key] = _scores(path)
                    if method == PRIMARY_METHOD:
                        ci = wer_ci(path.parent / "ref.txt", path.parent / "hyp.txt")
                        entry[key]["ci95"] = [round(ci["ci_low"], 2), round(ci["ci_high"], 2)]
                elif method == PRIMARY_METHOD:
                    raise StageError(f"{path} is missing: decode and score {system} on {testset} first")
        provenance = Path(system_dir(system, exp_dir)) / "provenance.json"
        if not provenance.is_file():
            raise StageError(f"{provenance} is missing: train {system} first")
        trained = json.loads(provenance.read_text())
        entry["train_seconds"] = float(trained["train_seconds"])
        entry["trainable_parameters"] = int(trained.get("trainable_parameters", trained["parameters"]))
        entry["regularizer"] = trained.get("regularizer", "none")
        entry["alpha"] = float(trained.get("alpha", 0.0))
        report["systems"][system] = entry
    base = report["systems"].get(baseline, {}).get(SOURCE_TESTSET)
    for entry in report["systems"].values():
        if base and SOURCE_TESTSET in entry and base["wer"]:
            entry["forgetting"] = round((entry[SOURCE_TESTSET]["wer"] - base["wer"]) / base["wer"], 4)
    report["comparisons"] = comparisons(exp_dir, list(report["systems"]), testsets, baseline)
    return report


def comparison(exp_dir: Path, system: str, against: str, testset: str) -> Dict[str, Any]:
    """``system``'s WER minus ``against``'s on ``testset`` with its paired-bootstrap 95%
    interval and P(improvement) (the share of resamplings where ``system`` makes fewer errors)."""
    ref_dir = Path(decode_dir(against, testset, exp_dir=exp_dir))
    hyp = Path(decode_dir(system, testset, exp_dir=exp_dir)) / "hyp.txt"
    result = wer_difference_ci(ref_dir / "ref.txt", ref_dir / "hyp.txt", hyp)
    return {"system": system, "against": against, "testset": testset, "difference": round(result["difference"], 2),
            "ci95": [round(result["ci_low"], 2), round(result["ci_high"], 2)],
            "p_improvement": round(result["p_improvement"], 3), "text": format_difference(result, against, system)}


def comparisons(exp_dir: Path, systems: Sequence[str], testsets: Sequence[str], baseline: str) -> List[Dict[str, Any]]:
    """Each system against ``baseline``, each but scratch against plain fine-tuning, and plain
    fine-tuning against scratch, on each test set (:func:`comparison`)."""
    pairs = [(system, baseline) for system in systems if system != baseline and baseline in systems]
    if PLAIN in systems:
        pairs += [(system, PLAIN) for system in systems if system not in (baseline, PLAIN, SCRATCH)]
        if SCRATCH in systems:
            pairs.append((PLAIN, SCRATCH))
    return [comparison(exp_dir, system, against, testset) for testset in testsets for system, against in pairs]


def _comparison(report: Dict[str, Any], system: str, against: str, testset: str) -> Optional[Dict[str, Any]]:
    return next((c for c in report.get("comparisons", [])
                 if (c["system"], c["against"], c["testset"]) == (system, against, testset)), None)


def answer(report: Dict[str, Any], keep_source_within: float = 0.10) -> List[str]:
    """The report's answer, a sentence per finding: what fine-tuning gained on the target
    against no fine-tuning and against training from scratch, what it cost on the source, and
    the best system that kept the source within ``keep_source_within`` (relative) of pretrained."""
    systems, lines = report["systems"], []

    def wer(system: str, testset: str = TARGET_TESTSET) -> float:
        return systems[system][testset]["wer"]

    if not {BASELINE, PLAIN} <= set(systems):
        return lines
    lines.append(f"Fine-tuning took {TARGET_TESTSET} from {wer(BASELINE):.2f}% WER (pretrained, no fine-tuning) "
                 f"to {wer(PLAIN):.2f}% ({PLAIN}).")
    versus = _comparison(report, PLAIN, SCRATCH, TARGET_TESTSET)
    if versus is not None:
        lines.append(
            f"Training from scratch on the same target data reached {wer(SCRATCH):.2f}%: {PLAIN} minus {SCRATCH} is "
            f"{versus['difference']:+.2f} points, 95% CI [{versus['ci95'][0]:+.2f}, {versus['ci95'][1]:+.2f}], "
            f"P(fine-tuning better) = {versus['p_improvement']:.2f}; {PLAIN}/{SCRATCH} = "
            f"{wer(PLAIN) / max(wer(SCRATCH), 1e-9):.2f}.")
    if UNSEEN_TESTSET in systems[PLAIN]:
        others = ", ".join(f"{s} {wer(s, UNSEEN_TESTSET):.2f}%" for s in (BASELINE, SCRATCH) if s in systems)
        lines.append(f"On a voice family no training data has ({UNSEEN_TESTSET}): {PLAIN} {wer(PLAIN, UNSEEN_TESTSET):.2f}%"
                     + (f", {others}." if others else "."))
    source = wer(BASELINE, SOURCE_TESTSET)
    lines.append(f"It cost the source domain: {SOURCE_TESTSET} went from {source:.2f}% to "
                 f"{wer(PLAIN, SOURCE_TESTSET):.2f}% ({100 * systems[PLAIN].get('forgetting', 0):+.0f}% forgetting).")
    methods = [s for s in systems if s not in (BASELINE, PLAIN, SCRATCH)]
    kept = [s for s in methods if wer(s, SOURCE_TESTSET) <= (1 + keep_source_within) * source]
    if kept:
        best = min(kept, key=wer)
        lines.append(f"Of the systems that kept {SOURCE_TESTSET} within {100 * keep_source_within:.0f}% of pretrained, "
                     f"{best} is best on the target: {wer(best):.2f}% ({wer(best) / max(wer(PLAIN), 1e-9):.2f}x "
                     f"plain fine-tuning's), source {wer(best, SOURCE_TESTSET):.2f}%.")
    elif methods:
        closest = min(methods, key=lambda s: wer(s, SOURCE_TESTSET))
        lines.append(f"No system kept {SOURCE_TESTSET} within {100 * keep_source_within:.0f}% of pretrained; the "
                     f"closest, {closest}, is at {wer(closest, SOURCE_TESTSET):.2f}% with {wer(closest):.2f}% on the target.")
    return lines


def markdown(report: Dict[str, Any], testsets: Sequence[str], baseline: str) -> str:
    """A table of WERs per system and test set, and gains/costs relative to ``baseline``."""
    systems = report["systems"]
    header = ["system"] + [f"{t} %WER" for t in testsets]
    greedy = [t for t in testsets if any(f"{t}/greedy" in s for s in systems.values())]
    header += [f"{t} greedy %WER" for t in greedy] + ["forgetting", "trainable params", "train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in systems.items():
        cells = [name] + [f"{entry[t]['wer']:.2f} [{entry[t]['ci95'][0]:.1f}, {entry[t]['ci95'][1]:.1f}]" for t in testsets]
        cells += [f"{entry[f'{t}/greedy']['wer']:.2f}" if f"{t}/greedy" in entry else "" for t in greedy]
        cells.append(f"{100 * entry['forgetting']:+.1f}%" if "forgetting" in entry else "")
        cells += [f"{entry['trainable_parameters']:,}", f"{entry['train_seconds']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    comparisons = report.get("comparisons", [])
    if comparisons:
        lines += ["", "WER differences (system minus the other; paired bootstrap, 95% interval):", "",
                  "| system | against | test set | difference | 95% CI | P(improvement) |", "|---|---|---|---|---|---|"]
        lines += [f"| {c['system']} | {c['against']} | {c['testset']} | {c['difference']:+.2f} | "
                  f"[{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}] | {c['p_improvement']:.2f} |" for c in comparisons]
    intro = ("HLG 1-best decoding unless marked greedy (CTC, no LM); %WER with its 95% bootstrap "
             f"interval over utterances. Forgetting: relative change of {SOURCE_TESTSET} %WER against "
             f"`{baseline}`.")
    findings = "".join(f"- {line}\n" for line in answer(report))
    return (f"# speechtune report\n\n{findings}\n{intro}\n\n" if findings else f"# speechtune report\n\n{intro}\n\n") \
        + "\n".join(lines) + "\n"


def plot(report: Dict[str, Any], testsets: Sequence[str], path: Path) -> None:
    """WER per system and test set, as bars."""
    systems = list(report["systems"])
    width = 0.8 / max(len(testsets), 1)
    fig, ((ax,),) = figure(1.6 + 1.2 * len(systems), 3.6)
    for i, testset in enumerate(testsets):
        wers = [report["systems"][s][testset]["wer"] for s in systems]
        bars = ax.bar([x + i * width for x in range(len(systems))], wers, width, label=testset)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks([x + width * (len(testsets) - 1) / 2 for x in range(len(systems))], systems)
    ax.set_ylabel("%WER")
    ax.legend()
    save_png(fig, path)


def plot_tradeoff(report: Dict[str, Any], path: Path) -> None:
    """What each system gained on the target against what it cost on the source: target_test
    WER against source_test WER, one point per system (lower left is better), each
    regularizer's alpha sweep as a line through its points."""
    systems = report["systems"]
    fig, ((ax,),) = figure(6.0, 4.4)
    for name, entry in systems.items():
        ax.scatter(entry[SOURCE_TESTSET]["wer"], entry[TARGET_TESTSET]["wer"], zorder=3)
        ax.annotate(name, (entry[SOURCE_TESTSET]["wer"], entry[TARGET_TESTSET]["wer"]), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    for regularizer, points in alpha_curves(report).items():
        ax.plot([systems[s][SOURCE_TESTSET]["wer"] for _, s in points],
                [systems[s][TARGET_TESTSET]["wer"] for _, s in points], alpha=0.5, label=f"{regularizer}: alpha sweep")
    ax.set_xlabel(f"{SOURCE_TESTSET} %WER (cost: forgetting)")
    ax.set_ylabel(f"{TARGET_TESTSET} %WER (gain)")
    if alpha_curves(report):
        ax.legend(fontsize=8)
    save_png(fig, path)


def alpha_curves(report: Dict[str, Any]) -> Dict[str, List[Tuple[float, str]]]:
    """regularizer -> [(alpha, system)] sorted by alpha, for regularizers reported at two or
    more alphas; plain fine-tuning, where reported, is each one's alpha = 0."""
    curves: Dict[str, List[Tuple[float, str]]] = {}
    for name, entry in report["systems"].items():
        if entry.get("regularizer", "none") != "none":
            curves.setdefault(entry["regularizer"], []).append((entry["alpha"], name))
    if PLAIN in report["systems"]:
        for points in curves.values():
            points.append((0.0, PLAIN))
    return {reg: sorted(points) for reg, points in curves.items() if len({a for a, _ in points}) >= 2}


def plot_alpha(report: Dict[str, Any], path: Path, baseline: str) -> None:
    """Target and source WER against alpha, one colour per regularizer; the baseline dashed."""
    curves = alpha_curves(report)
    fig, axes = figure(4.5, 3.6, columns=2, sharex=True)
    for ax, testset in zip(axes[0], (TARGET_TESTSET, SOURCE_TESTSET)):
        for regularizer, points in curves.items():
            ax.plot([a for a, _ in points], [report["systems"][s][testset]["wer"] for _, s in points],
                    marker="o", label=regularizer)
        if baseline in report["systems"]:
            ax.axhline(report["systems"][baseline][testset]["wer"], color="grey", linestyle="--", label=baseline)
        ax.set_title(testset)
        # l2sp's alphas are decades below kld's and rehearsal's: linear near 0, logarithmic above.
        ax.set_xscale("symlog", linthresh=1e-3, linscale=0.5)
        ax.set_xlabel("alpha (weight of L_pre)")
        ax.set_ylabel("%WER")
    axes[0][0].legend()
    save_png(fig, path)


def write_report(report: Dict[str, Any], exp_dir: Path, name: str, testsets: Sequence[str],
                 baseline: str = BASELINE) -> str:
    """``<exp_dir>/<name>.{json,md}``, ``<name>_wer.png``, ``<name>_tradeoff.png`` (target
    against source WER) and ``<name>_alpha.png`` where regularizers were run at several alphas;
    returns the markdown."""
    with atomic_file(exp_dir / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report, testsets, baseline)
    with atomic_file(exp_dir / f"{name}.md") as tmp:
        tmp.write_text(text)
    plot(report, testsets, exp_dir / f"{name}_wer.png")
    if {TARGET_TESTSET, SOURCE_TESTSET} <= set(testsets):
        plot_tradeoff(report, exp_dir / f"{name}_tradeoff.png")
    if alpha_curves(report) and {TARGET_TESTSET, SOURCE_TESTSET} <= set(testsets):
        plot_alpha(report, exp_dir / f"{name}_alpha.png", baseline)
    return text
