"""Stage ``report``: every system's scores side by side.

Reads ``exp/<system>/decode/<testset>/<method>/wer.json`` (written by ``score``) and
``exp/<system>/provenance.json`` (``train_seconds``, written by the training stages), and writes::

    exp/report.json   {"systems": {"<system>": {"<testset>": {"wer", "words", "ins", "del", "sub"},
                                                 ..., "train_seconds": float}}}
                      (the contract of DESIGN.md; HLG 1-best scores; greedy CTC ones sit beside
                      them under "<testset>/greedy")
    exp/report.md     the same as a table a person reads, with what fine-tuning gained on the
                      target test set and what it cost on the source test set
    exp/report_wer.png  WER per system and test set

Usage::

    python -m stages.report exp --systems pretrained finetuned scratch \\
        --testsets target_test source_test
"""
import argparse
import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from stages.cli import StageError, run_cli
from stages.provenance import atomic_file

PRIMARY_METHOD = "hlg"
METHODS = ("hlg", "greedy")


def _scores(path: Path) -> Dict[str, Any]:
    summary = json.loads(path.read_text())
    return {key: summary[key] for key in ("wer", "words", "ins", "del", "sub")}


def collect(exp_dir: Path, systems: Sequence[str], testsets: Sequence[str]) -> Dict[str, Any]:
    """The report.json structure; a system or test set without scores is an error naming it."""
    report: Dict[str, Any] = {"systems": {}}
    for system in systems:
        entry: Dict[str, Any] = {}
        for testset in testsets:
            for method in METHODS:
                path = exp_dir / system / "decode" / testset / method / "wer.json"
                if path.is_file():
                    key = testset if method == PRIMARY_METHOD else f"{testset}/{method}"
                    entry[key] = _scores(path)
                elif method == PRIMARY_METHOD:
                    raise StageError(f"{path} is missing: decode and score {system} on {testset} first")
        provenance = exp_dir / system / "provenance.json"
        if not provenance.is_file():
            raise StageError(f"{provenance} is missing: train {system} first")
        entry["train_seconds"] = float(json.loads(provenance.read_text())["train_seconds"])
        report["systems"][system] = entry
    return report


def _relative_change(new: float, old: float) -> str:
    return f"{100 * (new - old) / old:+.1f}%" if old else "n/a"


def markdown(report: Dict[str, Any], testsets: Sequence[str], baseline: str) -> str:
    """A table of WERs per system and test set, and gains/costs relative to ``baseline``."""
    systems = report["systems"]
    header = ["system"] + [f"{t} %WER" for t in testsets]
    greedy = [t for t in testsets if any(f"{t}/greedy" in s for s in systems.values())]
    header += [f"{t} greedy %WER" for t in greedy] + ["train s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in systems.items():
        cells = [name] + [f"{entry[t]['wer']:.2f}" for t in testsets]
        cells += [f"{entry[f'{t}/greedy']['wer']:.2f}" if f"{t}/greedy" in entry else "" for t in greedy]
        cells.append(f"{entry['train_seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    if baseline in systems:
        lines += ["", f"Relative change of %WER against `{baseline}` (negative: fewer errors):", ""]
        base = systems[baseline]
        for name, entry in systems.items():
            if name != baseline:
                changes = ", ".join(f"{t} {_relative_change(entry[t]['wer'], base[t]['wer'])}" for t in testsets)
                lines.append(f"- {name}: {changes}")
    return "# speechtune report\n\nHLG 1-best decoding unless marked greedy (CTC, no LM).\n\n" + "\n".join(lines) + "\n"


def plot(report: Dict[str, Any], testsets: Sequence[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems = list(report["systems"])
    width = 0.8 / max(len(testsets), 1)
    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(systems), 3.6))
    for i, testset in enumerate(testsets):
        wers = [report["systems"][s][testset]["wer"] for s in systems]
        bars = ax.bar([x + i * width for x in range(len(systems))], wers, width, label=testset)
        ax.bar_label(bars, fmt="%.1f", fontsize=8)
    ax.set_xticks([x + width * (len(testsets) - 1) / 2 for x in range(len(systems))], systems)
    ax.set_ylabel("%WER")
    ax.legend()
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stages.report", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("exp_dir", type=Path)
    parser.add_argument("--systems", nargs="+", required=True)
    parser.add_argument("--testsets", nargs="+", required=True)
    parser.add_argument("--baseline", default="pretrained", help="the system others are compared to")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    report = collect(args.exp_dir, args.systems, args.testsets)
    with atomic_file(args.exp_dir / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report, args.testsets, args.baseline)
    with atomic_file(args.exp_dir / "report.md") as tmp:
        tmp.write_text(text)
    plot(report, args.testsets, args.exp_dir / "report_wer.png")
    print(text)


if __name__ == "__main__":
    run_cli(main)
