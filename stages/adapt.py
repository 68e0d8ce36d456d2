"""Stage ``adapt``: insert adapters into the pretrained model and train only them on the target
domain (the ``adapt`` section; :mod:`stages.methods`, :mod:`stages.models`).

    python -m stages.adapt exp/pretrained/model.pt data/fbank/target_train_cuts.jsonl.gz \\
        data/fbank/target_dev_cuts.jsonl.gz data/lang_phone_target exp/adapted

``adapt.adapter.type`` picks the adapters: ``residual`` (a bottleneck of ``adapter.dim`` after
every hidden layer) or ``lhuc`` (a learned scale per hidden unit). Every other parameter and
the batch-norm statistics stay the pretrained model's, so the trainable-parameter count in
``provenance.json`` is the adapters' alone. The adapters belong to ``adapter.domain``
(target): decoding another domain's test set bypasses them (:meth:`TdnnModel.select_domain`).
"""
import argparse
from typing import Optional, Sequence

from stages.cli import StageError, run_cli
from stages.config import stage_sections, stage_seed
from stages.finetune import add_arguments, fine_tune
from stages.provenance import StageRun


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stages.adapt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    config = stage_sections(args, ["loss", "adapt"])
    if config["adapt"]["adapter"]["type"] == "none":
        raise StageError("adapt.adapter.type is none: name residual or lhuc (or fine-tune with the finetune stage)")
    run = StageRun("adapt", config, stage_seed(args))
    fine_tune(args, run, config["loss"], config["adapt"])


if __name__ == "__main__":
    run_cli(main)
