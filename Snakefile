# speechtune: the chain of stages (DESIGN.md). Rules only wire; each calls one stage CLI,
# `python -m stages.<rule>`, with its config section as params, so changing a key reruns the
# rule that reads it and what follows, nothing upstream.
#
#   snakemake --cores 8 exp/finetuned/wer.txt    # the whole chain, every system, exp/report.*
#   snakemake --cores 8 fbank                    # corpus -> manifests -> features only
#   snakemake --cores 8 --configfile config/tiny.yaml exp/finetuned/wer.txt   # seconds of audio
import json
import os
import sys

sys.path.insert(0, workflow.basedir)
from stages.config import deep_merge, validate_config  # noqa: E402

configfile: os.path.join(workflow.basedir, "config", "config.yaml")
validate_config(config, where="Snakemake config")

PYTHON = sys.executable  # the venv that runs Snakemake runs every stage
SPLITS = {domain: sorted(config["corpus"][domain]["splits"]) for domain in ("source", "target")}
SUBSETS = [f"{domain}_{split}" for domain, splits in SPLITS.items() for split in splits]


# One lang dir per domain: data/lang_phone_{source,target} (CMUdict phones: one inventory),
# or data/lang_bpe_500_source (trains the BPE model: the pretrained model's tokens) and
# data/lang_bpe_500_target (reuses it); each with its domain's words and LM.
BPE = config["lang"]["unit"] == "bpe"
LANG = f"data/lang_bpe_{config['lang']['bpe']['vocab_size']}" if BPE else "data/lang_phone"
VARIANTS = list(config["finetune_variants"])


def variant_sections(variant):
    """The loss and finetune sections of a fine-tuning variant, overrides merged in."""
    overrides = config["finetune_variants"][variant]
    merged = {name: deep_merge(config[name], overrides.get(name, {})) for name in ("loss", "finetune")}
    for name, value in merged.items():
        validate_config(value, section=name, where=f"finetune_variants.{variant}")
    return merged


for variant in VARIANTS:
    variant_sections(variant)  # a bad override fails here, before any job runs

SYSTEMS = ["pretrained", *VARIANTS, "scratch"]
TESTSETS = ["target_test", "source_test"]
# CTC greedy search joins BPE pieces into words; phone units decode with HLG only.
METHODS = ["hlg", "greedy"] if BPE else ["hlg"]


def section(*keys):
    """A config section as JSON for a stage's --config-json (and for Snakemake's params check)."""
    value = config
    for key in keys:
        value = value[key]
    return json.dumps(value, sort_keys=True)


def sections(*names):
    """Several top-level sections as one JSON object, for stages that read more than one."""
    return json.dumps({name: config[name] for name in names}, sort_keys=True)


wildcard_constraints:
    domain="source|target",
    split="train|dev|test",
    system="|".join(SYSTEMS),
    variant="|".join(VARIANTS),
    testset="|".join(TESTSETS),
    method="hlg|greedy",


rule report:
    """Every system's scores side by side: exp/report.{json,md} and a bar chart."""
    input:
        expand("exp/{system}/decode/{testset}/{method}/wer.json", system=SYSTEMS, testset=TESTSETS, method=METHODS),
        expand("exp/{system}/provenance.json", system=SYSTEMS),
    output:
        json="exp/report.json",
        md="exp/report.md",
        png="exp/report_wer.png",
    log:
        "logs/report/report.log",
    shell:
        "{PYTHON} -m stages.report exp --systems {SYSTEMS} --testsets {TESTSETS} > {log} 2>&1"


rule wer:
    """exp/<system>/wer.txt: the target test set's WER, once every system is scored and
    reported, so the main target builds the whole comparison."""
    input:
        wer="exp/{system}/decode/target_test/hlg/wer.txt",
        report="exp/report.json",
    output:
        "exp/{system}/wer.txt",
    shell:
        "cp {input.wer} {output}"


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


