"""The learning curve: how much target data does fine-tuning need? Each base system's
target_test WER at each size of target_train, over seeds (mean, min and max)::

    points = {"finetuned_lc2m_s1234": ("finetuned", 2, 1234), "finetuned": ("finetuned", 20, 1234), ...}
    curve = collect_curve(Path("exp"), points, "target_test")
    curve["systems"]["finetuned"][0]     # {"minutes": 1, "wers": {"1234": 12.3, "4321": 11.8},
                                         #  "mean": 12.05, "min": 11.8, "max": 12.3}
    write_curve(curve, Path("exp/learning_curve.json"))    # + .md and .png beside it
"""
import json
import statistics
from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

from speechtune.errors import StageError
from speechtune.experiment import PLAIN, SCRATCH, decode_dir
from speechtune.provenance import atomic_file
from speechtune.reporting.plots import figure, save_png

Point = Tuple[str, float, int]  # base system, minutes of target data, seed


def collect_curve(exp_dir: Path, points: Mapping[str, Point], testset: str) -> Dict[str, Any]:
    """``{"title", "testset", "systems": {base: [per size: minutes, wers by seed, mean, min, max]}}``
    from each point's ``wer.json`` on ``testset``."""
    by_base: Dict[str, Dict[float, Dict[str, float]]] = {}
    for system, (base, minutes, seed) in points.items():
        path = Path(decode_dir(system, testset, exp_dir=exp_dir)) / "wer.json"
        if not path.is_file():
            raise StageError(f"{path} is missing: decode and score {system} on {testset} first")
        by_base.setdefault(base, {}).setdefault(float(minutes), {})[str(seed)] = json.loads(path.read_text())["wer"]
    systems = {
        # Rounded alike (rounding keeps order): the plot's spread, mean - min, is never negative.
        base: [{"minutes": minutes, "wers": wers, "mean": round(statistics.mean(wers.values()), 2),
                "min": round(min(wers.values()), 2), "max": round(max(wers.values()), 2)} for minutes, wers in sorted(sizes.items())]
        for base, sizes in by_base.items()
    }
    curve = {"title": "Learning curve", "testset": testset, "systems": systems}
    return {**curve, "statement": statement(curve)}


def _mean_at(curve: Mapping[str, Any], system: str) -> Dict[float, float]:
    return {point["minutes"]: point["mean"] for point in curve["systems"].get(system, [])}


def statement(curve: Mapping[str, Any]) -> str:
    """Fine-tuning against scratch at each size, in one sentence."""
    finetuned, scratch = _mean_at(curve, PLAIN), _mean_at(curve, SCRATCH)
    sizes = sorted(set(finetuned) & set(scratch))
    if not sizes:
        return f"{curve['testset']} %WER per minutes of target data (mean over seeds)."
    parts = [f"{minutes:g} min: {finetuned[minutes]:.2f}% vs {scratch[minutes]:.2f}% "
             f"({finetuned[minutes] / max(scratch[minutes], 1e-9):.2f}x)" for minutes in sizes]
    return f"{PLAIN} against {SCRATCH} on {curve['testset']} (mean %WER over seeds): " + "; ".join(parts) + "."


def markdown(curve: Mapping[str, Any]) -> str:
    """A table: one row per size, one column per system, mean [min, max] over seeds."""
    systems = list(curve["systems"])
    sizes = sorted({p["minutes"] for points in curve["systems"].values() for p in points})
    cells = {(base, p["minutes"]): p for base, points in curve["systems"].items() for p in points}
    lines = [f"# {curve['title']}", "", curve["statement"], "",
             "| minutes | " + " | ".join(f"{s} %WER" for s in systems) + " |", "|---" * (len(systems) + 1) + "|"]
    for minutes in sizes:
        row = [f"{cells[(s, minutes)]['mean']:.2f} [{cells[(s, minutes)]['min']:.2f}, {cells[(s, minutes)]['max']:.2f}]"
               if (s, minutes) in cells else "" for s in systems]
        lines.append(f"| {minutes:g} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot(curve: Mapping[str, Any], path: Path) -> None:
    """WER against minutes of target data (log scale), mean over seeds with its range."""
    fig, ((ax,),) = figure(5.5, 3.8)
    for base, points in curve["systems"].items():
        minutes = [p["minutes"] for p in points]
        means = [p["mean"] for p in points]
        spread: List[List[float]] = [[p["mean"] - p["min"] for p in points], [p["max"] - p["mean"] for p in points]]
        ax.errorbar(minutes, means, yerr=spread, marker="o", capsize=3, label=base)
    ax.set_xscale("log")
    ax.set_xticks(sorted({p["minutes"] for points in curve["systems"].values() for p in points}))
    ax.get_xaxis().set_major_formatter(lambda x, _: f"{x:g}")
    ax.set_xlabel("minutes of target training data")
    ax.set_ylabel(f"{curve['testset']} %WER")
    ax.legend()
    save_png(fig, path)


def write_curve(curve: Mapping[str, Any], json_path: Path) -> None:
    """``json_path`` and the ``.md`` and ``.png`` beside it."""
    with atomic_file(json_path) as tmp:
        tmp.write_text(json.dumps(curve, indent=2) + "\n")
    with atomic_file(json_path.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(curve))
    plot(curve, json_path.with_suffix(".png"))
