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
import difflib
import functools
from pathlib import Path
from typing import Any, Dict, Mapping, Sequence

import jsonschema
import yaml

from speechtune.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "config"
SCHEMA_PATH = CONFIG_DIR / "schema.yaml"
DEFAULT_CONFIG_PATH = CONFIG_DIR / "config.yaml"


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


def read_yaml(path: Path) -> Any:
    """A YAML file's content; a ConfigError naming the file, line and column of a syntax error."""
    try:
        with open(path, encoding="utf-8") as f:
            return yaml.safe_load(f)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None


@functools.lru_cache(maxsize=1)
def load_schema() -> Dict[str, Any]:
    """The schema, read once per process: the Snakefile validates every system's sections."""
    return read_yaml(SCHEMA_PATH)


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
        loaded = read_yaml(path) or {}
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{path}: expected a mapping of keys at the top level")
        config = deep_merge(config, loaded)
    validate_config(config, where=" + ".join(str(p) for p in paths))
    return config


def get_section(config: Mapping[str, Any], dotted: str) -> Any:
    for key in filter(None, dotted.split(".")):
        config = config[key]
    return config
