"""Files a training method needs beyond its training and validation cuts, declared by the
method itself so the Snakefile and the stage CLI take them from the declaration instead of
testing the method's name::

    REHEARSAL_SOURCE = ExtraInput("source_cuts", "cuts:source_train", "source-domain training cuts")
    REHEARSAL_SOURCE.option                  # "--source-cuts" (the stage's option)
    load_extra_input(REHEARSAL_SOURCE, Path("data/fbank/source_train_cuts.jsonl.gz"))  # a CutSet

``data`` names what the pipeline provides in its own terms, ``cuts:<subset>`` (that subset's
cuts with features) or ``lang:<domain>`` (that domain's lang dir); the experiment layout
(:mod:`speechtune.experiment`) turns it into a path.
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lhotse import CutSet

from speechtune.data.cuts import cuts_fingerprint, load_cuts
from speechtune.errors import StageError
from speechtune.provenance import directory_fingerprint

KINDS = ("cuts", "lang")


@dataclass(frozen=True)
class ExtraInput:
    """One declared input: its argument ``name``, the ``data`` it is and a ``help`` line."""

    name: str
    data: str
    help: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"ExtraInput {self.name}: data {self.data!r} must start with one of {KINDS}")

    @property
    def kind(self) -> str:
        return self.data.split(":", 1)[0]

    @property
    def what(self) -> str:
        """The subset or domain it names: ``source_train`` of ``cuts:source_train``."""
        return self.data.split(":", 1)[1]

    @property
    def option(self) -> str:
        return "--" + self.name.replace("_", "-")


def load_extra_input(spec: ExtraInput, path: Path) -> Any:
    """The loaded input: a CutSet with features for ``cuts``, the checked directory for ``lang``."""
    if spec.kind == "cuts":
        return load_cuts(path)
    if not (Path(path) / "tokens.txt").is_file():
        raise StageError(f"{spec.option} {path}: not a lang dir (no tokens.txt); run the lang stage first")
    return Path(path)


def input_fingerprint(value: Any) -> str:
    """A loaded input's fingerprint, for the resume key: cuts by their cuts and feature files,
    a lang dir by its files."""
    return cuts_fingerprint(value) if isinstance(value, CutSet) else directory_fingerprint(Path(value))
