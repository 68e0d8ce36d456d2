"""Stage ``features``: cuts -> features stored with lilcom (:mod:`speechtune.features.extract`).

    python -m stages.features data/manifests/target_train_cuts.jsonl.gz \\
        data/fbank/target_train_cuts.jsonl.gz --config config/config.yaml
    # + copies at speeds 0.9 and 1.1 (the speed_perturb augmentation's training set)
    python -m stages.features data/manifests/target_train_cuts.jsonl.gz \\
        data/fbank/target_train_sp_cuts.jsonl.gz --speed-perturb 0.9 1.1
    # an imported Kaldi model's front end: its MFCC with its online i-vectors appended
    python -m stages.features data/manifests/target_train_cuts.jsonl.gz \\
        data/kaldi_ko/feats/target_train_cuts.jsonl.gz --front-end exp/kaldi_ko

writes, beside OUT_CUTS (whose name must end in ``_cuts.jsonl.gz``), ``<prefix>_feats.lca``
(the feature matrices) and ``<prefix>.provenance.json``. ``features.extractor`` picks the
extractor (lhotse's Kaldi-compatible ``Fbank`` by default). Every input cut comes out with
features or the stage fails naming the cuts whose audio could not be read.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import add_config_arguments, add_threads_argument, run_cli, stage_config, stage_parser, stage_seed
from speechtune.features.extract import CUTS_SUFFIX, extract_features
from speechtune.provenance import StageRun


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("in_cuts", type=Path, help="input CutSet, e.g. data/manifests/target_train_cuts.jsonl.gz")
    parser.add_argument("out_cuts", type=Path, help=f"output CutSet, e.g. data/fbank/target_train{CUTS_SUFFIX}")
    parser.add_argument("--speed-perturb", type=float, nargs="+", default=[], metavar="FACTOR",
                        help="also store a copy of every cut at each speed factor, e.g. 0.9 1.1")
    parser.add_argument("--front-end", type=Path, metavar="MODEL_DIR",
                        help="a Kaldi model directory (e.g. exp/kaldi_ko): its MFCC + online i-vectors "
                             "instead of features.extractor")
    add_threads_argument(parser, "feature extraction processes")
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    config = stage_config(args, "features")
    extract_features(args.in_cuts, args.out_cuts, config, StageRun("features", config, stage_seed(args)),
                     speed_factors=args.speed_perturb, front_end=args.front_end, num_jobs=args.threads)


if __name__ == "__main__":
    run_cli(main)
