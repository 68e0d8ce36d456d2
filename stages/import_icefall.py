"""Stage ``import_icefall``: a released icefall tdnn_lstm_ctc model as the ``pretrained`` system,
and lang dirs over its phones (what config/icefall_librispeech.yaml's rules run).

    python -m stages.import_icefall model icefall_asr_librispeech_tdnn-lstm_ctc/exp/pretrained.pt \\
        icefall_asr_librispeech_tdnn-lstm_ctc/data/lang_phone exp/pretrained
    python -m stages.import_icefall lang icefall_asr_librispeech_tdnn-lstm_ctc/data/lang_phone \\
        --lexicon librispeech-lexicon.txt \\
        --lm-text target=data/manifests/target_train_cuts.jsonl.gz data/lang_phone_target

``model`` checks the checkpoint (``{"model": state_dict}``) against icefall's ``TdnnLstm`` key
for key and writes ``exp/pretrained/model.pt`` with the released tokens
(:func:`speechtune.finetuning.pretrained.import_icefall_checkpoint`). ``lang`` writes a lang dir
with the released tokens, words and lexicon, icefall's L, and per ``--lm-text DOMAIN=CUTS`` the
domain's LM and HLG, or with ``--released-hlg`` the released ``HLG.pt``
(:func:`speechtune.lang.released.import_lang_dir`). The model is 80-dim fbank at 16 kHz
(lhotse's ``Fbank`` defaults, as icefall computed LibriSpeech's features).
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import add_config_arguments, run_cli, stage_config, stage_parser, stage_seed
from speechtune.finetuning.pretrained import import_icefall_checkpoint
from speechtune.lang.lang_dir import parse_lm_text
from speechtune.lang.released import import_lang_dir
from speechtune.provenance import StageRun


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{model,lang}")
    model = commands.add_parser("model", help="the released checkpoint as an icefall-format system directory")
    model.add_argument("checkpoint", type=Path, help="icefall checkpoint, e.g. exp/pretrained.pt of the release")
    model.add_argument("lang_dir", type=Path, help="the release's data/lang_phone (its tokens.txt or phones.txt)")
    model.add_argument("exp_dir", type=Path, help="system directory to write, e.g. exp/pretrained")
    lang = commands.add_parser("lang", help="a lang dir over the released model's phones")
    lang.add_argument("lang_dir", type=Path, help="the release's data/lang_phone")
    lang.add_argument("--lexicon", type=Path, default=None, metavar="FILE",
                      help="the model's lexicon where the release has no lexicon.txt (LibriSpeech: "
                           "librispeech-lexicon.txt)")
    lang.add_argument("--lm-text", type=parse_lm_text, action="append", required=True, metavar="DOMAIN=CUTS",
                      help="train an LM and HLG, written to OUT_DIR/lm_DOMAIN/, on the text of CUTS; repeatable")
    lang.add_argument("--released-hlg", action="store_true",
                      help="decode every domain with the release's HLG.pt instead of compiling one")
    lang.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="the lang dir, e.g. data/lang_phone_target")
    add_config_arguments(lang)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    if args.command == "model":
        run = StageRun("import", {"checkpoint": str(args.checkpoint), "lang_dir": str(args.lang_dir)}, seed=0)
        import_icefall_checkpoint(args.checkpoint, args.lang_dir, args.exp_dir, run)
    else:
        config = stage_config(args, "lang")
        run = StageRun("lang", {**config, "released_lang_dir": str(args.lang_dir), "lexicon": str(args.lexicon),
                                "released_hlg": args.released_hlg}, stage_seed(args))
        import_lang_dir(args.lang_dir, args.lm_text, args.out_dir, config, run, args.lexicon, args.released_hlg)


if __name__ == "__main__":
    run_cli(main)
