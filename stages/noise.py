"""Stage ``noise``: noise recordings with features, for noise-mixing augmentation (lhotse's
``CutMix`` in training, ``finetune.noise_mix``).

    python -m stages.noise data/noise data/fbank/noise_cuts.jsonl.gz \\
        --noise-types pinknoise brownnoise whitenoise --config config/config.yaml

writes one minute of each sox noise type (``sox -n synth``, seeded, the same generator the
target room simulation uses) as ``data/noise/<type>.wav``, their cuts as
``data/noise/noise_cuts.jsonl.gz``, and extracts their features as the ``features`` stage does
(``data/fbank/noise_cuts.jsonl.gz`` + ``noise_feats.lca``). Mixing happens in the feature domain
(lhotse mixes log-mel energies of precomputed features), at an SNR drawn per cut.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from local.embedded_corpus import write_noise
from speechtune.cli import add_config_arguments, add_threads_argument, run_cli, stage_config, stage_parser, stage_seed
from speechtune.features.extract import extract_features
from speechtune.provenance import StageRun


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("noise_dir", type=Path, help="where the noise WAVs go, e.g. data/noise")
    parser.add_argument("out_cuts", type=Path, help="noise cuts with features, e.g. data/fbank/noise_cuts.jsonl.gz")
    parser.add_argument("--noise-types", nargs="+", required=True, help="sox synth noise types")
    add_threads_argument(parser, "feature extraction processes")
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    config = stage_config(args, "features")
    manifest = write_noise(args.noise_dir, args.noise_types)
    extract_features(manifest, args.out_cuts, config, StageRun("noise", config, stage_seed(args)),
                     num_jobs=args.threads)


if __name__ == "__main__":
    run_cli(main)
