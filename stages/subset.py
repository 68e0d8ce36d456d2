"""Stage ``subset``: the first minutes of a subset's cuts in a seeded order, for a learning
curve (:func:`speechtune.data.cuts.nested_subset`: for one seed, the 1-minute set is part of
the 2-minute set). The cuts keep their features: nothing is extracted again.

    python -m stages.subset data/fbank/target_train_cuts.jsonl.gz \\
        data/fbank/target_train_2min_cuts.jsonl.gz --minutes 2 --seed 1234
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import run_cli, stage_parser
from speechtune.data.cuts import load_cuts, nested_subset
from speechtune.errors import StageError
from speechtune.provenance import atomic_file


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("cuts", type=Path, help="cuts with features, e.g. data/fbank/target_train_cuts.jsonl.gz")
    parser.add_argument("out_cuts", type=Path, help="the subset's cuts, e.g. data/fbank/target_train_2min_cuts.jsonl.gz")
    parser.add_argument("--minutes", type=float, required=True, help="minutes of audio to take")
    parser.add_argument("--seed", type=int, required=True, help="fixes the order: the same seed nests the subsets")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    cuts = load_cuts(args.cuts)
    subset = nested_subset(cuts, args.minutes, args.seed)
    seconds = sum(cut.duration for cut in subset)
    if seconds < 0.95 * args.minutes * 60:  # prepare's skips may leave the whole set a little short
        raise StageError(f"{args.cuts} holds {seconds / 60:.2f} minutes, fewer than the {args.minutes:g} asked for")
    with atomic_file(args.out_cuts) as tmp:
        subset.to_file(tmp)
    print(f"{args.out_cuts}: {len(subset)} of {len(cuts)} cuts, {seconds / 60:.2f} minutes")


if __name__ == "__main__":
    run_cli(main)
