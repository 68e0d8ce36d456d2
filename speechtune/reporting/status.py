"""``speechtune status``: which systems are built, stale or missing, and their WERs so far.

Reads ``exp/`` and the config, never runs anything. The systems are the Snakefile's:
``pretrained``, one per key of ``finetune_variants`` and of ``adapt_variants``, ``scratch``,
and those of the alpha sweep that exist in ``exp/``. Each is

- ``missing``: no ``exp/<system>/model.pt`` with its ``provenance.json`` (training writes both
  last, so a killed run counts as missing);
- ``stale``: built, but from another config or seed than the current one would give (the
  provenance's resolved ``config`` against the sections the Snakefile passes that system), or
  older than a file it was made from (e.g. ``exp/pretrained/model.pt`` for a fine-tuned one); or
  a test set's scores are out of date (decoded with another ``decode`` config, before the model,
  or scored before the decode);
- ``built`` otherwise,

with the HLG %WER of each test set where ``wer.json`` exists. Usage::

    speechtune status                                   # config/config.yaml, exp/
    speechtune status --config config/tiny.yaml --json  # a preset layered on the default
    python -m speechtune status --exp-dir /elsewhere/exp

    system         state    target_test  source_test  why
    pretrained     built          96.03         7.24
    finetuned      stale          23.18        93.27  config finetune.lr: 0.001 -> 0.0005
    scratch        missing            -            -  no exp/scratch/model.pt

Paths that a provenance's recorded command names are taken relative to the parent of the exp
dir (the directory the pipeline ran in); lang directories are not compared by time.
"""
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from speechtune.errors import StageError
from speechtune.experiment import decode_dir, sweep_variants, system_dir, system_names, testsets, training_sections


@dataclass
class SystemStatus:
    """One system's state (``built``, ``stale`` or ``missing``), why, and its %WER per test set."""

    system: str
    state: str
    reasons: List[str] = field(default_factory=list)
    wer: Dict[str, Optional[float]] = field(default_factory=dict)


def config_changes(recorded: Mapping[str, Any], expected: Mapping[str, Any], prefix: str = "") -> List[str]:
    """Dotted keys whose values differ, ``"finetune.lr: 0.001 -> 0.0005"``, recursing into mappings."""
    changes = []
    for key in sorted(set(recorded) | set(expected)):
        name = f"{prefix}{key}"
        if key not in expected:
            changes.append(f"{name}: {json.dumps(recorded[key])} -> (unset)")
        elif key not in recorded:
            changes.append(f"{name}: (unset) -> {json.dumps(expected[key])}")
        elif isinstance(recorded[key], Mapping) and isinstance(expected[key], Mapping):
            changes += config_changes(recorded[key], expected[key], f"{name}.")
        elif recorded[key] != expected[key]:
            changes.append(f"{name}: {json.dumps(recorded[key])} -> {json.dumps(expected[key])}")
    return changes


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # an argument that is no path, e.g. a long --config-json
        return False


def newer_inputs(provenance: Mapping[str, Any], output: Path, root: Path) -> List[str]:
    """``"<input> is newer than <output>"`` for each file of the provenance's recorded command
    (its arguments that name files under ``root``) modified after ``output``."""
    made = output.stat().st_mtime
    arguments = provenance.get("command", [])[1:]  # [0] is the stage's script
    inputs = [root / arg for arg in arguments if not arg.startswith("-") and _is_file(root / arg)]
    return [f"{path} is newer than {output}" for path in inputs
            if path.resolve() != output.resolve() and path.stat().st_mtime > made]


def _read_json(path: Path) -> Dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise StageError(f"{path} is not valid JSON ({e}): remove it and rerun the stage that writes it") from None


def _decode_reasons(method_dir: Path, config: Mapping[str, Any], root: Path) -> List[str]:
    """Why the scores in ``method_dir`` (one test set's HLG decode) are out of date (empty when
    they are not)."""
    hyp, wer = method_dir / "hyp.txt", method_dir / "wer.json"
    provenance_path = method_dir.parent / "provenance.json"
    if not provenance_path.is_file() or not hyp.is_file():
        return [f"{method_dir.parent} has scores but no provenance.json or hyp.txt: decode again"]
    provenance = _read_json(provenance_path)
    changes = config_changes(provenance.get("config", {}), config["decode"])
    reasons = [f"{method_dir.parent.name} decode config {c}" for c in changes]
    reasons += newer_inputs(provenance, hyp, root)
    if hyp.stat().st_mtime > wer.stat().st_mtime:
        reasons.append(f"{hyp} is newer than {wer}: score again")
    return reasons


def system_status(exp_dir: Path, config: Mapping[str, Any], system: str,
                  testset_names: Optional[Sequence[str]] = None) -> SystemStatus:
    """The state of ``exp_dir/system`` under ``config``::

        >>> system_status(Path("exp"), load_config([]), "finetuned")
        SystemStatus(system='finetuned', state='built', reasons=[], wer={'target_test': 23.1788, ...})
    """
    root = exp_dir.parent
    wer_paths = {t: Path(decode_dir(system, t, exp_dir=exp_dir)) / "wer.json"
                 for t in testset_names or testsets(config)}
    wer = {t: float(_read_json(p)["wer"]) if p.is_file() else None for t, p in wer_paths.items()}
    model = Path(system_dir(system, exp_dir)) / "model.pt"
    provenance_path = model.with_name("provenance.json")
    if not model.is_file():
        return SystemStatus(system, "missing", [f"no {model}"], wer)
    if not provenance_path.is_file():
        return SystemStatus(system, "missing", [f"{model} without {provenance_path}: training did not finish"], wer)
    provenance = _read_json(provenance_path)
    reasons = [f"config {c}" for c in config_changes(provenance.get("config", {}), training_sections(config, system))]
    if provenance.get("seed") != config["seed"]:
        reasons.append(f"seed: {provenance.get('seed')} -> {config['seed']}")
    reasons += newer_inputs(provenance, model, root)
    for path in wer_paths.values():
        if path.is_file():
            reasons += _decode_reasons(path.parent, config, root)
    return SystemStatus(system, "stale" if reasons else "built", reasons, wer)


def _why(reasons: Sequence[str], shown: int = 2) -> str:
    more = f"; and {len(reasons) - shown} more (--json lists them)" if len(reasons) > shown else ""
    return "; ".join(reasons[:shown]) + more


def format_table(statuses: Sequence[SystemStatus], testset_names: Sequence[str]) -> str:
    """A plain aligned table, one line per system (its first reasons when not built)."""
    rows = [["system", "state", *testset_names, "why"]]
    rows += [[s.system, s.state, *("-" if s.wer[t] is None else f"{s.wer[t]:.2f}" for t in testset_names),
              _why(s.reasons)] for s in statuses]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1])]
        cells += [cell.rjust(width) for cell, width in zip(row[2:-1], widths[2:])]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
    return "\n".join(lines)


def status(exp_dir: Path, config: Mapping[str, Any],
           testset_names: Optional[Sequence[str]] = None) -> List[SystemStatus]:
    """Every system's status: the main target's, then the alpha sweep's that exist in ``exp_dir``
    (the sweep is built by its own target)."""
    systems = system_names(config) + [s for s in sweep_variants(config) if Path(system_dir(s, exp_dir)).is_dir()]
    return [system_status(exp_dir, config, system, testset_names) for system in systems]
