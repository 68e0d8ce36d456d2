"""Corpus recipes: what the corpus stage runs for a domain, chosen by ``corpus.<domain>.recipe``.

    embedded   synthesized locally (local.embedded_corpus): WordNet sentences or smart-speaker
               commands read by many kinds of voice; the default of both domains
    asterisk   real recorded speech (local.asterisk): Debian's Asterisk prompts, one speaker,
               8 kHz upsampled to 16 kHz; the target of config/telephony.yaml
    librispeech       LibriSpeech parts (local.librispeech, lhotse's recipe) in a local
                      ``corpus_dir``; config/librispeech.yaml
    mini_librispeech  Mini LibriSpeech (train-clean-5, dev-clean-2); config/mini_librispeech.yaml
    yesno             OpenSLR's yesno (local.yesno, lhotse's recipe), 8 kHz resampled to 16 kHz;
                      config/yesno.yaml
    lhotse_manifests  any directory of lhotse manifests (local.lhotse_manifests):
                      ``<prefix>_{recordings,supervisions}_<part>.jsonl.gz``

The lhotse-based recipes read ``corpus.<domain>.corpus_dir``, give each split the corpus parts
``corpus.<domain>.parts`` names (``minutes`` caps a split) and, with ``download: true``, fetch
what corpus_dir lacks with lhotse's own download function (off by default).

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
from local.lhotse_manifests import write_manifest_corpus
from local.librispeech import write_librispeech, write_mini_librispeech
from local.yesno import write_yesno
from speechtune.errors import ConfigError
from speechtune.provenance import StageRun
from speechtune.registry import Registry

Recipe = Callable[[str, Mapping[str, Any], Path, int, StageRun], None]
RECIPES: Registry[Recipe] = Registry("corpus recipe")
RECIPES.register("embedded")(write_corpus)
RECIPES.register("librispeech")(write_librispeech)
RECIPES.register("mini_librispeech")(write_mini_librispeech)
RECIPES.register("yesno")(write_yesno)
RECIPES.register("lhotse_manifests")(write_manifest_corpus)


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
