"""Stage ``prepare``: a Kaldi data dir -> validated lhotse manifests (and back).

Import (what the Snakefile runs, one subset at a time)::

    python -m stages.prepare import data/corpus/target/train data/manifests --subset target_train

reads ``wav.scp``, ``text``, ``utt2spk`` and, where present, ``segments``, and writes
``data/manifests/target_train_{recordings,supervisions,cuts}.jsonl.gz``,
``target_train_skipped.txt`` (one line per skipped utterance: id, reason) and
``target_train.provenance.json``. Faults of the data dir stop the stage with the file, line and
fix; faults of one utterance skip it, counted and logged; more than
``prepare.max_skip_fraction`` skipped fails the stage (:mod:`speechtune.data.kaldi_dir`).

Export writes a subset back to a Kaldi data dir (lhotse's exporter), for Kaldi tools::

    python -m stages.prepare export data/manifests target_test exp/kaldi/target_test
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import add_config_arguments, run_cli, stage_config, stage_parser, stage_seed
from speechtune.data.kaldi_dir import export_kaldi_data_dir, import_kaldi_data_dir
from speechtune.provenance import StageRun


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    importer = commands.add_parser("import", help="Kaldi data dir -> lhotse manifests")
    importer.add_argument("data_dir", type=Path, help="Kaldi data dir (wav.scp, text, utt2spk[, segments])")
    importer.add_argument("manifest_dir", type=Path, help="where the manifests go, e.g. data/manifests")
    importer.add_argument("--subset", required=True, help="manifest name prefix, e.g. target_train")
    add_config_arguments(importer)
    exporter = commands.add_parser("export", help="lhotse manifests -> Kaldi data dir")
    exporter.add_argument("manifest_dir", type=Path)
    exporter.add_argument("subset", help="manifest name prefix, e.g. target_test")
    exporter.add_argument("out_dir", type=Path, help="Kaldi data dir to write")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    if args.command == "export":
        export_kaldi_data_dir(args.manifest_dir, args.subset, args.out_dir)
        return
    config = stage_config(args, "prepare")
    run = StageRun("prepare", config, stage_seed(args))
    import_kaldi_data_dir(args.data_dir, args.manifest_dir, args.subset, config, run)


if __name__ == "__main__":
    run_cli(main)
