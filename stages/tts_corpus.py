"""Stage ``tts_corpus``: the TTS target voice, one speaker no source utterance has, reading the
target domain's commands, clean (:mod:`local.tts_voice`)::

    python -m stages.tts_corpus data/tts/voice --config config/config.yaml

writes ``data/tts/voice/{train,test}/`` (Kaldi data dirs: wav.scp, text, utt2spk, spk2utt,
spk2voice), ``wav/<split>/<utt>.wav`` and ``provenance.json``. ``tts.voice`` names the family,
voice and settings and the minutes of each split; ``train`` reads the target domain's training
sentences, ``test`` its held-out test sentences.
"""
import argparse
import os
from pathlib import Path
from typing import Optional, Sequence

from local.tts_voice import write_voice
from speechtune.cli import add_config_arguments, run_cli, stage_parser, stage_sections, stage_seed
from speechtune.provenance import StageRun


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="e.g. data/tts/voice")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="synthesizer processes run at once (default: the CPU count)")
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    config = stage_sections(args, ["tts", "corpus"])
    run = StageRun("tts_corpus", config["tts"]["voice"], stage_seed(args))
    write_voice(config["tts"]["voice"], config["corpus"], args.out_dir, args.jobs, run)


if __name__ == "__main__":
    run_cli(main)
