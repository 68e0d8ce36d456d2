"""The ``speechtune`` command (also ``python -m speechtune``): commands a person runs beside the
pipeline, each a parser and a call into the library::

    speechtune status                          # which systems are built, stale or missing
    speechtune status --config config/tiny.yaml --json
"""
import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import run_cli
from speechtune.config import DEFAULT_CONFIG_PATH, load_config
from speechtune.experiment import testsets
from speechtune.reporting import status


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechtune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status_parser = commands.add_parser(
        "status", help="which systems are built, stale or missing, and their WERs",
        description=status.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status_parser.add_argument(
        "--config", type=Path, action="append", default=[], metavar="FILE",
        help=f"a preset layered on {DEFAULT_CONFIG_PATH.name} (repeatable), as Snakemake's --configfile",
    )
    status_parser.add_argument("--exp-dir", type=Path, default=Path("exp"), help="default: exp")
    status_parser.add_argument("--testsets", nargs="+", help="default: the config's (target_test, source_test, ...)")
    status_parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    config = load_config([DEFAULT_CONFIG_PATH, *args.config])
    names = args.testsets or testsets(config)
    statuses = status.status(args.exp_dir, config, names)
    if args.json:
        print(json.dumps({"exp_dir": str(args.exp_dir), "systems": {s.system: asdict(s) for s in statuses}}, indent=2))
    else:
        print(status.format_table(statuses, names))


def cli() -> None:
    """The ``speechtune`` console script: ``main`` with the stages' one-line errors."""
    run_cli(main)


if __name__ == "__main__":
    cli()
