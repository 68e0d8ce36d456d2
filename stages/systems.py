"""The systems of a config and the config sections each one's training stage reads: one
definition that the Snakefile wires and ``speechtune status`` checks provenance against.

    >>> config = load_config([DEFAULT_CONFIG_PATH])
    >>> system_names(config)
    ['pretrained', 'finetuned', 'finetuned_mmi', ..., 'adapted', 'adapted_lhuc', 'scratch']
    >>> training_sections(config, "finetuned_mmi")["loss"]["type"]
    'mmi'

- ``pretrained``: ``model``, ``loss``, ``pretrain``;
- a fine-tuning variant (a key of ``finetune_variants``, or of :func:`sweep_variants`):
  ``loss`` and ``finetune`` with the variant's overrides deep-merged;
- an adapted system (a key of ``adapt_variants``): ``loss`` and ``adapt`` with its overrides;
- ``scratch``: ``model``, ``loss``, ``scratch`` and ``finetune`` with scratch's keys replacing
  fine-tuning's learning rate and warm-up (finetune's own never reach it);
- ``kaldi_ko_finetuned`` (the imported Kaldi chain model, fine-tuned; reported where
  ``kaldi_ko.report`` is true): ``loss`` and ``finetune`` with ``kaldi_ko.overrides``.
"""
from typing import Any, Dict, List, Mapping

from stages.cli import StageError
from stages.config import deep_merge, validate_config

KALDI_KO = "kaldi_ko_finetuned"


def _merged(config: Mapping[str, Any], overrides: Mapping[str, Any]) -> Dict[str, Any]:
    return {name: deep_merge(config[name], overrides.get(name, {})) for name in ("loss", "finetune")}


def sweep_variants(config: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The alpha sweep's fine-tuning variants, ``finetuned_<regularizer>_a<alpha>`` ->
    overrides: base ``finetune`` with that regularizer at that alpha. A point that some
    ``finetune_variants`` system already trains (e.g. finetuned_kld at its alpha) is left out:
    the sweep's report takes that system for it."""
    standard = [_merged(config, overrides) for overrides in config["finetune_variants"].values()]
    sweep = {
        f"finetuned_{regularizer}_a{alpha:g}": {"finetune": {"regularizer": {"type": regularizer, "alpha": alpha}}}
        for regularizer, alphas in config["alpha_sweep"].items() for alpha in alphas
    }
    return {name: overrides for name, overrides in sweep.items() if _merged(config, overrides) not in standard}


def fine_tuning_variants(config: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Every fine-tuning variant the finetune stage can build, name -> overrides."""
    return {**sweep_variants(config), **config["finetune_variants"]}


def system_names(config: Mapping[str, Any]) -> List[str]:
    """The systems the main target builds and reports, in report order (the sweep's aside)."""
    kaldi = [KALDI_KO] if config["kaldi_ko"]["report"] else []
    return ["pretrained", *config["finetune_variants"], *config["adapt_variants"], "scratch", *kaldi]


def training_sections(config: Mapping[str, Any], system: str) -> Dict[str, Any]:
    """The validated config sections ``system``'s training stage is given (module docstring)."""
    variants = fine_tuning_variants(config)
    if system == "pretrained":
        return {name: config[name] for name in ("model", "loss", "pretrain")}
    if system == "scratch":
        return {"model": config["model"], "loss": config["loss"], "scratch": config["scratch"],
                "finetune": {**config["finetune"], **config["scratch"]}}
    if system in variants:
        sections = _merged(config, variants[system])
    elif system == KALDI_KO:
        sections = _merged(config, config["kaldi_ko"]["overrides"])
        if sections["finetune"]["speed_perturb"] or sections["finetune"].get("noise_mix", {}).get("prob", 0) > 0:
            raise StageError(f"{KALDI_KO}: speed_perturb and noise_mix are not available for the imported "
                             "model's features (MFCC + i-vectors); turn them off in kaldi_ko.overrides.finetune")
    elif system in config["adapt_variants"]:
        sections = {"loss": config["loss"], "adapt": deep_merge(config["adapt"], config["adapt_variants"][system])}
    else:
        raise StageError(f"'{system}' is none of the systems of this config: {', '.join(system_names(config))}")
    for name, value in sections.items():
        validate_config(value, section=name, where=f"system {system}")
    return sections
