"""Stage ``scratch``: the same target data and step budget as ``finetune``, no pretrained start.

    python -m stages.scratch data/fbank/target_train_cuts.jsonl.gz \\
        data/fbank/target_dev_cuts.jsonl.gz data/lang_phone_target exp/scratch

Training keys are finetune's (same epochs and batch duration, so the same steps) with
``scratch.lr`` and ``scratch.warmup_steps`` in place of fine-tuning's small learning rate; the
architecture is the config's ``model`` section, as for ``pretrain``. What separates this system
from ``finetuned`` is only the pretrained start: the point of the comparison.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import (add_compute_arguments, add_config_arguments, add_processes_argument,
                            compute_device, run_cli, run_under_torchrun, stage_parser, stage_sections,
                            stage_seed)
from speechtune.data.cuts import load_cuts
from speechtune.provenance import StageRun
from speechtune.training.loop import model_params_for, train


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("cuts", type=Path, help="target-domain training cuts with features")
    parser.add_argument("valid_cuts", type=Path, help="target-domain dev cuts with features")
    parser.add_argument("lang_dir", type=Path)
    parser.add_argument("exp_dir", type=Path, help="system directory to write, e.g. exp/scratch")
    add_compute_arguments(parser)
    add_processes_argument(parser)
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    if run_under_torchrun(args, "stages.scratch", argv):
        return
    device = compute_device(args)
    config = stage_sections(args, ["model", "loss", "finetune", "scratch"])
    run = StageRun("scratch", config, stage_seed(args))
    train_cuts = load_cuts(args.cuts)
    train(run, args.exp_dir, args.lang_dir, train_cuts, load_cuts(args.valid_cuts),
          model_params=model_params_for(config["model"], args.lang_dir, train_cuts),
          loss_params=config["loss"], train_params={**config["finetune"], **config["scratch"]}, device=device)


if __name__ == "__main__":
    run_cli(main)
