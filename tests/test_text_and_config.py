import copy
import json
import subprocess
import sys

import pytest

from speechtune import experiment
from speechtune.config import DEFAULT_CONFIG_PATH, deep_merge, load_config, validate_config
from speechtune.errors import ConfigError, StageError
from speechtune.text import normalize_text
from tests.conftest import REPO_ROOT


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Set a timer -- for ten minutes, please!", "SET A TIMER FOR TEN MINUTES PLEASE"),
        ("the 'next-to-last' column", "THE NEXT TO LAST COLUMN"),
        ("don\u2019t  stop", "DON'T STOP"),
        ("\uff34\uff55\uff52\uff4e off", "TURN OFF"),  # full-width letters (NFKC)
        ("  ...  ", ""),
        ("room 101", "ROOM 101"),  # digits are kept, never guessed
        ("\x1b[31mturn\x1b[0m on", "TURN ON"),  # terminal colour codes are no words
        ("turn\ton\x00the lights", "TURN ON THE LIGHTS"),  # control characters separate words
        ("play <UNK> jazz", "PLAY <UNK> JAZZ"),  # the OOV word passes
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def test_normalize_text_is_idempotent():
    once = normalize_text("It's the cat's -- 'toy'")
    assert normalize_text(once) == once


def test_default_config_and_tiny_preset_validate():
    default = load_config([REPO_ROOT / "config/config.yaml"])
    tiny = load_config([REPO_ROOT / "config/config.yaml", REPO_ROOT / "config/tiny.yaml"])
    # The preset overrides only what it lists; the rest comes from the default.
    assert tiny["corpus"]["target"]["splits"]["train"]["minutes"] < default["corpus"]["target"]["splits"]["train"]["minutes"]
    assert tiny["corpus"]["target"]["noise_types"] == default["corpus"]["target"]["noise_types"]


def test_misspelled_key_names_key_valid_keys_and_suggestion():
    config = load_config([])
    bad = copy.deepcopy(config)
    bad["features"]["num_mel_bin"] = 40
    with pytest.raises(ConfigError) as err:
        validate_config(bad)
    message = str(err.value)
    assert "features.num_mel_bin" in message
    assert "extractor, num_mel_bins" in message
    assert "did you mean 'num_mel_bins'" in message


def test_wrong_type_and_enum_are_reported_with_their_key():
    config = load_config([])
    bad = deep_merge(config, {"features": {"extractor": "mfcc"}, "prepare": {"sample_rate": "16k"}})
    with pytest.raises(ConfigError) as err:
        validate_config(bad)
    assert "features.extractor" in str(err.value) and "prepare.sample_rate" in str(err.value)


def test_stage_cli_rejects_bad_section_json_with_one_clear_line():
    bad = json.dumps({"sample_rate": 16000, "max_skip_fractoin": 0.1})
    result = subprocess.run(
        [sys.executable, "-m", "stages.prepare", "import", "x", "y", "--subset", "s",
         "--config-json", bad, "--seed", "1"],
        cwd=REPO_ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 1
    assert "unknown key 'prepare.max_skip_fractoin'" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_yaml_syntax_error_names_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  lr: [0.1\n  epochs: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:3:\d+: not valid YAML"):
        load_config([DEFAULT_CONFIG_PATH, bad])


def test_a_preset_removes_a_variant_with_null(tmp_path):
    preset = tmp_path / "fewer.yaml"
    preset.write_text("finetune_variants: {finetuned_mmi: null, finetuned_l2sp: null}\n")
    config = load_config([DEFAULT_CONFIG_PATH, preset])
    experiment.check_config(config)
    names = experiment.system_names(config)
    assert "finetuned_mmi" not in names and "finetuned_l2sp" not in names and "adapted" in names


def test_model_shape_errors_fail_before_any_job_runs():
    config = load_config([DEFAULT_CONFIG_PATH])
    config["model"]["full_rate_layers"] = config["model"]["num_layers"]
    with pytest.raises(StageError, match="model: .*full_rate_layers"):
        experiment.check_config(config)
