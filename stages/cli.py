"""What every stage CLI shares: Kaldi-like log lines and clear, traceback-free errors.

A stage module ends with::

    def main(argv: Optional[Sequence[str]] = None) -> None:
        args = get_parser().parse_args(argv)
        ...

    if __name__ == "__main__":
        run_cli(main)

and raises ``StageError("<file>: <what is wrong>; <how to fix it>")`` for bad input, which
``run_cli`` prints as one ``ERROR:`` line and exit status 1 (Snakemake then names the log).
"""
import logging
import sys
from typing import Callable

from stages.config import ConfigError


class StageError(RuntimeError):
    """Bad input or environment: the message names the file and the fix."""


def setup_logging(verbose: bool = False) -> None:
    """Log lines like Kaldi's: time, stage logger, level, message; to stderr (Snakemake's log:)."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        stream=sys.stderr,
    )


def run_cli(main: Callable[[], None]) -> None:
    """Run a stage's ``main``; report StageError/ConfigError as one line and exit 1."""
    setup_logging()
    try:
        main()
    except (StageError, ConfigError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        sys.exit(1)
