"""Time to target: does fine-tuning save compute? The target_dev WER of plain fine-tuning and of
training from scratch after every epoch, against the training seconds spent so far, and when
fine-tuning reached scratch's final dev WER::

    result = time_to_target(Path("exp"), ["finetuned", "scratch"], Path("data/lang_phone_target"),
                            dev_cuts, config["decode"])
    result["reached"]     # {"system": "finetuned", "epoch": 2, "train_seconds": 21.4,
                          #  "share_of_reference": 0.19, "reference": "scratch", ...} or None
    plot_time_to_target(result, Path("exp/time_to_target.png"))

Every ``epoch-<n>.pt`` a training run wrote is decoded (HLG 1-best, the target LM); its
``train_seconds`` is the training time up to the end of that epoch (validation and decoding
not counted). The reference's *final* dev WER is that of its ``model.pt`` (the model the report
scores).
"""
import json
import re
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

from lhotse import CutSet

from speechtune.decoding import hlg_word_errors
from speechtune.experiment import DEV_SET, system_dir, testset_domain
from speechtune.provenance import atomic_file
from speechtune.reporting.plots import figure, save_png
from speechtune.training.checkpoint import load_checkpoint, model_from_checkpoint

EPOCH_CHECKPOINT = re.compile(r"epoch-(\d+)\.pt$")


def dev_wer_per_epoch(exp_dir: Path, system: str, lang_dir: Path, cuts: CutSet,
                      params: Mapping[str, Any]) -> Dict[str, Any]:
    """``{"epochs": [{"epoch", "train_seconds", "dev_wer"}], "final_dev_wer", "train_seconds"}``
    of one system's directory."""
    directory = Path(system_dir(system, exp_dir))
    lm = testset_domain(DEV_SET)
    epochs = sorted((int(m.group(1)), path) for path in directory.glob("epoch-*.pt")
                    if (m := EPOCH_CHECKPOINT.search(path.name)))
    curve = []
    for epoch, path in epochs:
        errors = hlg_word_errors(model_from_checkpoint(path), lang_dir, lm, cuts, params)
        curve.append({"epoch": epoch, "train_seconds": round(float(load_checkpoint(path)["train_seconds"]), 1),
                      "dev_wer": round(errors.wer, 2)})
    final = hlg_word_errors(model_from_checkpoint(directory / "model.pt"), lang_dir, lm, cuts, params)
    trained = json.loads((directory / "provenance.json").read_text())["train_seconds"]
    return {"epochs": curve, "final_dev_wer": round(final.wer, 2), "train_seconds": float(trained)}


def first_reaching(curve: Sequence[Mapping[str, Any]], target_wer: float) -> Optional[Mapping[str, Any]]:
    """The first epoch of ``curve`` whose dev WER is at most ``target_wer``."""
    return next((point for point in curve if point["dev_wer"] <= target_wer), None)


def time_to_target(exp_dir: Path, systems: Sequence[str], lang_dir: Path, cuts: CutSet,
                   params: Mapping[str, Any]) -> Dict[str, Any]:
    """The curves of ``systems`` (the first: the one measured, e.g. finetuned; the second: the
    reference, e.g. scratch) and when the first reached the reference's final dev WER."""
    measured, reference = systems
    curves = {system: dev_wer_per_epoch(exp_dir, system, lang_dir, cuts, params) for system in systems}
    target = curves[reference]["final_dev_wer"]
    point = first_reaching(curves[measured]["epochs"], target)
    reached = None
    if point is not None:
        reached = {"system": measured, "reference": reference, "target_dev_wer": target, "epoch": point["epoch"],
                   "train_seconds": point["train_seconds"],
                   "share_of_reference": round(point["train_seconds"] / curves[reference]["train_seconds"], 3)}
    return {"systems": curves, "reference": reference, "target_dev_wer": target, "reached": reached}


def statement(result: Mapping[str, Any]) -> str:
    """The answer in one sentence."""
    reached, reference = result["reached"], result["reference"]
    measured = next(s for s in result["systems"] if s != reference)
    if reached is None:
        return (f"{measured} never reached {reference}'s final target_dev WER of "
                f"{result['target_dev_wer']:.2f} in its training.")
    return (f"{measured} reached {reference}'s final target_dev WER ({result['target_dev_wer']:.2f}) after epoch "
            f"{reached['epoch']}, {reached['train_seconds']:.0f} s of training: "
            f"{100 * reached['share_of_reference']:.0f}% of {reference}'s {result['systems'][reference]['train_seconds']:.0f} s.")


def plot_time_to_target(result: Mapping[str, Any], path: Path) -> None:
    """Dev WER against training seconds, one line per system, the reference's final dashed."""
    fig, ((ax,),) = figure(5.5, 3.6)
    for system, curve in result["systems"].items():
        ax.plot([p["train_seconds"] for p in curve["epochs"]], [p["dev_wer"] for p in curve["epochs"]],
                marker="o", label=system)
    ax.axhline(result["target_dev_wer"], color="grey", linestyle="--", label=f"{result['reference']} final")
    ax.set_xlabel("training seconds")
    ax.set_ylabel(f"{DEV_SET} %WER")
    ax.set_yscale("log")
    ax.legend()
    save_png(fig, path)


def write_time_to_target(result: Mapping[str, Any], json_path: Path, png_path: Path) -> None:
    with atomic_file(json_path) as tmp:
        tmp.write_text(json.dumps({"title": "Time to target", **result, "statement": statement(result)},
                                  indent=2) + "\n")
    plot_time_to_target(result, png_path)
