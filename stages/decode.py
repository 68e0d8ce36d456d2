"""Stage ``decode``: recognize a test set with a trained model (:mod:`speechtune.decoding`).

    python -m stages.decode exp/finetuned/model.pt data/lang_phone_target target \\
        data/fbank/target_test_cuts.jsonl.gz exp/finetuned/decode/target_test

writes ``hlg/`` (HLG 1-best with the lang dir's ``lm_<LM>/HLG.pt``) and, with BPE units,
``greedy/`` (CTC greedy search, no LM), each holding ``hyp.txt``, ``ref.txt``, ``utt2spk`` and
``rtf.json``, and the decode's ``provenance.json``. The LM is the test set's domain; a domain's
adapters apply to its own test sets only.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import (add_compute_arguments, add_config_arguments, compute_device, run_cli,
                            stage_config, stage_parser, stage_seed)
from speechtune.decoding import decode_test_set
from speechtune.provenance import StageRun


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("model", type=Path, help="checkpoint, e.g. exp/finetuned/model.pt")
    parser.add_argument("lang_dir", type=Path)
    parser.add_argument("lm", help="which LM's HLG: the domain of the test set (source|target)")
    parser.add_argument("cuts", type=Path, help="test cuts with features")
    parser.add_argument("out_dir", type=Path, help="e.g. exp/finetuned/decode/target_test")
    add_compute_arguments(parser)
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    device = compute_device(args)
    params = stage_config(args, "decode")
    run = StageRun("decode", params, stage_seed(args))
    decode_test_set(args.model, args.lang_dir, args.lm, args.cuts, args.out_dir, params, run, device)


if __name__ == "__main__":
    run_cli(main)
