# speechtune: the chain of stages (DESIGN.md). Rules only wire; each calls one stage CLI,
# `python -m stages.<rule>`, with its config section as params, so changing a key reruns the
# rule that reads it and what follows, nothing upstream.
#
#   snakemake --cores 8 fbank                              # corpus -> manifests -> features
#   snakemake --cores 8 --configfile config/tiny.yaml fbank  # the seconds-of-audio preset
import json
import os
import sys

sys.path.insert(0, workflow.basedir)
from stages.config import validate_config  # noqa: E402

configfile: os.path.join(workflow.basedir, "config", "config.yaml")
validate_config(config, where="Snakemake config")

PYTHON = sys.executable  # the venv that runs Snakemake runs every stage
SPLITS = {domain: sorted(config["corpus"][domain]["splits"]) for domain in ("source", "target")}
SUBSETS = [f"{domain}_{split}" for domain, splits in SPLITS.items() for split in splits]


def section(*keys):
    """A config section as JSON for a stage's --config-json (and for Snakemake's params check)."""
    value = config
    for key in keys:
        value = value[key]
    return json.dumps(value, sort_keys=True)


wildcard_constraints:
    domain="source|target",
    split="train|dev|test",


rule fbank:
    """Everything up to features for every subset: the deepest target until the ASR chain lands."""
    input:
        expand("data/fbank/{subset}_cuts.jsonl.gz", subset=SUBSETS),


rule corpus:
    """Synthesize the embedded default corpus of one domain as Kaldi data dirs."""
    output:
        directory("data/corpus/{domain}"),
    params:
        cfg=lambda w: section("corpus", w.domain),
        seed=config["seed"],
    log:
        "logs/corpus/{domain}.log",
    benchmark:
        "logs/corpus/{domain}.benchmark.tsv"
    threads: 8
    shell:
        "{PYTHON} -m stages.corpus --domain {wildcards.domain} --jobs {threads} "
        "--config-json {params.cfg:q} --seed {params.seed} {output} > {log} 2>&1"


rule prepare:
    """Import one split's Kaldi data dir as validated lhotse manifests."""
    input:
        "data/corpus/{domain}",
    output:
        recordings="data/manifests/{domain}_{split}_recordings.jsonl.gz",
        supervisions="data/manifests/{domain}_{split}_supervisions.jsonl.gz",
        cuts="data/manifests/{domain}_{split}_cuts.jsonl.gz",
        skipped="data/manifests/{domain}_{split}_skipped.txt",
        provenance="data/manifests/{domain}_{split}.provenance.json",
    params:
        cfg=section("prepare"),
        seed=config["seed"],
    log:
        "logs/prepare/{domain}_{split}.log",
    benchmark:
        "logs/prepare/{domain}_{split}.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.prepare import {input}/{wildcards.split} data/manifests "
        "--subset {wildcards.domain}_{wildcards.split} "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule features:
    """Log-mel filterbank features of one subset, stored with lilcom."""
    input:
        "data/manifests/{domain}_{split}_cuts.jsonl.gz",
    output:
        cuts="data/fbank/{domain}_{split}_cuts.jsonl.gz",
        storage="data/fbank/{domain}_{split}_feats.lca",
        provenance="data/fbank/{domain}_{split}.provenance.json",
    params:
        cfg=section("features"),
        seed=config["seed"],
    log:
        "logs/features/{domain}_{split}.log",
    benchmark:
        "logs/features/{domain}_{split}.benchmark.tsv"
    threads: 2
    shell:
        "{PYTHON} -m stages.features {input} {output.cuts} "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"
