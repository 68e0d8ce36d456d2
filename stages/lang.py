"""Stage ``lang``: an icefall-compatible lang dir (tokens, lexicon, L) and one LM + HLG per domain
(:mod:`speechtune.lang.lang_dir` says what each file holds and the OOV policy).

    python -m stages.lang data/manifests/source_train_cuts.jsonl.gz \\
        --lm-text source=data/manifests/source_train_cuts.jsonl.gz data/lang_phone_source
    python -m stages.lang data/manifests/target_train_cuts.jsonl.gz \\
        --bpe-model data/lang_bpe_500_source/bpe.model \\
        --lm-text target=data/manifests/target_train_cuts.jsonl.gz data/lang_bpe_500_target

``lang.unit`` picks the units (``phone``: CMUdict; ``bpe``: sentencepiece, trained on the FIRST
manifest's text unless ``--bpe-model`` reuses the pretrained model's); each ``--lm-text
DOMAIN=CUTS`` trains a Kneser-Ney n-gram LM on that text and compiles ``lm_<DOMAIN>/HLG.pt``.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import add_config_arguments, run_cli, stage_config, stage_parser, stage_seed
from speechtune.lang.lang_dir import parse_lm_text, prepare_lang
from speechtune.provenance import StageRun


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument(
        "train_cuts", type=Path, nargs="+", metavar="TRAIN_CUTS",
        help="lhotse cut manifests whose words the lexicon covers; the FIRST one (the source "
        "domain) alone trains the BPE model",
    )
    parser.add_argument(
        "--lm-text", type=parse_lm_text, action="append", required=True, metavar="DOMAIN=CUTS",
        help="train an LM and HLG, written to OUT_DIR/lm_DOMAIN/, on the text of CUTS; repeatable",
    )
    parser.add_argument(
        "--bpe-model", type=Path, default=None, metavar="FILE",
        help="reuse this sentencepiece model (the pretrained model's tokens) instead of training one",
    )
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="the lang dir, e.g. data/lang_bpe_500_source")
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    # Intermixed: the options may come between TRAIN_CUTS and OUT_DIR.
    args = get_parser().parse_intermixed_args(argv)
    config = stage_config(args, "lang")
    run = StageRun("lang", config, stage_seed(args))
    prepare_lang(args.train_cuts, args.lm_text, args.out_dir, config, run, args.bpe_model)


if __name__ == "__main__":
    run_cli(main)
