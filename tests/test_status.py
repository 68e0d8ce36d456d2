"""speechtune status: built / stale / missing from a fake exp/ tree, never running a stage."""
import json
import os
from pathlib import Path
from typing import Any, Dict, List

import pytest

from speechtune.config import DEFAULT_CONFIG_PATH, load_config
from speechtune.__main__ import main

CONFIG = load_config([DEFAULT_CONFIG_PATH])
SEED = CONFIG["seed"]
T_DATA, T_PRETRAINED, T_MODEL, T_DECODE, T_SCORE = 1000, 2000, 3000, 4000, 5000  # mtimes, in order


def touch(path: Path, mtime: float, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (mtime, mtime))
    return path


def train(root: Path, system: str, config: Dict[str, Any], inputs: List[str], mtime: float = T_MODEL) -> None:
    """What a training stage leaves: model.pt and provenance.json with its resolved config and
    command (inputs, then the output dir and a --config-json too long to be a file name)."""
    command = [f"/repo/stages/{system}.py", *inputs, f"exp/{system}", "--config-json",
               json.dumps(config, sort_keys=True), "--seed", str(SEED)]
    touch(root / "exp" / system / "provenance.json", mtime, json.dumps({"config": config, "seed": SEED, "command": command}))
    touch(root / "exp" / system / "model.pt", mtime)


def decode(root: Path, system: str, testset: str, wer: float, decode_config: Dict[str, Any] = CONFIG["decode"]) -> None:
    decode_dir = root / "exp" / system / "decode" / testset
    command = ["/repo/stages/decode.py", f"exp/{system}/model.pt", "data/lang_phone_target", "target",
               f"data/fbank/{testset}_cuts.jsonl.gz", f"exp/{system}/decode/{testset}"]
    touch(decode_dir / "provenance.json", T_DECODE, json.dumps({"config": decode_config, "seed": SEED, "command": command}))
    touch(decode_dir / "hlg" / "hyp.txt", T_DECODE)
    touch(decode_dir / "hlg" / "wer.json", T_SCORE, json.dumps({"wer": wer}))


# The resolved sections the Snakefile passes each training stage, written out by hand.
PRETRAINED = {"model": CONFIG["model"], "loss": CONFIG["loss"], "pretrain": CONFIG["pretrain"]}
FINETUNED = {"loss": CONFIG["loss"], "finetune": CONFIG["finetune"]}
FINETUNED_MMI = {"loss": {**CONFIG["loss"], "type": "mmi"}, "finetune": CONFIG["finetune"]}
SCRATCH = {"model": CONFIG["model"], "loss": CONFIG["loss"], "scratch": CONFIG["scratch"],
           "finetune": {**CONFIG["finetune"], **CONFIG["scratch"]}}
