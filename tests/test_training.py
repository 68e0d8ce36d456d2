"""The training loop's resume key: a rerun resumes only what the same inputs would give. With
other training cuts, another lang dir, another pretrained start or other library code, the old
checkpoints are removed and training starts afresh -- and ends where a run from nothing does."""
import json
import shutil
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from lhotse import CutSet
from lhotse.utils import fastcopy

from speechtune.errors import StageError
from speechtune.finetuning import FineTuning
from speechtune.provenance import StageRun
from speechtune.training import loop
from speechtune.training.loop import train
from tests.test_losses import CHAR_LEXICON, write_char_lang_dir
from tests.tiny_training import FEATURE_DIM, LOSS, METHOD, MODEL, TRAIN, feature_cuts

PARAMS = {**MODEL, "num_tokens": 6}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Dict[str, object]:
    root = tmp_path_factory.mktemp("training")
    return {"root": root, "lang": write_char_lang_dir(root / "lang", CHAR_LEXICON),
            "cuts": feature_cuts(root / "data", "a", 8, seed=1), "more": feature_cuts(root / "data", "b", 12, seed=2)}


def run(exp_dir: Path, lang: Path, cuts, recipe=None) -> Dict[str, torch.Tensor]:
    train(StageRun("pretrain", {}, seed=3), exp_dir, lang, cuts, cuts.subset(first=3), PARAMS, LOSS, TRAIN, recipe)
    return torch.load(exp_dir / "model.pt")["model"]


def resumed(exp_dir: Path) -> bool:
    return "resuming from" in (exp_dir / "log" / "log-train.txt").read_text()


