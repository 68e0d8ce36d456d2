"""The two errors a stage reports as one line (``ERROR: ...``) instead of a traceback.

Both carry a message that names the file or key at fault and the fix::

    raise StageError(f"{path} is missing: run the features stage for it first")
"""


class StageError(RuntimeError):
    """Bad input or environment: the message names the file and the fix."""


class ConfigError(ValueError):
    """A configuration that does not match the schema; the message names key and fix."""
