"""Stage ``finetune``: start from a pretrained model and train on the target domain. One stage
(and one rule) for every system with a pretrained start: the fine-tuning variants, the adapted
systems (adapters inserted and trained alone) and the imported Kaldi model.

    python -m stages.finetune exp/pretrained/model.pt data/fbank/target_train_cuts.jsonl.gz \\
        data/fbank/target_dev_cuts.jsonl.gz data/lang_phone_target exp/finetuned

    # a method's extra inputs, e.g. rehearsal's source-domain cuts and lang dir
    python -m stages.finetune ... exp/finetuned_rehearsal \\
        --source-cuts data/fbank/source_train_cuts.jsonl.gz --source-lang data/lang_phone_source

The architecture is the pretrained checkpoint's. How it is fine-tuned is the ``finetune``
section (for an adapted system, ``adapt`` with its variant's keys): the objective
``alpha * L_pre + (1 - alpha) * L_task`` (``regularizer``), ``init_modules``, ``freeze``,
``lr_factors``, ``adapter``, augmentations, early stopping and model selection on target_dev
(:mod:`speechtune.finetuning`). Validation: target_dev, never the test set. The options for
extra inputs are those every registered method declares.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import (add_compute_arguments, add_config_arguments, add_processes_argument,
                            compute_device, run_cli, run_under_torchrun, stage_parser, stage_sections,
                            stage_seed)
from speechtune.data.cuts import load_cuts
from speechtune.finetuning import FineTuning, all_extra_inputs
from speechtune.provenance import StageRun
from speechtune.training.batches import NOISE_CUTS
from speechtune.training.inputs import load_extra_input
from speechtune.training.loop import train


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("init", type=Path, help="pretrained checkpoint, e.g. exp/pretrained/model.pt")
    parser.add_argument("cuts", type=Path, help="target-domain training cuts with features")
    parser.add_argument("valid_cuts", type=Path, help="target-domain dev cuts with features")
    parser.add_argument("lang_dir", type=Path)
    parser.add_argument("exp_dir", type=Path, help="system directory to write, e.g. exp/finetuned")
    for spec in all_extra_inputs():
        parser.add_argument(spec.option, type=Path, help=spec.help)
    add_compute_arguments(parser)
    add_processes_argument(parser)
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    if run_under_torchrun(args, "stages.finetune", argv):
        return
    device = compute_device(args)
    config = stage_sections(args, ["loss", "finetune"])
    run = StageRun("finetune", config, stage_seed(args))
    inputs = {spec.name: load_extra_input(spec, getattr(args, spec.name))
              for spec in all_extra_inputs() if getattr(args, spec.name) is not None}
    train_cuts = load_cuts(args.cuts)
    method = FineTuning(args.init, config["finetune"], args.lang_dir, next(iter(train_cuts)).num_features, inputs)
    train(run, args.exp_dir, args.lang_dir, train_cuts, load_cuts(args.valid_cuts),
          model_params=method.model_params, loss_params=config["loss"], train_params=config["finetune"],
          recipe=method, noise_cuts=inputs.get(NOISE_CUTS.name), device=device)


if __name__ == "__main__":
    run_cli(main)
