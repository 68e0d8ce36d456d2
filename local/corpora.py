"""Corpus recipes: what the corpus stage runs for a domain, chosen by ``corpus.<domain>.recipe``.

    embedded   synthesized locally (local.embedded_corpus): WordNet sentences or smart-speaker
               commands read by many kinds of voice; the default of both domains
    asterisk   real recorded speech (local.asterisk): Debian's Asterisk prompts, one speaker,
               8 kHz upsampled to 16 kHz; the target of config/telephony.yaml

A recipe writes one Kaldi data dir per split of ``corpus.<domain>.splits`` under the stage's
output directory (``data/corpus/<domain>/<split>/``), which ``prepare`` reads. A new corpus is a
module in local/ and one registered function here::

    @RECIPES.register("mycorpus")
    def mycorpus(domain, config, out_dir, jobs, run): ...
"""
from pathlib import Path
from typing import Any, Callable, Mapping

from local.asterisk import write_asterisk_corpus
from local.embedded_corpus import write_corpus
from speechtune.errors import ConfigError
from speechtune.provenance import StageRun
from speechtune.registry import Registry

Recipe = Callable[[str, Mapping[str, Any], Path, int, StageRun], None]
RECIPES: Registry[Recipe] = Registry("corpus recipe")
RECIPES.register("embedded")(write_corpus)


@RECIPES.register("asterisk")
def asterisk(domain: str, config: Mapping[str, Any], out_dir: Path, jobs: int, run: StageRun) -> None:
    """The Asterisk prompts split by ``corpus.<domain>.asterisk.splits`` (fractions of the
    prompts), which must name the domain's splits."""
    fractions = config["asterisk"]["splits"]
    wanted = sorted(split for split, value in config["splits"].items() if value is not None)
    if sorted(fractions) != wanted:
        raise ConfigError(f"corpus.{domain}.asterisk.splits names {sorted(fractions)}, but corpus.{domain}.splits "
                          f"asks for {wanted}: name the same splits")
    write_asterisk_corpus(out_dir, config["asterisk"], run)


def write_domain(domain: str, config: Mapping[str, Any], out_dir: Path, jobs: int, run: StageRun) -> None:
    """The corpus stage: ``config`` (``corpus.<domain>``)'s recipe writes ``out_dir``."""
    RECIPES.get(config["recipe"])(domain, config, out_dir, jobs, run)
