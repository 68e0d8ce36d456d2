"""Stage ``report``: every system's scores side by side.

    python -m stages.report exp --systems pretrained finetuned scratch \\
        --testsets target_test source_test                 # exp/report.{json,md,html}, plots
    python -m stages.report exp --name alpha_sweep --systems ... --testsets ...

reads each system's scores and training provenance and writes ``<name>.json`` (per system and
test set: wer, words, ins, del, sub, the 95% bootstrap interval; train_seconds; the paired
comparisons), ``<name>.md`` (the answer first), ``<name>_wer.png``, ``<name>_tradeoff.png``
(target against source WER), ``<name>_alpha.png`` where regularizers ran at several alphas
(:mod:`speechtune.reporting.report`) and ``<name>.html``, one self-contained page leading with
the answer and the ``--findings`` (time to target, the learning curve), then the tables,
training curves, per-speaker WER and examples to listen to (:mod:`speechtune.reporting.html`).
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import run_cli, stage_parser
from speechtune.experiment import BASELINE
from speechtune.reporting.html import write_html_report
from speechtune.reporting.report import collect, write_report


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("exp_dir", type=Path)
    parser.add_argument("--systems", nargs="+", required=True)
    parser.add_argument("--testsets", nargs="+", required=True)
    parser.add_argument("--baseline", default=BASELINE, help="the system others are compared to")
    parser.add_argument("--name", default="report", help="writes <exp_dir>/<name>.{json,md,html}, <name>_wer.png")
    parser.add_argument("--examples", type=int, default=3, help="example utterances per test set in the HTML")
    parser.add_argument("--findings", type=Path, nargs="*", default=[], metavar="JSON",
                        help="findings shown first in the HTML, each a JSON with a title and a statement and a "
                             "PNG of the same name (e.g. exp/time_to_target.json)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    report = collect(args.exp_dir, args.systems, args.testsets, args.baseline)
    print(write_report(report, args.exp_dir, args.name, args.testsets, args.baseline))
    write_html_report(args.exp_dir, args.systems, args.testsets, args.exp_dir / f"{args.name}.html",
                      report_json=args.exp_dir / f"{args.name}.json", examples=args.examples,
                      findings=args.findings)


if __name__ == "__main__":
    run_cli(main)
