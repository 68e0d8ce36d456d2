"""Stage ``learning_curve``: how much target data does fine-tuning need? Collects every
learning-curve point's target_test WER (each base system at each size of target_train, each
seed) into ``exp/learning_curve.{json,md,png}`` (:mod:`speechtune.reporting.learning_curve`).

    python -m stages.learning_curve exp --points '{"finetuned_lc2m_s1234": ["finetuned", 2, 1234], ...}'

The Snakefile passes the points of the config's ``learning_curve`` section
(``snakemake --cores 8 learning_curve``).
"""
import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import run_cli, stage_parser
from speechtune.experiment import TARGET_TESTSET
from speechtune.reporting.learning_curve import collect_curve, write_curve


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("exp_dir", type=Path)
    parser.add_argument("--points", required=True, help="JSON: system -> [base system, minutes, seed]")
    parser.add_argument("--testset", default=TARGET_TESTSET)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    points = {system: tuple(point) for system, point in json.loads(args.points).items()}
    curve = collect_curve(args.exp_dir, points, args.testset)
    write_curve(curve, args.exp_dir / "learning_curve.json")
    print(curve["statement"])


if __name__ == "__main__":
    run_cli(main)
