"""Stage ``time_to_target``: does fine-tuning save compute? Decodes target_dev with every epoch
checkpoint of plain fine-tuning and of training from scratch, and says when fine-tuning reached
scratch's final dev WER, in seconds of training and as a share of scratch's
(:mod:`speechtune.reporting.time_to_target`).

    python -m stages.time_to_target exp data/lang_phone_target data/fbank/target_dev_cuts.jsonl.gz \\
        --systems finetuned scratch          # writes exp/time_to_target.{json,png}
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import (add_config_arguments, add_threads_argument, run_cli, stage_config, stage_parser,
                            use_threads)
from speechtune.data.cuts import load_cuts
from speechtune.experiment import PLAIN, SCRATCH
from speechtune.reporting.time_to_target import time_to_target, write_time_to_target


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("exp_dir", type=Path)
    parser.add_argument("lang_dir", type=Path, help="the target lang dir (its HLG decodes target_dev)")
    parser.add_argument("dev_cuts", type=Path, help="target_dev cuts with features")
    parser.add_argument("--systems", nargs=2, default=[PLAIN, SCRATCH], metavar=("MEASURED", "REFERENCE"),
                        help=f"the system timed and the one whose final dev WER is the target (default: {PLAIN} {SCRATCH})")
    add_threads_argument(parser)
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    use_threads(args.threads)
    params = stage_config(args, "decode")
    result = time_to_target(args.exp_dir, args.systems, args.lang_dir, load_cuts(args.dev_cuts), params)
    write_time_to_target(result, args.exp_dir / "time_to_target.json", args.exp_dir / "time_to_target.png")


if __name__ == "__main__":
    run_cli(main)
