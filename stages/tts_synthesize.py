"""Stage ``tts_synthesize``: one TTS system renders the target voice's held-out test sentences
(:func:`speechtune.tts.synthesis.synthesize_test_set`)::

    python -m stages.tts_synthesize exp/tts/finetuned/model.pt data/tts/fbank/voice_test_cuts.jsonl.gz \\
        exp/tts/finetuned/synth --config config/config.yaml
    # the pretrained system never had the voice: a speaker row at the mean of its voices
    python -m stages.tts_synthesize exp/tts/pretrained/model.pt ... exp/tts/pretrained/synth --unseen-voice

writes a Kaldi data dir of WAVs (``wav.scp``, ``text``, ``utt2spk``, ``wav/``),
``synthesis.json`` (frames, stop token, attention diagonality per utterance) and
``alignments.png``. Reads ``tts.vocoder`` and ``tts.synthesize``.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import (add_config_arguments, add_threads_argument, run_cli, stage_parser, stage_sections,
                            stage_seed, use_threads)
from speechtune.provenance import StageRun
from speechtune.tts.synthesis import synthesize_test_set


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("model", type=Path, help="a TTS system's model.pt")
    parser.add_argument("cuts", type=Path, help="the test sentences: the voice's test cuts from the tts_data stage")
    parser.add_argument("out_dir", type=Path, help="e.g. exp/tts/finetuned/synth")
    parser.add_argument("--unseen-voice", action="store_true",
                        help="the model never had the test voice: speak with the mean of its voices")
    add_threads_argument(parser)
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    use_threads(args.threads)
    tts = stage_sections(args, ["tts"])["tts"]
    seed = stage_seed(args)
    synthesize_test_set(args.model, args.cuts, args.out_dir, tts, seed, args.unseen_voice,
                        StageRun("tts_synthesize", tts, seed))


if __name__ == "__main__":
    run_cli(main)
