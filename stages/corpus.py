"""Stage ``corpus``: one domain's corpus as Kaldi data dirs, by the domain's recipe
(``corpus.<domain>.recipe``, :mod:`local.corpora`: ``embedded``, synthesized here; ``asterisk``,
real recorded prompts for config/telephony.yaml; ``librispeech``, ``mini_librispeech``, ``yesno``
and ``lhotse_manifests``, a local copy of a real corpus through lhotse's recipes, e.g.
config/librispeech.yaml).

    python -m stages.corpus --domain source data/corpus/source --config config/config.yaml
    python -m stages.corpus --domain target data/corpus/target --config config/config.yaml

The embedded recipe synthesizes, for each split of ``corpus.<domain>.splits``, utterances in
order until the split holds ``minutes`` of audio, and writes::

    data/corpus/target/
        train/wav.scp    tgt-flite-003-train-00003 data/corpus/target/wav/train/tgt-flite-003-train-00003.wav
        train/text       tgt-flite-003-train-00003 TURN OFF THE KITCHEN LIGHTS
        train/utt2spk, train/spk2utt
        train/spk2voice  tgt-flite-003 flite voice=awb duration_stretch=1.07 f0_mean=131 formant=0.96
        dev/ ...  test/ ...  test_unseen/ ...
        wav/<split>/<utt>.wav    16 kHz mono 16-bit
        provenance.json          config, seed, tool versions, the families used and left out,
                                 utterances, seconds, speakers and seconds per family per split

Paths in ``wav.scp`` are the final ones relative to the directory the stage runs from (the
repository root), as Kaldi expects. Who reads what, in which room, is decided in
``local.embedded_corpus`` (the voices in ``local.voices``); the same seed gives byte-identical
files.
"""
import argparse
import os
from pathlib import Path
from typing import Optional, Sequence

from local.corpora import write_domain
from local.embedded_corpus import DOMAINS
from speechtune.cli import add_config_arguments, run_cli, stage_config, stage_parser, stage_seed
from speechtune.provenance import StageRun


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("--domain", required=True, choices=DOMAINS,
                        help="the domain whose corpus.<domain> section is read (embedded default: source, "
                             "WordNet sentences, many kinds of voice; target, smart-speaker commands in a noisy room)")
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="e.g. data/corpus/target")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="synthesizer processes (embedded) or lhotse reader threads (real corpora) run at once "
                             "(default: the CPU count)")
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    config = stage_config(args, f"corpus.{args.domain}")
    run = StageRun("corpus", config, stage_seed(args))
    write_domain(args.domain, config, args.out_dir, args.jobs, run)


if __name__ == "__main__":
    run_cli(main)
