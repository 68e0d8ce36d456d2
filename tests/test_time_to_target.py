"""Time to target: when plain fine-tuning reached scratch's final dev WER, from per-epoch curves."""
from speechtune.reporting.time_to_target import first_reaching, statement


def curve(*points):
    return [{"epoch": i + 1, "train_seconds": seconds, "dev_wer": wer} for i, (seconds, wer) in enumerate(points)]


def result(finetuned, scratch, scratch_final):
    systems = {"finetuned": {"epochs": finetuned, "train_seconds": finetuned[-1]["train_seconds"]},
               "scratch": {"epochs": scratch, "train_seconds": scratch[-1]["train_seconds"],
                           "final_dev_wer": scratch_final}}
    point = first_reaching(finetuned, scratch_final)
    reached = None if point is None else {
        "epoch": point["epoch"], "train_seconds": point["train_seconds"],
        "share_of_reference": round(point["train_seconds"] / systems["scratch"]["train_seconds"], 3)}
    return {"systems": systems, "reference": "scratch", "target_dev_wer": scratch_final, "reached": reached}


def test_the_first_epoch_at_or_below_the_target_counts():
    finetuned = curve((10, 30.0), (20, 12.0), (30, 9.0), (40, 8.0))
    assert first_reaching(finetuned, 12.0)["epoch"] == 2
    assert first_reaching(finetuned, 5.0) is None
    said = statement(result(finetuned, curve((50, 40.0), (100, 12.0)), 12.0))
    assert said == ("finetuned reached scratch's final target_dev WER (12.00) after epoch 2, 20 s of training: "
                    "20% of scratch's 100 s.")


def test_never_reaching_is_said_so():
    said = statement(result(curve((10, 30.0), (20, 25.0)), curve((50, 40.0), (100, 12.0)), 12.0))
    assert said == "finetuned never reached scratch's final target_dev WER of 12.00 in its training."
