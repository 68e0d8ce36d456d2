"""Stage ``finetune``: start from the pretrained model and train on the target domain.

    python -m stages.finetune exp/pretrained/model.pt data/fbank/target_train_cuts.jsonl.gz \\
        data/fbank/target_dev_cuts.jsonl.gz data/lang_phone_target exp/finetuned

    # rehearsal needs the source domain's training cuts and lang dir
    python -m stages.finetune ... exp/finetuned_rehearsal \\
        --source-cuts data/fbank/source_train_cuts.jsonl.gz --source-lang data/lang_phone_source

The architecture is the pretrained checkpoint's (the config's ``model`` section is the
pretrained model's business). How it is fine-tuned is the ``finetune`` section: the objective
``alpha * L_pre + (1 - alpha) * L_task`` (``regularizer``: none | kld | l2sp | rehearsal),
``init_modules``, ``freeze``, ``lr_factors``, ``adapter``, SpecAugment, noise mixing
(``--noise-cuts``), early stopping and model selection on target_dev (:mod:`stages.methods`, :mod:`stages.training`). Validation: target_dev,
never the test set.
"""
import argparse
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from stages.cli import StageError, run_cli
from stages.config import add_config_arguments, stage_sections, stage_seed
from stages.methods import FineTuning, SourceDomain
from stages.provenance import StageRun
from stages.training import load_cuts, train


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments finetune and adapt share."""
    parser.add_argument("init", type=Path, help="pretrained checkpoint, e.g. exp/pretrained/model.pt")
    parser.add_argument("cuts", type=Path, help="target-domain training cuts with features")
    parser.add_argument("valid_cuts", type=Path, help="target-domain dev cuts with features")
    parser.add_argument("lang_dir", type=Path)
    parser.add_argument("exp_dir", type=Path, help="system directory to write, e.g. exp/finetuned")
    parser.add_argument("--source-cuts", type=Path, help="source-domain training cuts (rehearsal)")
    parser.add_argument("--source-lang", type=Path, help="source-domain lang dir (rehearsal)")
    parser.add_argument("--noise-cuts", type=Path, help="noise cuts with features (noise_mix), from the noise stage")
    add_config_arguments(parser)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stages.finetune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def fine_tune(args: argparse.Namespace, run: StageRun, loss_params: Mapping[str, Any],
              train_params: Mapping[str, Any]) -> None:
    """Train ``args.exp_dir`` from ``args.init`` with the method ``train_params`` describes."""
    if (args.source_cuts is None) != (args.source_lang is None):
        raise StageError("--source-cuts and --source-lang go together")
    source = SourceDomain(load_cuts(args.source_cuts), args.source_lang) if args.source_cuts else None
    train_cuts = load_cuts(args.cuts)
    method = FineTuning(args.init, train_params, args.lang_dir, next(iter(train_cuts)).num_features, source)
    train(
        run, args.exp_dir, args.lang_dir, train_cuts, load_cuts(args.valid_cuts),
        model_params=method.model_params, loss_params=loss_params, train_params=train_params, method=method,
        noise_cuts=load_cuts(args.noise_cuts) if args.noise_cuts else None,
    )


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    config = stage_sections(args, ["loss", "finetune"])
    run = StageRun("finetune", config, stage_seed(args))
    fine_tune(args, run, config["loss"], config["finetune"])


if __name__ == "__main__":
    run_cli(main)
