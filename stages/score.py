"""Stage ``score``: word error rate the way Kaldi reports it (:mod:`speechtune.scoring.wer`).

    python -m stages.score exp/finetuned/decode/target_test/hlg --copy-to exp/finetuned/wer.txt

reads the decode directory's ``ref.txt``, ``hyp.txt`` and ``utt2spk`` and writes beside them
``wer.txt`` (Kaldi's ``%WER`` line first), ``per_utt.txt``, ``per_spk.txt`` and ``wer.json``.
A reference utterance without a hypothesis line is an error (Kaldi's ``--mode=strict``).
"""
import argparse
import shutil
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import run_cli, stage_parser
from speechtune.provenance import atomic_file
from speechtune.scoring.wer import score_decode_dir


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("decode_dir", type=Path, help="holds ref.txt, hyp.txt, utt2spk")
    parser.add_argument("--copy-to", type=Path, default=None, help="also copy wer.txt here")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    total = score_decode_dir(args.decode_dir)
    print(total.kaldi_line())
    if args.copy_to is not None:
        with atomic_file(args.copy_to) as tmp:
            shutil.copyfile(args.decode_dir / "wer.txt", tmp)


if __name__ == "__main__":
    run_cli(main)
