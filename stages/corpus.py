"""Stage ``corpus``: synthesize the embedded default corpus of one domain as Kaldi data dirs.

    python -m stages.corpus --domain source data/corpus/source --config config/config.yaml
    python -m stages.corpus --domain target data/corpus/target --config config/config.yaml

For each split of ``corpus.<domain>.splits`` this synthesizes utterances, in order, until the
split holds ``minutes`` of audio, and writes::

    data/corpus/target/
        train/wav.scp    tgt-spk01-train-00003 data/corpus/target/wav/train/tgt-spk01-train-00003.wav
        train/text       tgt-spk01-train-00003 TURN OFF THE KITCHEN LIGHTS
        train/utt2spk, train/spk2utt
        train/spk2voice  tgt-spk01 flite voice=awb duration_stretch=1.07 int_f0_target_mean=131
        dev/ ...  test/ ...
        wav/<split>/<utt>.wav    16 kHz mono 16-bit
        provenance.json          config, seed, tool versions, utterances and seconds per split

Paths in ``wav.scp`` are the final ones relative to the directory the stage runs from (the
repository root), as Kaldi expects. Who reads what, in which room, is decided in
``local.embedded_corpus``; the same seed gives byte-identical files.
"""
import argparse
import os
from pathlib import Path
from typing import Optional, Sequence

from local.embedded_corpus import SPLITS, write_corpus
from speechtune.cli import add_config_arguments, run_cli, stage_config, stage_parser, stage_seed
from speechtune.provenance import StageRun


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("--domain", required=True, choices=sorted(SPLITS),
                        help="source: WordNet sentences, espeak-ng voices, clean; "
                             "target: smart-speaker commands, flite voices, reverb and noise")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="e.g. data/corpus/target")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="synthesizer processes run at once (default: the CPU count)")
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    config = stage_config(args, f"corpus.{args.domain}")
    run = StageRun("corpus", config, stage_seed(args))
    write_corpus(args.domain, config, args.out_dir, args.jobs, run)


if __name__ == "__main__":
    run_cli(main)