def same(a: Dict[str, torch.Tensor], b: Dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_same_inputs_resume(data, tmp_path):
    first = run(tmp_path / "exp", data["lang"], data["cuts"])
    again = run(tmp_path / "exp", data["lang"], data["cuts"])
    assert resumed(tmp_path / "exp") and same(first, again)


def test_other_training_cuts_train_afresh(data, tmp_path):
    old = run(tmp_path / "exp", data["lang"], data["cuts"])
    new = run(tmp_path / "exp", data["lang"], data["more"])  # e.g. more target minutes
    assert not resumed(tmp_path / "exp")
    assert not same(old, new) and same(new, run(tmp_path / "fresh", data["lang"], data["more"]))


def test_changed_features_of_the_same_cuts_train_afresh(data, tmp_path):
    cuts = feature_cuts(tmp_path / "data", "c", 8, seed=4)
    run(tmp_path / "exp", data["lang"], cuts)
    for cut in cuts:  # the same cuts and shapes; other feature values (e.g. a new extractor)
        path = Path(cut.features.storage_path) / cut.features.storage_key
        np.save(path, np.load(path) + 1.0)
    run(tmp_path / "exp", data["lang"], cuts)
    assert not resumed(tmp_path / "exp")


def test_another_lang_dir_trains_afresh(data, tmp_path):
    lang = Path(shutil.copytree(data["lang"], tmp_path / "lang"))
    run(tmp_path / "exp", lang, data["cuts"])
    lexicon = lang / "lexicon.txt"
    lexicon.write_text(lexicon.read_text().replace("TOE T O E", "TOE T O"))  # a pronunciation changed
    run(tmp_path / "exp", lang, data["cuts"])
    assert not resumed(tmp_path / "exp")


def test_another_pretrained_start_trains_afresh(data, tmp_path):
    for name, seed in (("start_a", 3), ("start_b", 4)):
        train(StageRun("pretrain", {}, seed=seed), tmp_path / name, data["lang"], data["more"],
              data["more"].subset(first=3), PARAMS, LOSS, TRAIN)
    params = {**TRAIN, **METHOD}

    def fine_tune(start: str) -> None:
        method = FineTuning(tmp_path / start / "model.pt", params, data["lang"], FEATURE_DIM)
        train(StageRun("finetune", {}, seed=5), tmp_path / "exp", data["lang"], data["cuts"],
              data["cuts"].subset(first=3), method.model_params, LOSS, params, method)

    fine_tune("start_a")
    fine_tune("start_a")
    assert resumed(tmp_path / "exp")
    fine_tune("start_b")
    assert "resuming from" not in (tmp_path / "exp" / "log" / "log-train.txt").read_text().split("start_b")[-1]


def test_other_library_code_trains_afresh(data, tmp_path, monkeypatch):
    run(tmp_path / "exp", data["lang"], data["cuts"])
    monkeypatch.setattr(loop, "code_fingerprint", lambda: "the code after an edit")
    run(tmp_path / "exp", data["lang"], data["cuts"])
    assert not resumed(tmp_path / "exp")


def with_transcript(cuts, cut_id: str, text: str):
    """``cuts`` with one cut's transcript replaced (what prepare would have filtered)."""
    return cuts.map(lambda cut: fastcopy(cut, supervisions=[fastcopy(cut.supervisions[0], text=text)])
                    if cut.id == cut_id else cut).to_eager()


def test_utterances_that_cannot_align_are_logged_and_counted(data, tmp_path):
    cuts = with_transcript(data["more"], "b-005", " ".join(["TOE"] * 200))  # 600 tokens, ~30 frames
    train(StageRun("pretrain", {}, seed=3), tmp_path / "exp", data["lang"], cuts, cuts.subset(first=3),
          PARAMS, LOSS, TRAIN)
    summary = json.loads((tmp_path / "exp" / "provenance.json").read_text())
    assert summary["skipped_utterances"] == TRAIN["epochs"]  # once per epoch
    log = (tmp_path / "exp" / "log" / "log-train.txt").read_text()
    assert log.count("utterances left out: their transcript cannot align") == TRAIN["epochs"]


def test_data_that_never_aligns_stops_training_with_a_message(data, tmp_path):
    cuts = data["cuts"]
    for cut in list(cuts):
        cuts = with_transcript(cuts, cut.id, " ".join(["TOE"] * 200))
    with pytest.raises(StageError, match="no batch with an utterance that aligns|batches in a row without one"):
        train(StageRun("pretrain", {}, seed=3), tmp_path / "exp", data["lang"], cuts, cuts.subset(first=3),
              PARAMS, LOSS, TRAIN)
    assert not (tmp_path / "exp" / "model.pt").exists()


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(data, tmp_path, caplog):
    first = run(tmp_path / "exp", data["lang"], data["cuts"])
    newest = tmp_path / "exp" / f"epoch-{TRAIN['epochs']}.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # a disk that filled up, a copy cut short
    again = run(tmp_path / "exp", data["lang"], data["cuts"])
    assert f"removing {newest}: {newest} is not a readable checkpoint" in caplog.text
    log = (tmp_path / "exp" / "log" / "log-train.txt").read_text()
    assert "resuming from" in log.split("removing")[-1] and "epoch-1.pt" in log.split("resuming from")[-1]
    assert same(first, again)  # epoch 2 trained again from epoch 1: the same weights


def test_a_truncated_model_or_manifest_is_an_error_naming_the_file(data, tmp_path):
    from speechtune.data.cuts import load_cuts
    from speechtune.training.checkpoint import model_from_checkpoint

    run(tmp_path / "exp", data["lang"], data["cuts"])
    model = tmp_path / "exp" / "model.pt"
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(StageError, match=f"{model} is not a readable checkpoint"):
        model_from_checkpoint(model)
    manifest = tmp_path / "cuts.jsonl.gz"
    data["cuts"].to_file(manifest)
    manifest.write_bytes(manifest.read_bytes()[:100])
    with pytest.raises(StageError, match=f"{manifest} is not a readable cut manifest"):
        load_cuts(manifest)


def test_learning_curve_subsets_are_nested_and_independent_of_manifest_order(data):
    from speechtune.data.cuts import nested_subset

    cuts = data["more"]
    small, large = nested_subset(cuts, 0.05, seed=1), nested_subset(cuts, 0.1, seed=1)
    assert set(small.ids) < set(large.ids) < set(cuts.ids)
    assert sum(c.duration for c in small) >= 3.0 and sum(c.duration for c in large) >= 6.0
    reversed_cuts = CutSet.from_cuts(reversed(list(cuts)))
    assert list(nested_subset(reversed_cuts, 0.1, seed=1).ids) == list(large.ids)
    assert set(nested_subset(cuts, 0.1, seed=2).ids) != set(large.ids)  # the seed picks the order


def test_mixed_precision_trains_near_full_precision(data, tmp_path):
    # bfloat16 on the CPU (float16 with a gradient scaler on CUDA): the forward in reduced
    # precision, the loss in float32. Training must still get about as far.
    full = run(tmp_path / "full", data["lang"], data["cuts"])
    train(StageRun("pretrain", {}, seed=3), tmp_path / "mixed", data["lang"], data["cuts"], data["cuts"].subset(first=3),
          PARAMS, LOSS, {**TRAIN, "mixed_precision": True})
    mixed = torch.load(tmp_path / "mixed" / "model.pt")["model"]
    assert not same(full, mixed)  # the forward did run in bfloat16
    losses = [json.loads((tmp_path / d / "provenance.json").read_text())["valid_loss"] for d in ("full", "mixed")]
    assert np.isfinite(losses[1]) and abs(losses[1] - losses[0]) < 0.1 * losses[0], losses
