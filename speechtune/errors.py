"""The two errors a stage reports as one line (``ERROR: ...``) instead of a traceback.

Both carry a message that names the file or key at fault and the fix::

    raise StageError(f"{path} is missing: run the features stage for it first")
"""
import importlib
from types import ModuleType


class StageError(RuntimeError):
    """Bad input or environment: the message names the file and the fix."""


class ConfigError(ValueError):
    """A configuration that does not match the schema; the message names key and fix."""


def import_optional(module: str, fix: str) -> ModuleType:
    """``module``, imported where a measure needs an optional install; a StageError saying
    ``fix`` (e.g. "run `make setup PEERS=1`") where it is not installed."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise StageError(f"{e}: {fix}") from e
