"""The experiment a config describes, in one place: its systems, the test sets they are scored
on, and where every artifact lives under ``data/`` and ``exp/``. The Snakefile wires its rules
from here, and ``speechtune status`` and the reports read the same definitions::

    >>> config = load_config([DEFAULT_CONFIG_PATH])
    >>> system_names(config)
    ['pretrained', 'finetuned', 'finetuned_mmi', ..., 'adapted', 'adapted_lhuc', 'scratch']
    >>> training_sections(config, "finetuned_mmi")["loss"]["type"]
    'mmi'
    >>> training_inputs(config, "finetuned_rehearsal")["source_cuts"]
    'data/fbank/source_train_cuts.jsonl.gz'
    >>> decode_dir("finetuned", "target_test")
    'exp/finetuned/decode/target_test/hlg'

Path functions return strings joined with ``/``, so the Snakefile can pass wildcards
(``decode_dir("{system}", "{testset}", "{method}")``) where a stage passes values.

Systems (``<system>`` is the directory ``exp/<system>/``):

- ``pretrained``: the source-domain model from random initialization; sections ``model``,
  ``loss``, ``pretrain``. The no-fine-tuning baseline. With ``pretrained.source: icefall`` it is
  a released icefall model imported instead (rules/icefall.smk, stage ``import_icefall``).
- a fine-tuning variant (a key of ``finetune_variants`` or of :func:`sweep_variants`): from
  ``exp/pretrained``; sections ``loss`` and ``finetune`` with the variant's overrides.
- an adapted system (a key of ``adapt_variants``): the same, with ``adapt`` (and the variant's
  overrides) as its ``finetune`` section: adapters in the pretrained model, trained alone.
- ``kaldi_ko_finetuned``: the imported Kaldi chain model (``exp/kaldi_ko``), fine-tuned on its
  own front end's features, with ``kaldi_ko.overrides``; reported where ``kaldi_ko.report``.
- ``scratch``: sections ``model``, ``loss`` and ``finetune`` with ``scratch``'s keys replacing
  the learning rate and warm-up: the target data and step budget, no pretrained start.
- a learning-curve point ``<base>_lc<minutes>m_s<seed>`` (``learning_curve``: each base system
  at each size and seed): the base's sections trained on the first ``minutes`` of target_train
  (nested subsets), with epochs scaled to the base's number of steps.
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

from speechtune.config import deep_merge, validate_config
from speechtune.errors import StageError
from speechtune.finetuning import REGULARIZERS, extra_inputs
from speechtune.models import build_model
from speechtune.models.adapters import ADAPTERS, NO_ADAPTER
from speechtune.training.batches import training_subset

DOMAINS = ("source", "target")
TARGET_TESTSET, SOURCE_TESTSET = TESTSETS = ("target_test", "source_test")
UNSEEN_TESTSET = "target_test_unseen"  # a voice family no training data has, where the corpus has one
DEV_SET = "target_dev"
PRIMARY_METHOD = "hlg"           # HLG 1-best: the method every report and wer.txt is about
BASELINE = "pretrained"          # no fine-tuning
PLAIN = "finetuned"              # plain fine-tuning: alpha = 0 of every regularizer
SCRATCH = "scratch"
KALDI_KO = "kaldi_ko_finetuned"
KALDI_KO_IMPORT = "exp/kaldi_ko"  # the imported Kaldi model: a system directory and a model directory

# Feature front ends: the directory under data/ where a subset's cuts with features live, and
# the model directory whose front end computes them (None: features.extractor's fbank).
FEATURE_DIRS = {"fbank": "fbank", "kaldi_ko": "kaldi_ko/feats"}
FRONT_END_MODELS: Dict[str, Optional[str]] = {"fbank": None, "kaldi_ko": KALDI_KO_IMPORT}
NOISE_SUBSET = "noise"  # the noise stage's cuts (data/fbank/noise_cuts.jsonl.gz)


# --- data/ -------------------------------------------------------------------------------------

def corpus_dir(domain: str) -> str:
    return f"data/corpus/{domain}"


def manifest_cuts(subset: str) -> str:
    return f"data/manifests/{subset}_cuts.jsonl.gz"


def feature_cuts(subset: str, front_end: str = "fbank") -> str:
    """A subset's cuts with features, e.g. ``data/fbank/target_train_cuts.jsonl.gz``."""
    return f"data/{FEATURE_DIRS[front_end]}/{subset}_cuts.jsonl.gz"


def front_end_model(feature_dir: str) -> Optional[str]:
    """The model directory whose front end fills ``data/<feature_dir>`` (None: the fbank extractor)."""
    front_end = next(name for name, path in FEATURE_DIRS.items() if path == feature_dir)
    return FRONT_END_MODELS[front_end]


