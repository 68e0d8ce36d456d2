"""Stage ``pretrain``: train the source-domain model from random initialization.

    python -m stages.pretrain data/fbank/source_train_cuts.jsonl.gz data/lang_phone_source exp/pretrained

A seeded ``pretrain.valid_fraction`` of source_train is held out for the validation loss (the
source domain has no dev split; its test set is never looked at). Writes the system directory
described in :mod:`speechtune.training.loop`; ``exp/pretrained/model.pt`` is the pretrained
start of every fine-tuning system and the no-fine-tuning baseline.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import (add_compute_arguments, add_config_arguments, add_processes_argument,
                            compute_device, run_cli, run_under_torchrun, stage_parser, stage_sections,
                            stage_seed)
from speechtune.data.cuts import load_cuts, split_validation
from speechtune.provenance import StageRun
from speechtune.training.loop import model_params_for, train


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("cuts", type=Path, help="source-domain training cuts with features")
    parser.add_argument("lang_dir", type=Path, help="lang dir (tokens.txt, L.pt, bpe.model)")
    parser.add_argument("exp_dir", type=Path, help="system directory to write, e.g. exp/pretrained")
    add_compute_arguments(parser)
    add_processes_argument(parser)
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    if run_under_torchrun(args, "stages.pretrain", argv):
        return
    device = compute_device(args)
    config = stage_sections(args, ["model", "loss", "pretrain"])
    run = StageRun("pretrain", config, stage_seed(args))
    train_params = dict(config["pretrain"])
    train_cuts, valid_cuts = split_validation(load_cuts(args.cuts), train_params.pop("valid_fraction"), run.seed)
    train(run, args.exp_dir, args.lang_dir, train_cuts, valid_cuts,
          model_params=model_params_for(config["model"], args.lang_dir, train_cuts),
          loss_params=config["loss"], train_params=train_params, device=device)


if __name__ == "__main__":
    run_cli(main)
