"""Stage ``tts_data``: cuts -> what TTS trains on: each transcript's phones (the phone lang
dir's CMUdict pronunciations, word boundaries as ``|``) and the invertible mel frames of
:mod:`speechtune.tts.features` (:func:`speechtune.tts.data.prepare_tts_cuts`)::

    python -m stages.tts_data data/manifests/voice_train_cuts.jsonl.gz data/tts/fbank/voice_train_cuts.jsonl.gz
    # the source domain's utterances read clean (no room), for multi-voice pretraining
    python -m stages.tts_data data/manifests/source_train_cuts.jsonl.gz \\
        data/tts/fbank/source_train_cuts.jsonl.gz --clean-of data/corpus/source --config config/config.yaml

writes, beside OUT_CUTS, ``<prefix>_feats.lca`` (the mels), ``<prefix>_skipped.txt`` (one line
per skipped utterance: id, reason) and ``<prefix>.provenance.json``. An utterance with a word
CMUdict cannot say is skipped and counted; with ``--clean-of``, so is every source
utterance the corpus stage read in a room (reverb and noise would be learned as the voice).
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from local.tts_voice import clean_source_ids
from speechtune.cli import add_config_arguments, add_threads_argument, run_cli, stage_parser, stage_sections, stage_seed
from speechtune.data.cuts import load_cuts
from speechtune.provenance import StageRun
from speechtune.tts.data import prepare_tts_cuts


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("in_cuts", type=Path, help="cuts with audio, e.g. data/manifests/voice_train_cuts.jsonl.gz")
    parser.add_argument("out_cuts", type=Path, help="e.g. data/tts/fbank/voice_train_cuts.jsonl.gz")
    parser.add_argument("--clean-of", type=Path, metavar="CORPUS_DIR",
                        help="keep only the utterances this embedded corpus read without a room")
    add_threads_argument(parser, "mel extraction processes")
    add_config_arguments(parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    config = stage_sections(args, ["corpus"])
    run = StageRun("tts_data", {}, stage_seed(args))
    cuts = load_cuts(args.in_cuts, with_features=False)
    skipped = {}
    if args.clean_of is not None:
        clean = clean_source_ids(config["corpus"]["source"], args.clean_of, run.seed, cuts.ids)
        skipped = {cut_id: "read in a room (reverb and noise)" for cut_id in cuts.ids if cut_id not in clean}
    prepare_tts_cuts(cuts, args.out_cuts, run, num_jobs=args.threads, skipped=skipped)


if __name__ == "__main__":
    run_cli(main)