def lang_dir(config: Mapping[str, Any], domain: str) -> str:
    """A domain's lang dir: ``data/lang_phone_<domain>`` or ``data/lang_bpe_<size>_<domain>``."""
    lang = config["lang"]
    unit = f"bpe_{lang['bpe']['vocab_size']}" if lang["unit"] == "bpe" else "phone"
    return f"data/lang_{unit}_{domain}"


def splits(config: Mapping[str, Any], domain: str) -> List[str]:
    """A domain's splits (``corpus.<domain>.splits``; a preset removes one with null)."""
    return sorted(split for split, value in config["corpus"][domain]["splits"].items() if value is not None)


def subsets(config: Mapping[str, Any]) -> List[str]:
    """Every subset of the corpus: ``<domain>_<split>``."""
    return [f"{domain}_{split}" for domain in DOMAINS for split in splits(config, domain)]


def testsets(config: Mapping[str, Any]) -> List[str]:
    """The test sets every system is scored on: target_test and source_test, and
    target_test_unseen where the target corpus has a ``test_unseen`` split."""
    unseen = [UNSEEN_TESTSET] if "test_unseen" in splits(config, "target") else []
    return [TARGET_TESTSET, *unseen, SOURCE_TESTSET]


def testset_domain(testset: str) -> str:
    """The domain of a test set, whose lang dir and LM decode it: ``target`` of ``target_test``."""
    return testset.split("_")[0]


# --- exp/ --------------------------------------------------------------------------------------

def system_dir(system: str, exp_dir: Union[str, Path] = "exp") -> str:
    return f"{exp_dir}/{system}"


def decode_dir(system: str, testset: str, method: Optional[str] = PRIMARY_METHOD,
               exp_dir: Union[str, Path] = "exp") -> str:
    """Where ``system``'s decode of ``testset`` is; with ``method`` (``hlg``, ``greedy``) that
    method's hypotheses and scores, without it the decode's own directory."""
    path = f"{system_dir(system, exp_dir)}/decode/{testset}"
    return f"{path}/{method}" if method else path


def decode_methods(config: Mapping[str, Any]) -> List[str]:
    """HLG 1-best always; CTC greedy search joins BPE pieces into words, so BPE units add it."""
    return [PRIMARY_METHOD, "greedy"] if config["lang"]["unit"] == "bpe" else [PRIMARY_METHOD]


# --- systems -----------------------------------------------------------------------------------

