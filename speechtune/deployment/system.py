"""A trained system as the decode stage sees it: its checkpoint, the lang dir and LM of the
domain it recognizes, the feature extractor its features were computed with, and the config's
``decode`` section::

    config = load_config([DEFAULT_CONFIG_PATH, Path("config/tiny.yaml")])
    system = find_system(config, "finetuned")               # exp/finetuned, data/lang_phone_target
    system.model_path, system.hlg_path, system.extractor.name
    # (PosixPath('exp/finetuned/model.pt'), PosixPath('data/lang_phone_target/lm_target/HLG.pt'), 'kaldi-fbank')

Every path comes from :mod:`speechtune.experiment` (the Snakefile's definitions), under
``exp_dir`` and ``data_dir`` in place of ``exp/`` and ``data/``. Each missing piece is a
:class:`~speechtune.errors.StageError` that says what builds it.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple, Union

from lhotse.features.base import FeatureExtractor

from speechtune.errors import StageError
from speechtune.experiment import (DOMAINS, FRONT_END_MODELS, front_end, lang_dir, system_dir, system_names,
                                   trainable_systems, training_cuts)
from speechtune.features.extract import output_paths, stage_extractor
from speechtune.lang.lang_dir import hlg_path


@dataclass(frozen=True)
class DeployedSystem:
    """What recognizing with one system needs (see the module docstring)."""

    name: str
    domain: str                 # whose lang dir, LM and adapters: target or source
    model_path: Path            # exp/<system>/model.pt
    lang_dir: Path              # data/lang_<unit>_<domain>
    sample_rate: int            # the pipeline's audio (prepare.sample_rate): features assume it
    max_abs_sample: float       # prepare's: samples beyond it are no audio
    extractor: FeatureExtractor  # the features stage's, for this system's front end
    decode: Dict[str, Any]      # the config's decode section: beams, batch seconds

    @property
    def hlg_path(self) -> Path:
        return hlg_path(self.lang_dir, self.domain)


def _under(root: Union[str, Path], layout_path: str, top: str) -> Path:
    """``layout_path`` (``data/...`` or ``exp/...`` as experiment spells it) under ``root``."""
    return Path(root) / Path(layout_path).relative_to(top)


def find_system(config: Mapping[str, Any], system: str, exp_dir: Union[str, Path] = "exp",
                data_dir: Union[str, Path] = "data", domain: str = "target") -> DeployedSystem:
    """``system`` of ``config`` as built under ``exp_dir`` and ``data_dir``, for ``domain``;
    a StageError naming the file and what builds it where something is missing."""
    if system not in trainable_systems(config):
        raise StageError(f"--system {system}: this config has no such system; its systems: "
                         f"{', '.join(system_names(config))} (a preset's systems need its --config)")
    if domain not in DOMAINS:
        raise StageError(f"--domain {domain}: expected one of {', '.join(DOMAINS)}")
    build = "`.venv/bin/snakemake --cores 8 {}` (with this config's --configfile presets) where the pipeline runs"
    model_path = Path(system_dir(system, exp_dir)) / "model.pt"
    if not model_path.is_file():
        raise StageError(f"{model_path} is missing: system {system} is not trained yet; train it with "
                         + build.format(f"{system_dir(system)}/model.pt") + ", or pass --exp-dir")
    lang = _under(data_dir, lang_dir(config, domain), "data")
    for needed in lang_files(lang, domain):
        if not needed.is_file():
            raise StageError(f"{needed} is missing: build the lang dir with "
                             + build.format(lang_dir(config, domain)) + ", or pass --data-dir")
    model_dir = FRONT_END_MODELS[front_end(system)]
    deployed = deployed_system(system, domain, model_path, lang, config,
                               _under(exp_dir, model_dir, "exp") if model_dir else None)
    _check_features(deployed.extractor, _under(data_dir, training_cuts(config, system), "data"), system)
    return deployed


def lang_files(lang: Path, domain: str) -> Tuple[Path, ...]:
    """What recognizing with the lang dir ``lang`` reads: its words, its tokens and ``domain``'s HLG."""
    return lang / "words.txt", lang / "tokens.txt", hlg_path(lang, domain)


def deployed_system(name: str, domain: str, model_path: Path, lang: Path, sections: Mapping[str, Any],
                    front_end_dir: Optional[Path] = None) -> DeployedSystem:
    """The model ``model_path`` recognizing ``domain``'s audio with the lang dir ``lang``, as the
    config's ``prepare``, ``features`` and ``decode`` sections (of ``sections``) say; a stage
    whose rule names the model and lang dir needs only those sections, not the systems'
    definitions :func:`find_system` looks them up in. ``front_end_dir``: a Kaldi front end's model
    directory (None: lhotse's fbank)."""
    sample_rate = int(sections["prepare"]["sample_rate"])
    return DeployedSystem(name, domain, Path(model_path), Path(lang), sample_rate,
                          float(sections["prepare"]["max_abs_sample"]),
                          stage_extractor(sections["features"], sample_rate, front_end_dir), dict(sections["decode"]))


def _check_features(extractor: FeatureExtractor, train_cuts: Path, system: str) -> None:
    """The extractor must be the one the system's training features were computed with (their
    provenance says which, where the tree has it): a config other than the tree's would
    otherwise recognize from features the model has never seen, without a word."""
    _, provenance = output_paths(train_cuts)
    if not provenance.is_file():
        return  # a model copied without its data/: the config is all there is to go by
    recorded = json.loads(provenance.read_text()).get("extractor") or {}
    ours = extractor.to_dict()
    # A Kaldi front end's model_dir is spelled relative to where the pipeline ran: not compared.
    changed = sorted(k for k in set(recorded) | set(ours) if k != "model_dir" and recorded.get(k) != ours.get(k))
    if recorded and changed:
        raise StageError(f"{provenance}: {system} was trained on features computed with other settings than this "
                         f"config's features section gives ({', '.join(changed)} differ); pass the --config presets "
                         f"the pipeline ran with")

