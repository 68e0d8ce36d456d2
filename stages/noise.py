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

import soundfile as sf
from lhotse import AudioSource, CutSet, Recording, RecordingSet

from local.embedded_corpus import SAMPLE_RATE, noise_recording
from stages.cli import run_cli
from stages.config import add_config_arguments, stage_config, stage_seed
from stages.features import extract_features
from stages.provenance import StageRun, atomic_dir


def write_noise(noise_dir: Path, noise_types: Sequence[str]) -> Path:
    """One WAV per noise type and their cuts in ``noise_dir``; returns the cuts manifest."""
    with atomic_dir(noise_dir) as tmp:
        recordings = []
        for noise_type in noise_types:
            audio = noise_recording(noise_type)
            sf.write(str(tmp / f"{noise_type}.wav"), audio, SAMPLE_RATE, subtype="PCM_16")
            recordings.append(Recording(  # named by the path it has once the directory is in place
                id=f"noise-{noise_type}", sampling_rate=SAMPLE_RATE, num_samples=len(audio),
                duration=len(audio) / SAMPLE_RATE,
                sources=[AudioSource(type="file", channels=[0], source=str(noise_dir / f"{noise_type}.wav"))],
            ))
        CutSet.from_manifests(recordings=RecordingSet.from_recordings(recordings)).to_file(tmp / "noise_cuts.jsonl.gz")
    return noise_dir / "noise_cuts.jsonl.gz"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stages.noise", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("noise_dir", type=Path, help="where the noise WAVs go, e.g. data/noise")
    parser.add_argument("out_cuts", type=Path, help="noise cuts with features, e.g. data/fbank/noise_cuts.jsonl.gz")
    parser.add_argument("--noise-types", nargs="+", required=True, help="sox synth noise types")
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    config = stage_config(args, "features")
    manifest = write_noise(args.noise_dir, args.noise_types)
    extract_features(manifest, args.out_cuts, config, StageRun("noise", config, stage_seed(args)))


if __name__ == "__main__":
    run_cli(main)
