"""Stage ``tts_report``: the TTS systems side by side and the listening test
(:mod:`speechtune.reporting.tts_report`)::

    python -m stages.tts_report exp/tts data/tts/fbank/voice_test_cuts.jsonl.gz \\
        --systems pretrained finetuned scratch

writes ``exp/tts/report.{json,md,html}`` and ``exp/tts/listening.html`` from each system's
``eval.json`` and syntheses. Ratings saved from the listening page give MOS with
``speechtune mos ratings/*.json``.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import add_config_arguments, run_cli, stage_parser, stage_sections, stage_seed
from speechtune.reporting.tts_report import write_tts_report


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("tts_dir", type=Path, help="e.g. exp/tts")
    parser.add_argument("test_cuts", type=Path, help="the voice's test cuts (its recordings, on the listening page)")
    parser.add_argument("--systems", nargs="+", required=True, help="the systems to report, in this order")
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    tts = stage_sections(args, ["tts"])["tts"]
    write_tts_report(args.tts_dir, args.systems, args.test_cuts, tts["listening_sentences"], stage_seed(args))


if __name__ == "__main__":
    run_cli(main)