TARGET_INPUTS = ["data/fbank/target_train_cuts.jsonl.gz", "data/fbank/target_dev_cuts.jsonl.gz", "data/lang_phone_target"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """pretrained, finetuned and scratch built and scored; finetuned_mmi trained with CTC (a
    config the current one does not give it)."""
    for name in ("source_train", "target_train", "target_dev", "target_test", "source_test"):
        touch(tmp_path / "data" / "fbank" / f"{name}_cuts.jsonl.gz", T_DATA)
    (tmp_path / "data" / "lang_phone_target").mkdir()
    source_inputs = ["data/fbank/source_train_cuts.jsonl.gz", "data/lang_phone_source"]
    train(tmp_path, "pretrained", PRETRAINED, source_inputs, T_PRETRAINED)
    train(tmp_path, "finetuned", FINETUNED, ["exp/pretrained/model.pt", *TARGET_INPUTS])
    train(tmp_path, "finetuned_mmi", FINETUNED, ["exp/pretrained/model.pt", *TARGET_INPUTS])
    train(tmp_path, "scratch", SCRATCH, TARGET_INPUTS)
    for system, wer in (("pretrained", 90.5), ("finetuned", 20.25), ("finetuned_mmi", 19.0), ("scratch", 30.0)):
        decode(tmp_path, system, "target_test", wer)
    decode(tmp_path, "pretrained", "source_test", 7.125)
    return tmp_path


def status(root: Path, capsys, *args: str) -> Dict[str, Any]:
    main(["status", "--exp-dir", str(root / "exp"), "--json", *args])
    return json.loads(capsys.readouterr().out)["systems"]


def test_built_stale_and_missing(root: Path, capsys):
    systems = status(root, capsys)
    assert list(systems)[:3] == ["pretrained", "finetuned", "finetuned_mmi"] and list(systems)[-1] == "scratch"
    assert systems["pretrained"] == {"system": "pretrained", "state": "built", "reasons": [],
                                     "wer": {"target_test": 90.5, "target_test_unseen": None, "source_test": 7.125}}
    assert systems["finetuned"]["state"] == "built"
    assert systems["finetuned"]["wer"] == {"target_test": 20.25, "target_test_unseen": None, "source_test": None}
    assert systems["scratch"]["state"] == "built"
    assert systems["finetuned_mmi"]["state"] == "stale"
    assert systems["finetuned_mmi"]["reasons"] == ['config loss.type: "ctc" -> "mmi"']

    (root / "exp" / "scratch" / "model.pt").unlink()
    (root / "exp" / "finetuned" / "provenance.json").unlink()  # a killed run: model.pt alone
    systems = status(root, capsys)
    assert systems["scratch"]["state"] == "missing" and systems["scratch"]["wer"]["target_test"] == 30.0
    assert systems["finetuned"]["state"] == "missing"
    assert "training did not finish" in systems["finetuned"]["reasons"][0]


def test_the_table(root: Path, capsys):
    main(["status", "--exp-dir", str(root / "exp")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["system", "state", "target_test", "target_test_unseen", "source_test", "why"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["pretrained"].split() == ["pretrained", "built", "90.50", "-", "7.12"]
    assert rows["finetuned"].split() == ["finetuned", "built", "20.25", "-", "-"]
    assert rows["finetuned_mmi"].split()[:5] == ["finetuned_mmi", "stale", "19.00", "-", "-"]
    assert rows["finetuned_mmi"].endswith('config loss.type: "ctc" -> "mmi"')
    assert len({line.index(line.split()[1]) for line in lines}) == 1  # the state column is aligned


def test_a_preset_makes_what_reads_its_keys_stale(root: Path, capsys, tmp_path: Path):
    preset = tmp_path / "preset.yaml"
    preset.write_text("finetune: {lr: 0.0005}\ndecode: {search_beam: 15.0}\n")
    systems = status(root, capsys, "--config", str(preset))
    assert f"config finetune.lr: {CONFIG['finetune']['lr']} -> 0.0005" in systems["finetuned"]["reasons"]
    assert "target_test decode config search_beam: 20.0 -> 15.0" in systems["finetuned"]["reasons"]
    # scratch's own lr replaces finetune's (as in the Snakefile): only its decode is stale
    assert systems["scratch"]["reasons"] == ["target_test decode config search_beam: 20.0 -> 15.0"]
    assert not any("finetune" in reason for reason in systems["pretrained"]["reasons"])


def test_stale_when_made_before_its_inputs(root: Path, capsys):
    os.utime(root / "exp" / "pretrained" / "model.pt", (T_MODEL + 1, T_MODEL + 1))
    os.utime(root / "data" / "fbank" / "target_test_cuts.jsonl.gz", (T_DECODE + 1, T_DECODE + 1))
    os.utime(root / "exp" / "scratch" / "decode" / "target_test" / "hlg" / "hyp.txt", (T_SCORE + 1, T_SCORE + 1))
    systems = status(root, capsys)
    exp = root / "exp"
    assert f"{exp / 'pretrained/model.pt'} is newer than {exp / 'finetuned/model.pt'}" in systems["finetuned"]["reasons"]
    assert (f"{root / 'data/fbank/target_test_cuts.jsonl.gz'} is newer than "
            f"{exp / 'finetuned/decode/target_test/hlg/hyp.txt'}") in systems["finetuned"]["reasons"]
    assert systems["scratch"]["reasons"][-1] == (
        f"{exp / 'scratch/decode/target_test/hlg/hyp.txt'} is newer than "
        f"{exp / 'scratch/decode/target_test/hlg/wer.json'}: score again"
    )
    assert systems["pretrained"]["state"] == "stale"  # its target_test decode predates the new cuts
    assert not any("model.pt is newer" in r for r in systems["pretrained"]["reasons"])


def test_help_and_errors(capsys):
    with pytest.raises(SystemExit) as e:
        main(["status", "--help"])
    assert e.value.code == 0 and "built" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main([])
    assert e.value.code == 2
