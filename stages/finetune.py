"""Stage ``finetune``: start from the pretrained model and train on the target domain.

    python -m stages.finetune exp/pretrained/model.pt data/fbank/target_train_cuts.jsonl.gz \\
        data/fbank/target_dev_cuts.jsonl.gz data/lang_phone_target exp/finetuned

Plain fine-tuning: every weight trains, initialized from the pretrained checkpoint (whose
architecture the model takes; the config's ``model`` section is the pretrained model's
business), the output layer reused since the lang dir is shared. Validation: target_dev.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch

from stages.cli import StageError, run_cli
from stages.config import add_config_arguments, stage_sections, stage_seed
from stages.provenance import StageRun
from stages.training import load_cuts, model_params_for, train


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stages.finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("init", type=Path, help="pretrained checkpoint, e.g. exp/pretrained/model.pt")
    parser.add_argument("cuts", type=Path, help="target-domain training cuts with features")
    parser.add_argument("valid_cuts", type=Path, help="target-domain dev cuts with features")
    parser.add_argument("lang_dir", type=Path)
    parser.add_argument("exp_dir", type=Path, help="system directory to write, e.g. exp/finetuned")
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    config = stage_sections(args, ["loss", "finetune"])
    run = StageRun("finetune", config, stage_seed(args))
    if not args.init.is_file():
        raise StageError(f"{args.init} is missing: run the pretrain stage first")
    pretrained = torch.load(args.init, map_location="cpu")
    train_cuts = load_cuts(args.cuts)
    model_params = dict(pretrained["model_params"])
    wanted = model_params_for({}, args.lang_dir, train_cuts)
    for key in ("feature_dim", "num_tokens"):
        if wanted[key] != model_params[key]:
            raise StageError(
                f"{args.init} was trained with {key}={model_params[key]}, but {args.lang_dir} and "
                f"{args.cuts} give {wanted[key]}: fine-tune with the pretrained model's lang dir and features"
            )
    train(
        run, args.exp_dir, args.lang_dir, train_cuts, load_cuts(args.valid_cuts),
        model_params=model_params, loss_params=config["loss"], train_params=config["finetune"],
        init_state=pretrained["model"],
    )


if __name__ == "__main__":
    run_cli(main)