rule lang:
    """Tokens, lexicon, L, the domain's n-gram LM and HLG (an icefall-compatible lang dir)."""
    input:
        cuts="data/manifests/{domain}_train_cuts.jsonl.gz",
        # The target domain spells its words with the pretrained model's BPE pieces.
        source_lang=lambda w: [f"{LANG}_source"] if BPE and w.domain == "target" else [],
    output:
        directory(f"{LANG}_{{domain}}"),
    params:
        cfg=section("lang"),
        seed=config["seed"],
        bpe_model=lambda w, input: f"--bpe-model {input.source_lang[0]}/bpe.model" if input.source_lang else "",
    log:
        "logs/lang/{domain}.log",
    benchmark:
        "logs/lang/{domain}.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.lang {input.cuts} --lm-text {wildcards.domain}={input.cuts} {params.bpe_model} "
        "{output} --config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule pretrain:
    """The source-domain model from random initialization: the pretrained start."""
    input:
        cuts="data/fbank/source_train_cuts.jsonl.gz",
        lang=f"{LANG}_source",
    output:
        model="exp/pretrained/model.pt",
        provenance="exp/pretrained/provenance.json",
    params:
        cfg=sections("model", "loss", "pretrain"),
        seed=config["seed"],
    log:
        "logs/pretrain/pretrain.log",
    benchmark:
        "logs/pretrain/pretrain.benchmark.tsv"
    threads: 2
    shell:
        "{PYTHON} -m stages.pretrain {input.cuts} {input.lang} exp/pretrained "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule finetune:
    """Fine-tuning of the pretrained model on the target domain, one system per variant."""
    input:
        init="exp/pretrained/model.pt",
        cuts="data/fbank/target_train_cuts.jsonl.gz",
        valid="data/fbank/target_dev_cuts.jsonl.gz",
        lang=f"{LANG}_target",
    output:
        model="exp/{variant}/model.pt",
        provenance="exp/{variant}/provenance.json",
    params:
        cfg=lambda w: json.dumps(variant_sections(w.variant), sort_keys=True),
        seed=config["seed"],
    log:
        "logs/finetune/{variant}.log",
    benchmark:
        "logs/finetune/{variant}.benchmark.tsv"
    threads: 2
    shell:
        "{PYTHON} -m stages.finetune {input.init} {input.cuts} {input.valid} {input.lang} exp/{wildcards.variant} "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule scratch:
    """The target data and finetune's step budget, from random initialization."""
    input:
        cuts="data/fbank/target_train_cuts.jsonl.gz",
        valid="data/fbank/target_dev_cuts.jsonl.gz",
        lang=f"{LANG}_target",
    output:
        model="exp/scratch/model.pt",
        provenance="exp/scratch/provenance.json",
    params:
        # finetune's learning-rate keys never reach scratch (its own replace them), so
        # changing them reruns finetune only.
        cfg=json.dumps({"model": config["model"], "loss": config["loss"], "scratch": config["scratch"],
                        "finetune": {**config["finetune"], **config["scratch"]}}, sort_keys=True),
        seed=config["seed"],
    log:
        "logs/scratch/scratch.log",
    benchmark:
        "logs/scratch/scratch.benchmark.tsv"
    threads: 2
    shell:
        "{PYTHON} -m stages.scratch {input.cuts} {input.valid} {input.lang} exp/scratch "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule decode:
    """HLG 1-best (and CTC greedy) recognitions of one test set by one system."""
    input:
        model="exp/{system}/model.pt",
        lang=lambda w: f"{LANG}_{w.testset.split('_')[0]}",
        cuts="data/fbank/{testset}_cuts.jsonl.gz",
    output:
        expand("exp/{{system}}/decode/{{testset}}/{method}/{name}",
               method=METHODS, name=["hyp.txt", "ref.txt", "utt2spk", "rtf.json"]),
    params:
        cfg=section("decode"),
        seed=config["seed"],
        lm=lambda w: w.testset.split("_")[0],
    log:
        "logs/decode/{system}_{testset}.log",
    benchmark:
        "logs/decode/{system}_{testset}.benchmark.tsv"
    threads: 2
    shell:
        "{PYTHON} -m stages.decode {input.model} {input.lang} {params.lm} {input.cuts} "
        "exp/{wildcards.system}/decode/{wildcards.testset} "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule score:
    """Kaldi's %WER line, per-utterance alignments and per-speaker WER."""
    input:
        "exp/{system}/decode/{testset}/{method}/hyp.txt",
    output:
        "exp/{system}/decode/{testset}/{method}/wer.txt",
        "exp/{system}/decode/{testset}/{method}/wer.json",
        "exp/{system}/decode/{testset}/{method}/per_utt.txt",
        "exp/{system}/decode/{testset}/{method}/per_spk.txt",
    log:
        "logs/score/{system}_{testset}_{method}.log",
    shell:
        "{PYTHON} -m stages.score exp/{wildcards.system}/decode/{wildcards.testset}/{wildcards.method} > {log} 2>&1"
