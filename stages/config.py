"""Configuration: one YAML file (``config/config.yaml``, the embedded default) plus presets
layered on top (``config/tiny.yaml`` for tests), validated against ``config/schema.yaml``.

Every stage CLI takes its section either from config files (``--config``, repeatable, later
files override earlier ones key by key) or, as the Snakefile passes it, inline as JSON
(``--config-json``). Both routes go through the same schema, so a misspelled key fails the
same way everywhere, naming the key and the valid ones::

    $ python -m stages.corpus --config config/config.yaml --config my.yaml ...
    ConfigError: my.yaml: unknown key 'corpus.target.trian_minutes'; valid keys under
    'corpus.target': ... (did you mean 'train_minutes'?)
"""
import argparse
import difflib
import json
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "config"
SCHEMA_PATH = CONFIG_DIR / "schema.yaml"
DEFAULT_CONFIG_PATH = CONFIG_DIR / "config.yaml"


class ConfigError(ValueError):
    """A configuration that does not match the schema; the message names key and fix."""


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> Dict[str, Any]:
    """Return ``base`` updated by ``override``, recursing into nested mappings (as Snakemake's
    ``--configfile`` does), so a preset only lists the keys it changes."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_schema() -> Dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _subschema(schema: Dict[str, Any], dotted: str) -> Dict[str, Any]:
    for key in filter(None, dotted.split(".")):
        schema = schema["properties"][key]
    return schema


def validate_config(config: Mapping[str, Any], section: str = "", where: str = "config") -> None:
    """Validate ``config`` (the whole config, or the part at dotted ``section``) against the
    schema; raise ConfigError listing every problem with its full key path."""
    full_schema = load_schema()
    # The section's "#/definitions/..." refs resolve against its own root: carry them along.
    schema = dict(_subschema(full_schema, section), definitions=full_schema["definitions"])
    validator = jsonschema.Draft7Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(dict(config)), key=lambda e: list(e.path)):
        path = ".".join(filter(None, [section] + [str(p) for p in error.absolute_path]))
        if error.validator == "additionalProperties":
            valid = sorted(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(valid)):
                full = f"{path}.{key}" if path else key
                hint = difflib.get_close_matches(key, valid, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                problems.append(
                    f"unknown key '{full}'; valid keys under '{path or '<top>'}': "
                    f"{', '.join(valid)}{suggestion}"
                )
        elif error.validator == "required":
            problems.append(f"'{path or '<top>'}': {error.message}")
        else:
            problems.append(f"key '{path}': {error.message}")
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))


def load_config(paths: Sequence[Path]) -> Dict[str, Any]:
    """Load and merge YAML config files in order, then validate the result."""
    if not paths:
        paths = [DEFAULT_CONFIG_PATH]
    config: Dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        with open(path, encoding="utf-8") as f:
            loaded = yaml.safe_load(f) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: expected a mapping of keys at the top level")
        config = deep_merge(config, loaded)
    validate_config(config, where=" + ".join(str(p) for p in paths))
    return config


def get_section(config: Mapping[str, Any], dotted: str) -> Any:
    for key in filter(None, dotted.split(".")):
        config = config[key]
    return config


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE`` (repeatable), ``--config-json JSON`` and ``--seed`` to a stage's parser."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--config", type=Path, action="append", default=None, metavar="FILE",
        help=f"YAML config file; repeat to layer presets (default: {DEFAULT_CONFIG_PATH.relative_to(REPO_ROOT)})",
    )
    group.add_argument(
        "--config-json", metavar="JSON",
        help="this stage's resolved config section as JSON (what the Snakefile passes)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: the config's seed)")


def stage_config(args: argparse.Namespace, section: str) -> Dict[str, Any]:
    """The validated config section a stage works from, from either CLI route."""
    if args.config_json is not None:
        try:
            config = json.loads(args.config_json)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--config-json is not valid JSON: {e}") from None
        validate_config(config, section=section, where="--config-json")
        return config
    return get_section(load_config(args.config or []), section)


def stage_sections(args: argparse.Namespace, names: Sequence[str]) -> Dict[str, Any]:
    """Several validated top-level sections, ``{name: section}``, for a stage that reads more
    than one (training reads ``model``, ``loss`` and its own). ``--config-json`` then holds
    exactly that mapping."""
    if args.config_json is None:
        config = load_config(args.config or [])
        return {name: config[name] for name in names}
    try:
        sections = json.loads(args.config_json)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--config-json is not valid JSON: {e}") from None
    if not isinstance(sections, dict) or sorted(sections) != sorted(names):
        got = sorted(sections) if isinstance(sections, dict) else type(sections).__name__
        raise ConfigError(f"--config-json: expected the sections {sorted(names)}, got {got}")
    for name in names:
        validate_config(sections[name], section=name, where="--config-json")
    return sections


def stage_seed(args: argparse.Namespace) -> int:
    """The run's seed: ``--seed`` where given, else the top-level ``seed`` of the config files."""
    if args.seed is not None:
        return int(args.seed)
    if args.config_json is not None:
        raise ConfigError("--config-json needs --seed: the seed lives at the config's top level")
    return int(load_config(args.config or [])["seed"])
