"""The ``speechtune`` command (also ``python -m speechtune``): commands a person runs beside the
pipeline, each a parser and a call into the library::

    speechtune status                          # which systems are built, stale or missing
    speechtune status --config config/tiny.yaml --json
    speechtune recognize --system finetuned my.wav other.flac data/my_test   # words per utterance
    speechtune recognize --system finetuned long_meeting.wav --window 15 --out hyp/
    speechtune export --system finetuned onnx/finetuned                      # ONNX + lang files
    speechtune mos ratings/*.json --out exp/tts/mos.json    # MOS from the TTS listening page's ratings
"""
import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import add_compute_arguments, compute_device, run_cli
from speechtune.config import DEFAULT_CONFIG_PATH, load_config
from speechtune.deployment import onnx_export, recognize
from speechtune.deployment.system import find_system
from speechtune.experiment import DOMAINS, PLAIN, testsets
from speechtune.provenance import StageRun
from speechtune.reporting import status
from speechtune.tts import listening


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config", type=Path, action="append", default=[], metavar="FILE",
        help=f"a preset layered on {DEFAULT_CONFIG_PATH.name} (repeatable), as Snakemake's --configfile",
    )


def _add_system_arguments(parser: argparse.ArgumentParser) -> None:
    """Which system, as the pipeline built it: its config, exp/ and data/."""
    parser.add_argument("--system", default=PLAIN, help=f"a system of the config (default {PLAIN}; see speechtune status)")
    parser.add_argument("--domain", choices=DOMAINS, default="target",
                        help="whose lang dir, LM and adapters: the audio's domain (default target)")
    _add_config_argument(parser)
    parser.add_argument("--exp-dir", type=Path, default=Path("exp"), help="default: exp")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="default: data (the lang dirs)")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="speechtune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    status_parser = commands.add_parser(
        "status", help="which systems are built, stale or missing, and their WERs",
        description=status.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_argument(status_parser)
    status_parser.add_argument("--exp-dir", type=Path, default=Path("exp"), help="default: exp")
    status_parser.add_argument("--testsets", nargs="+", help="default: the config's (target_test, source_test, ...)")
    status_parser.add_argument("--json", action="store_true", help="print JSON instead of a table")

    recognize_parser = commands.add_parser(
        "recognize", help="words of audio files or Kaldi data dirs, decoded as the decode stage does",
        description=recognize.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    recognize_parser.add_argument("inputs", nargs="+", type=Path, metavar="FILE_OR_DATA_DIR",
                                  help="audio files (WAV, FLAC, ...: any format lhotse reads) or Kaldi data dirs")
    _add_system_arguments(recognize_parser)
    recognize_parser.add_argument("--window", type=float, default=recognize.DEFAULT_WINDOW_SECONDS, metavar="SECONDS",
                                  help="longer audio is recognized in windows of this many seconds "
                                       f"(default {recognize.DEFAULT_WINDOW_SECONDS:g})")
    recognize_parser.add_argument("--out", type=Path, metavar="DIR", help="also write DIR/text (Kaldi's text format)")
    add_compute_arguments(recognize_parser)

    export_parser = commands.add_parser(
        "export", help="a system's acoustic model as ONNX, with the lang files it decodes with",
        description=onnx_export.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    export_parser.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="written whole: new, or an earlier export")
    _add_system_arguments(export_parser)

    mos_parser = commands.add_parser(
        "mos", help="MOS with 95%% intervals and A/B preferences from the TTS listening page's saved ratings",
        description=listening.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listening.add_mos_arguments(mos_parser)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    if args.command == "mos":  # ratings only: no config, no tree
        listening.run_mos(args)
        return
    config = load_config([DEFAULT_CONFIG_PATH, *args.config])
    if args.command == "status":
        names = args.testsets or testsets(config)
        statuses = status.status(args.exp_dir, config, names)
        if args.json:
            print(json.dumps({"exp_dir": str(args.exp_dir), "systems": {s.system: asdict(s) for s in statuses}}, indent=2))
        else:
            print(status.format_table(statuses, names))
        return
    system = find_system(config, args.system, args.exp_dir, args.data_dir, args.domain)
    if args.command == "recognize":
        hyps = recognize.recognize(args.inputs, system, compute_device(args), window=args.window)
        for utt, words in hyps.items():
            print(f"{utt} {' '.join(words)}".rstrip(), flush=True)
        if args.out is not None:
            recognize.write_text(args.out, hyps)
    elif args.command == "export":
        run = StageRun("export", {"system": args.system, "domain": args.domain, "features": config["features"],
                                  "decode": config["decode"]}, int(config["seed"]))
        info = onnx_export.export_system(system, args.out_dir, run)
        print(f"{args.out_dir}: {info['model']} ({info['model_type']}, {info['features']['dim']}-dim "
              f"{info['features']['type']} at {info['sample_rate']} Hz, subsampling {info['subsampling_factor']}), "
              f"{info['tokens']}, {info['words']}, {info['hlg']}, model.json, README.md")


def cli() -> None:
    """The ``speechtune`` console script: ``main`` with the stages' one-line errors."""
    run_cli(main)


if __name__ == "__main__":
    cli()
