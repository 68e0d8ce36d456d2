"""Stage ``tts_finetune``: the pretrained Tacotron 2 adapted to the target voice
(:func:`speechtune.tts.systems.finetune_tts`), with the objective ``alpha * L_pre + (1 - alpha)
* L_task`` (``tts.finetune.alpha``; L_pre on batches of the pretraining data, ``--source-cuts``)::

    python -m stages.tts_finetune data/tts/fbank/voice_train_cuts.jsonl.gz \\
        exp/tts/pretrained/model.pt exp/tts/finetuned \\
        --source-cuts data/tts/fbank/source_train_cuts.jsonl.gz --config config/config.yaml

The voice gets a new row of the speaker table, started at the mean of the pretrained voices.
Writes the system directory of :mod:`speechtune.tts.training`; a rerun resumes from its last
epoch. Reads ``tts.max_frames``, ``tts.valid_fraction`` and ``tts.finetune``.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import (add_config_arguments, add_threads_argument, run_cli, stage_parser, stage_sections,
                            stage_seed, use_threads)
from speechtune.provenance import StageRun
from speechtune.tts.systems import finetune_tts


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("cuts", type=Path, help="the target voice's cuts from the tts_data stage")
    parser.add_argument("pretrained", type=Path, help="the tts_pretrain stage's model.pt")
    parser.add_argument("exp_dir", type=Path, help="system directory to write, e.g. exp/tts/finetuned")
    parser.add_argument("--source-cuts", type=Path, help="the pretraining cuts, rehearsed where alpha > 0")
    add_threads_argument(parser)
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    use_threads(args.threads)
    tts = stage_sections(args, ["tts"])["tts"]
    finetune_tts(args.cuts, args.exp_dir, tts, stage_seed(args), StageRun("tts_finetune", tts, stage_seed(args)),
                 pretrained=args.pretrained, source_cuts=args.source_cuts)


if __name__ == "__main__":
    run_cli(main)
