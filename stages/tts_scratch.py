"""Stage ``tts_scratch``: Tacotron 2 on the target voice's minutes alone, from nothing
(:func:`speechtune.tts.systems.scratch_tts`): what fine-tuning is measured against::

    python -m stages.tts_scratch data/tts/fbank/voice_train_cuts.jsonl.gz \\
        exp/tts/scratch --config config/config.yaml

Writes the system directory of :mod:`speechtune.tts.training`; a rerun resumes from its last
epoch. Reads ``tts.model``, ``tts.max_frames``, ``tts.valid_fraction`` and ``tts.scratch``.
"""
import argparse
from typing import Optional, Sequence

from speechtune.cli import run_cli
from speechtune.tts.systems import scratch_tts
from stages import tts_pretrain


def get_parser() -> argparse.ArgumentParser:
    return tts_pretrain.get_parser(__name__, __doc__, "the target voice's cuts from the tts_data stage", "exp/tts/scratch")


def main(argv: Optional[Sequence[str]] = None) -> None:
    tts_pretrain.main(argv, get_parser(), scratch_tts, "tts_scratch")


if __name__ == "__main__":
    run_cli(main)
