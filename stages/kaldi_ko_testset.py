"""Stage ``kaldi_ko_testset``: a small Korean test set for the Korean chain model, synthesized
with espeak-ng (:mod:`local.kaldi_ko.testset`): what the import is checked on against Vosk.

    python -m stages.kaldi_ko_testset data/kaldi_ko/test                    # 30 utterances
    python -m stages.kaldi_ko_testset data/kaldi_ko/test --num-utterances 10

writes a Kaldi data directory (``wav/<utt>.wav``, ``wav.scp``, ``text``, ``utt2spk``,
``spk2utt``); the same arguments give the same files.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from local.kaldi_ko.testset import SEED, write_test_set
from speechtune.cli import run_cli, stage_parser


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("out_dir", type=Path, help="Kaldi data directory to write")
    parser.add_argument("--num-utterances", type=int, default=30)
    parser.add_argument("--seed", type=int, default=SEED)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    rows = write_test_set(args.out_dir, args.num_utterances, args.seed)
    print(f"wrote {len(rows)} utterances to {args.out_dir}")


if __name__ == "__main__":
    run_cli(main)