def finetune_variants(config: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """``finetune_variants`` without the entries a preset set to null (its way to remove one:
    Snakemake merges the config files' mappings, so a preset cannot drop a key otherwise)."""
    return {name: value for name, value in config["finetune_variants"].items() if value is not None}


def adapt_variants(config: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """``adapt_variants`` without the entries set to null."""
    return {name: value for name, value in config["adapt_variants"].items() if value is not None}


def _merged(config: Mapping[str, Any], overrides: Mapping[str, Any], base: str = "finetune") -> Dict[str, Any]:
    return {"loss": deep_merge(config["loss"], overrides.get("loss", {})),
            "finetune": deep_merge(config[base], overrides.get("finetune", {}))}


def sweep_variants(config: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """The alpha sweep's fine-tuning variants, ``finetuned_<regularizer>_a<alpha>`` ->
    overrides: base ``finetune`` with that regularizer at that alpha. A point that some
    ``finetune_variants`` system already trains (e.g. finetuned_kld at its alpha) is left out:
    the sweep's report takes that system for it."""
    standard = [_merged(config, overrides) for overrides in finetune_variants(config).values()]
    sweep = {
        f"finetuned_{regularizer}_a{alpha:g}": {"finetune": {"regularizer": {"type": regularizer, "alpha": alpha}}}
        for regularizer, alphas in config["alpha_sweep"].items() for alpha in alphas
    }
    return {name: overrides for name, overrides in sweep.items() if _merged(config, overrides) not in standard}


def fine_tuning_variants(config: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Every fine-tuning variant the finetune rule can build, name -> overrides."""
    return {**sweep_variants(config), **finetune_variants(config)}


def fine_tuned_systems(config: Mapping[str, Any]) -> List[str]:
    """Every system the finetune rule trains from a pretrained start (reported or not)."""
    curve = [name for name, point in learning_curve_systems(config).items() if point.base != SCRATCH]
    return [*fine_tuning_variants(config), *adapt_variants(config), KALDI_KO, *curve]


def system_names(config: Mapping[str, Any]) -> List[str]:
    """The systems the main target builds and reports, in report order (the sweep's aside)."""
    kaldi = [KALDI_KO] if config["kaldi_ko"]["report"] else []
    return [BASELINE, *finetune_variants(config), *adapt_variants(config), SCRATCH, *kaldi]


@dataclass(frozen=True)
class CurvePoint:
    """A learning-curve system: ``base`` (a standard system) trained on the first ``minutes`` of
    target_train with ``seed``."""

    base: str
    minutes: float
    seed: int


CURVE_SUBSET = "target_train_{minutes}min"


def curve_subset(minutes: float) -> str:
    """The nested target_train subset of the first ``minutes`` (:func:`speechtune.data.cuts.nested_subset`)."""
    return CURVE_SUBSET.format(minutes=f"{minutes:g}")


def curve_system(config: Mapping[str, Any], base: str, minutes: float, seed: int) -> str:
    """The system of a learning-curve point: the base system itself for all of target_train with
    the config's seed (no need to train it twice), else ``<base>_lc<minutes>m_s<seed>``."""
    if minutes >= config["corpus"]["target"]["splits"]["train"]["minutes"] and seed == config["seed"]:
        return base
    return f"{base}_lc{minutes:g}m_s{seed}"


def learning_curve_points(config: Mapping[str, Any]) -> Dict[str, CurvePoint]:
    """Every point of the ``learning_curve`` section (each base system, size and seed) by its
    system's name."""
    section = config["learning_curve"]
    return {curve_system(config, base, minutes, seed): CurvePoint(base, minutes, seed)
            for base in section["systems"] for minutes in section["minutes"] for seed in section["seeds"]}


def learning_curve_systems(config: Mapping[str, Any]) -> Dict[str, CurvePoint]:
    """The learning-curve points that are systems of their own (to train)."""
    return {name: point for name, point in learning_curve_points(config).items() if name != point.base}


def system_seed(config: Mapping[str, Any], system: str) -> int:
    """The seed a system trains with: a learning-curve point's own, else the config's."""
    point = learning_curve_systems(config).get(system)
    return point.seed if point else config["seed"]


def scratch_systems(config: Mapping[str, Any]) -> List[str]:
    """Every system the scratch rule trains (no pretrained start)."""
    return [SCRATCH, *(name for name, p in learning_curve_systems(config).items() if p.base == SCRATCH)]


def trainable_systems(config: Mapping[str, Any]) -> List[str]:
    """Every system some rule of this config trains (reported ones, sweeps, curve points)."""
    return list(dict.fromkeys([BASELINE, *scratch_systems(config), *fine_tuned_systems(config)]))


def front_end(system: str) -> str:
    """The feature front end a system trains and decodes on."""
    return "kaldi_ko" if system == KALDI_KO else "fbank"


def pretrained_start(system: str) -> str:
    """The checkpoint a fine-tuned system starts from."""
    return f"{KALDI_KO_IMPORT}/model.pt" if system == KALDI_KO else f"{system_dir(BASELINE)}/model.pt"


def training_sections(config: Mapping[str, Any], system: str) -> Dict[str, Any]:
    """The validated config sections ``system``'s training stage is given (module docstring)."""
    point = learning_curve_systems(config).get(system)
    if point is not None:
        return _curve_sections(config, point)
    if system == BASELINE:
        return {name: config[name] for name in ("model", "loss", "pretrain")}
    if system == SCRATCH:
        return {"model": config["model"], "loss": config["loss"], "scratch": config["scratch"],
                "finetune": {**config["finetune"], **config["scratch"]}}
    variants = fine_tuning_variants(config)
    if system in variants:
        sections = _merged(config, variants[system])
    elif system == KALDI_KO:
        sections = _merged(config, config["kaldi_ko"]["overrides"])
        if sections["finetune"]["speed_perturb"] or extra_inputs(sections["finetune"]):
            raise StageError(f"{KALDI_KO}: speed_perturb, noise_mix and regularizers with extra inputs are not "
                             "available for the imported model's features (MFCC + i-vectors); turn them off in "
                             "kaldi_ko.overrides.finetune")
    elif system in adapt_variants(config):
        sections = _merged(config, {"finetune": adapt_variants(config)[system]}, base="adapt")
        if sections["finetune"]["adapter"]["type"] == NO_ADAPTER["type"]:
            raise StageError(f"{system}: adapt.adapter.type is none: name one of {', '.join(ADAPTERS.names())} "
                             "(or make it a finetune_variants entry)")
    else:
        raise StageError(f"'{system}' is none of the systems of this config: {', '.join(system_names(config))}")
    for name, value in sections.items():
        validate_config(value, section=name, where=f"system {system}")
    if system != SCRATCH and system != BASELINE:
        _check_registered(sections["finetune"], system)
    return sections


def _curve_sections(config: Mapping[str, Any], point: CurvePoint) -> Dict[str, Any]:
    """The base system's sections, with as many epochs as bring the subset's training to the
    base's number of steps (at most ``learning_curve.max_epochs``; early stopping on target_dev
    as the base has it)."""
    sections = training_sections(config, point.base)
    finetune = sections["finetune"]
    if finetune["speed_perturb"] or finetune.get("noise_mix", {}).get("prob", 0) > 0:
        raise StageError(f"learning_curve.systems: {point.base} trains on augmented data; the curve's subsets are "
                         "of target_train alone: pick systems without speed_perturb or noise_mix")
    full = config["corpus"]["target"]["splits"]["train"]["minutes"]
    if point.minutes > full:
        raise StageError(f"learning_curve.minutes: {point.minutes:g} is more than target_train's {full:g} minutes")
    epochs = min(math.ceil(finetune["epochs"] * full / point.minutes), config["learning_curve"]["max_epochs"])
    return {**sections, "finetune": {**finetune, "epochs": max(epochs, finetune["epochs"])}}


def _check_registered(finetune: Mapping[str, Any], system: str) -> None:
    """Names the schema leaves to the registries: an unknown one fails before any job runs."""
    try:
        REGULARIZERS.get(finetune["regularizer"]["type"])
        if finetune["adapter"]["type"] != NO_ADAPTER["type"]:
            ADAPTERS.get(finetune["adapter"]["type"])
    except StageError as e:
        raise StageError(f"system {system}: {e}") from None


def check_config(config: Mapping[str, Any]) -> None:
    """Every system of the config resolves to valid sections (before any job runs)."""
    unknown = sorted(set(config["alpha_sweep"]) - set(REGULARIZERS.names()))
    if unknown:
        raise StageError(f"alpha_sweep: {', '.join(unknown)} is no regularizer; known: {', '.join(REGULARIZERS.names())}")
    standard = {SCRATCH, *finetune_variants(config), *adapt_variants(config)}
    unknown = [base for base in config["learning_curve"]["systems"] if base not in standard]
    if unknown:
        raise StageError(f"learning_curve.systems: {', '.join(unknown)} is no system of this config; "
                         f"pick from {', '.join(sorted(standard))}")
    if PLAIN not in finetune_variants(config):
        raise StageError(f"finetune_variants must keep {PLAIN} (plain fine-tuning: what the reports compare against)")
    try:  # the model section's shape rules (e.g. full_rate_layers < num_layers), before any job runs
        build_model({**config["model"], "feature_dim": 1, "num_tokens": 2})
    except ValueError as e:
        raise StageError(f"model: {e}") from None
    for system in [BASELINE, *scratch_systems(config), *fine_tuned_systems(config)]:
        training_sections(config, system)


def training_cuts(config: Mapping[str, Any], system: str) -> str:
    """The cuts ``system`` trains on (source_train for pretraining, else target_train, or its
    speed-perturbed copy where the training section asks for it)."""
    if system == BASELINE:
        return feature_cuts("source_train")
    point = learning_curve_systems(config).get(system)
    if point is not None:
        return feature_cuts(curve_subset(point.minutes))
    section = training_sections(config, system)["finetune"]
    return feature_cuts(training_subset(section, "target_train"), front_end(system))


def training_inputs(config: Mapping[str, Any], system: str) -> Dict[str, str]:
    """What ``system``'s training rule reads: ``cuts``, ``lang``, for a target-domain system
    ``valid``, for a fine-tuned one ``init`` and the extra inputs its method declares."""
    if system == BASELINE:
        return {"cuts": training_cuts(config, system), "lang": lang_dir(config, "source")}
    inputs = {"cuts": training_cuts(config, system), "valid": feature_cuts(DEV_SET, front_end(system)),
              "lang": lang_dir(config, "target")}
    if system in scratch_systems(config):
        return inputs
    inputs["init"] = pretrained_start(system)
    for spec in extra_inputs(training_sections(config, system)["finetune"]):
        inputs[spec.name] = (feature_cuts(spec.what, front_end(system)) if spec.kind == "cuts"
                             else lang_dir(config, spec.what))
    return inputs


# --- TTS: data/tts/ and exp/tts/ ----------------------------------------------------------------

TTS_SYSTEMS = ("pretrained", "finetuned", "scratch")  # pretrained: the source voices, never the target
TTS_VOICE_DIR = "data/tts/voice"                      # the target voice's corpus (tts_corpus)
TTS_SUBSETS = ("source_train", "voice_train", "voice_test")


def tts_cuts(subset: str) -> str:
    """A TTS subset's cuts with mels and phones, e.g. ``data/tts/fbank/voice_train_cuts.jsonl.gz``."""
    return f"data/tts/fbank/{subset}_cuts.jsonl.gz"


def tts_dir(system: str) -> str:
    return f"exp/tts/{system}"
