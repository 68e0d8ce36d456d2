"""Stage ``tts_pretrain``: Tacotron 2 on every source voice read clean, from nothing
(:func:`speechtune.tts.systems.pretrain_tts`)::

    python -m stages.tts_pretrain data/tts/fbank/source_train_cuts.jsonl.gz \\
        exp/tts/pretrained --config config/config.yaml

Writes the system directory of :mod:`speechtune.tts.training` (``model.pt``, epoch checkpoints,
``log/log-train.txt``, ``provenance.json``); a rerun resumes from its last epoch. Reads
``tts.model``, ``tts.max_frames``, ``tts.valid_fraction`` and ``tts.pretrain``.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import (add_config_arguments, add_threads_argument, run_cli, stage_parser, stage_sections,
                            stage_seed, use_threads)
from speechtune.provenance import StageRun
from speechtune.tts.systems import pretrain_tts


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("cuts", type=Path, help="the source voices' cuts from the tts_data stage")
    parser.add_argument("exp_dir", type=Path, help="system directory to write, e.g. exp/tts/pretrained")
    add_threads_argument(parser)
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    use_threads(args.threads)
    tts = stage_sections(args, ["tts"])["tts"]
    pretrain_tts(args.cuts, args.exp_dir, tts, stage_seed(args), StageRun("tts_pretrain", tts, stage_seed(args)))


if __name__ == "__main__":
    run_cli(main)
