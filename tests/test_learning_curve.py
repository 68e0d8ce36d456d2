"""The learning curve's summary and plot (speechtune.reporting.learning_curve)."""
import json
from pathlib import Path

from speechtune.experiment import decode_dir
from speechtune.reporting.learning_curve import collect_curve, write_curve


def test_one_seed_with_unrounded_wers_plots(tmp_path: Path) -> None:
    """A WER with more than two decimals used to make mean - min negative (the mean was rounded,
    min was not) and the plot fail: the default curve has one seed."""
    points = {"finetuned_lc2m_s1": ("finetuned", 2, 1), "scratch_lc2m_s1": ("scratch", 2, 1),
              "finetuned": ("finetuned", 20, 1), "scratch": ("scratch", 20, 1)}
    wers = {"finetuned_lc2m_s1": 14.5946, "scratch_lc2m_s1": 60.0051, "finetuned": 10.0, "scratch": 29.8378}
    for system, wer in wers.items():
        directory = Path(decode_dir(system, "target_test", exp_dir=tmp_path))
        directory.mkdir(parents=True)
        (directory / "wer.json").write_text(json.dumps({"wer": wer}))
    curve = collect_curve(tmp_path, points, "target_test")
    write_curve(curve, tmp_path / "learning_curve.json")
    two_minutes = curve["systems"]["finetuned"][0]
    assert two_minutes["minutes"] == 2 and two_minutes["min"] <= two_minutes["mean"] <= two_minutes["max"]
    assert (tmp_path / "learning_curve.png").stat().st_size > 0
    assert "2 min: 14.59% vs 60.01% (0.24x)" in curve["statement"]
