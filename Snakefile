# speechtune: the chain of stages (DESIGN.md). Rules only wire; each calls one stage CLI,
# `python -m stages.<rule>`, with its config section as params, so changing a key reruns the
# rule that reads it and what follows, nothing upstream.
#
#   snakemake --cores 8 exp/finetuned/wer.txt    # the whole chain, every system, exp/report.*
#   snakemake --cores 8 alpha_sweep              # + fine-tuning at each alpha: exp/alpha_sweep.*
#   snakemake --cores 8 fbank                    # corpus -> manifests -> features only
#   snakemake --cores 8 --configfile config/tiny.yaml exp/finetuned/wer.txt   # seconds of audio
#   snakemake --cores 8 exp/finetuned/wer.txt --configfile config/kaldi_ko.yaml   # + the imported
#                                  # Kaldi model fine-tuned (needs `make setup KALDI_KO=1`)
import json
import os
import sys

sys.path.insert(0, workflow.basedir)
from stages.config import validate_config  # noqa: E402
from stages.systems import KALDI_KO, fine_tuning_variants, sweep_variants, system_names, training_sections  # noqa: E402

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
SWEEP = sweep_variants(config)
VARIANTS = fine_tuning_variants(config)  # name -> overrides of loss and finetune
ADAPTED = list(config["adapt_variants"])


for system in [*VARIANTS, *ADAPTED, KALDI_KO]:
    training_sections(config, system)  # a bad override fails here, before any job runs

SYSTEMS = system_names(config)
TESTSETS = ["target_test", "source_test"]
# CTC greedy search joins BPE pieces into words; phone units decode with HLG only.
METHODS = ["hlg", "greedy"] if BPE else ["hlg"]


def target_train(train_params):
    """The target training cuts: with copies at speeds 0.9 and 1.1 where speed_perturb asks."""
    return "data/fbank/target_train_sp_cuts.jsonl.gz" if train_params["speed_perturb"] else "data/fbank/target_train_cuts.jsonl.gz"


def test_cuts(system, testset):
    """The features a system decodes: the imported Kaldi model's front end for kaldi_ko_finetuned."""
    return f"data/kaldi_ko/feats/{testset}_cuts.jsonl.gz" if system == KALDI_KO else f"data/fbank/{testset}_cuts.jsonl.gz"


def rehearsal_inputs(train_params):
    """Rehearsal's source batches come from source_train, its graphs from the source lang dir."""
    if train_params["regularizer"]["type"] != "rehearsal":
        return {}
    return {"source_cuts": "data/fbank/source_train_cuts.jsonl.gz", "source_lang": f"{LANG}_source"}


def augmentation_inputs(train_params):
    """Rehearsal's source data and noise mixing's noise cuts, where the method uses them."""
    inputs = rehearsal_inputs(train_params)
    if train_params.get("noise_mix", {}).get("prob", 0) > 0:
        inputs["noise_cuts"] = "data/fbank/noise_cuts.jsonl.gz"
    return inputs


def extra_arguments(wildcards, input):
    """The stage options for augmentation_inputs' files."""
    names = {"source_cuts": "--source-cuts", "source_lang": "--source-lang", "noise_cuts": "--noise-cuts"}
    return " ".join(f"{option} {input[name]}" for name, option in names.items() if name in input.keys())


def section(*keys):
    """A config section as JSON for a stage's --config-json (and for Snakemake's params check)."""
    value = config
    for key in keys:
        value = value[key]
    return json.dumps(value, sort_keys=True)


wildcard_constraints:
    domain="source|target",
    split="train|dev|test",
    system="|".join(["pretrained", "scratch", KALDI_KO, *VARIANTS, *ADAPTED]).replace(".", r"\."),
    variant="|".join(VARIANTS).replace(".", r"\."),
    adapted="|".join(ADAPTED),
    testset="|".join(TESTSETS),
    method="hlg|greedy",


def report_inputs(systems):
    """Scores, hypotheses (for the bootstrap), training provenance and test cuts (for audio)."""
    return {
        "scores": expand("exp/{system}/decode/{testset}/{method}/wer.json", system=systems, testset=TESTSETS, method=METHODS),
        "provenance": expand("exp/{system}/provenance.json", system=systems),
        "cuts": expand("data/fbank/{testset}_cuts.jsonl.gz", testset=TESTSETS),
    }


rule report:
    """Every system's scores side by side: exp/report.{json,md,html} and a bar chart."""
    input:
        **report_inputs(SYSTEMS),
    output:
        json="exp/report.json",
        md="exp/report.md",
        png=report("exp/report_wer.png", caption="report/wer.rst", category="Results"),
        html=report("exp/report.html", caption="report/html.rst", category="Results"),
    log:
        "logs/report/report.log",
    shell:
        "({PYTHON} -m stages.report exp --systems {SYSTEMS} --testsets {TESTSETS} && "
        "{PYTHON} -m stages.report_html exp --systems {SYSTEMS} --testsets {TESTSETS}) > {log} 2>&1"


rule alpha_sweep:
    """The default comparison plus fine-tuning at each alpha of alpha_sweep: the same report,
    exp/alpha_sweep.{json,md,html}, with WER against alpha plotted (exp/alpha_sweep_alpha.png)."""
    input:
        **report_inputs([*SYSTEMS, *SWEEP]),
    output:
        json="exp/alpha_sweep.json",
        md="exp/alpha_sweep.md",
        png="exp/alpha_sweep_wer.png",
        alpha=report("exp/alpha_sweep_alpha.png", caption="report/alpha.rst", category="Alpha sweep"),
        html="exp/alpha_sweep.html",
    params:
        systems=[*SYSTEMS, *SWEEP],
    log:
        "logs/report/alpha_sweep.log",
    shell:
        "({PYTHON} -m stages.report exp --name alpha_sweep --systems {params.systems} --testsets {TESTSETS} && "
        "{PYTHON} -m stages.report_html exp --systems {params.systems} --testsets {TESTSETS} "
        "--report exp/alpha_sweep.json --output exp/alpha_sweep.html) > {log} 2>&1"


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


rule features_speed_perturbed:
    """Target training features plus copies at speeds 0.9 and 1.1 (lhotse perturb_speed)."""
    input:
        "data/manifests/target_train_cuts.jsonl.gz",
    output:
        cuts="data/fbank/target_train_sp_cuts.jsonl.gz",
        storage="data/fbank/target_train_sp_feats.lca",
        provenance="data/fbank/target_train_sp.provenance.json",
    params:
        cfg=section("features"),
        seed=config["seed"],
    log:
        "logs/features/target_train_sp.log",
    benchmark:
        "logs/features/target_train_sp.benchmark.tsv"
    threads: 2
    shell:
        "{PYTHON} -m stages.features {input} {output.cuts} --speed-perturb 0.9 1.1 "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule noise:
    """Sox noise recordings with features: what noise_mix mixes into target batches."""
    output:
        cuts="data/fbank/noise_cuts.jsonl.gz",
        storage="data/fbank/noise_feats.lca",
        noise=directory("data/noise"),
    params:
        cfg=section("features"),
        seed=config["seed"],
        types=config["corpus"]["target"]["noise_types"],
    log:
        "logs/noise/noise.log",
    shell:
        "{PYTHON} -m stages.noise {output.noise} {output.cuts} --noise-types {params.types} "
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
        cfg=json.dumps(training_sections(config, "pretrained"), sort_keys=True),
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
        unpack(lambda w: augmentation_inputs(training_sections(config, w.variant)["finetune"])),
        init="exp/pretrained/model.pt",
        cuts=lambda w: target_train(training_sections(config, w.variant)["finetune"]),
        valid="data/fbank/target_dev_cuts.jsonl.gz",
        lang=f"{LANG}_target",
    output:
        model="exp/{variant}/model.pt",
        provenance="exp/{variant}/provenance.json",
    params:
        cfg=lambda w: json.dumps(training_sections(config, w.variant), sort_keys=True),
        seed=config["seed"],
        extra=extra_arguments,
    log:
        "logs/finetune/{variant}.log",
    benchmark:
        "logs/finetune/{variant}.benchmark.tsv"
    threads: 2
    shell:
        "{PYTHON} -m stages.finetune {input.init} {input.cuts} {input.valid} {input.lang} exp/{wildcards.variant} "
        "{params.extra} --config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule adapt:
    """Adapters in the pretrained model, trained alone on the target domain."""
    input:
        unpack(lambda w: augmentation_inputs(training_sections(config, w.adapted)["adapt"])),
        init="exp/pretrained/model.pt",
        cuts=lambda w: target_train(training_sections(config, w.adapted)["adapt"]),
        valid="data/fbank/target_dev_cuts.jsonl.gz",
        lang=f"{LANG}_target",
    output:
        model="exp/{adapted}/model.pt",
        provenance="exp/{adapted}/provenance.json",
    params:
        cfg=lambda w: json.dumps(training_sections(config, w.adapted), sort_keys=True),
        seed=config["seed"],
        extra=extra_arguments,
    log:
        "logs/adapt/{adapted}.log",
    benchmark:
        "logs/adapt/{adapted}.benchmark.tsv"
    threads: 2
    shell:
        "{PYTHON} -m stages.adapt {input.init} {input.cuts} {input.valid} {input.lang} exp/{wildcards.adapted} "
        "{params.extra} --config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule scratch:
    """The target data and finetune's step budget, from random initialization."""
    input:
        cuts=target_train(config["finetune"]),
        valid="data/fbank/target_dev_cuts.jsonl.gz",
        lang=f"{LANG}_target",
    output:
        model="exp/scratch/model.pt",
        provenance="exp/scratch/provenance.json",
    params:
        cfg=json.dumps(training_sections(config, "scratch"), sort_keys=True),
        seed=config["seed"],
    log:
        "logs/scratch/scratch.log",
    benchmark:
        "logs/scratch/scratch.benchmark.tsv"
    threads: 2
    shell:
        "{PYTHON} -m stages.scratch {input.cuts} {input.valid} {input.lang} exp/scratch "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule import_kaldi:
    """A released Kaldi nnet3 chain model (kaldi_ko.model) as an icefall-format checkpoint, with
    its front end's files: exp/kaldi_ko."""
    output:
        model="exp/kaldi_ko/model.pt",
        provenance="exp/kaldi_ko/provenance.json",
    params:
        model=config["kaldi_ko"]["model"],
    log:
        "logs/import/kaldi_ko.log",
    shell:
        "{PYTHON} -m stages.import_kaldi {params.model} exp/kaldi_ko > {log} 2>&1"


rule features_kaldi_ko:
    """One subset's features for the imported model: its MFCC with its online i-vectors."""
    input:
        cuts="data/manifests/{domain}_{split}_cuts.jsonl.gz",
        model="exp/kaldi_ko/model.pt",
    output:
        cuts="data/kaldi_ko/feats/{domain}_{split}_cuts.jsonl.gz",
        storage="data/kaldi_ko/feats/{domain}_{split}_feats.lca",
        provenance="data/kaldi_ko/feats/{domain}_{split}.provenance.json",
    params:
        cfg=section("features"),
        seed=config["seed"],
    log:
        "logs/features/kaldi_ko_{domain}_{split}.log",
    benchmark:
        "logs/features/kaldi_ko_{domain}_{split}.benchmark.tsv"
    threads: 2
    shell:
        "{PYTHON} -m stages.features {input.cuts} {output.cuts} --front-end exp/kaldi_ko "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule kaldi_ko_testset:
    """Korean speech synthesized with espeak-ng: what the import is checked on against Vosk."""
    output:
        directory("data/kaldi_ko/test"),
    log:
        "logs/kaldi_ko/testset.log",
    shell:
        "{PYTHON} -m local.kaldi_ko.testset {output} > {log} 2>&1"


rule kaldi_ko_agreement:
    """Our import (MFCC, online i-vectors, network, the model's own graph) decoding beside Vosk,
    Kaldi's own online decoder: exp/kaldi_ko_agreement.json (word agreement per utterance)."""
    input:
        "data/kaldi_ko/test",
    output:
        "exp/kaldi_ko_agreement.json",
    params:
        model=config["kaldi_ko"]["model"],
    log:
        "logs/kaldi_ko/agreement.log",
    threads: 2
    shell:
        "{PYTHON} -m local.kaldi_ko.agreement {input} {output} --model {params.model} --modes online > {log} 2>&1"


rule finetune_kaldi_ko:
    """The imported Korean chain model fine-tuned on the target domain: its TDNN-F body kept,
    a new output layer over the target lang dir's tokens (cross-lingual transfer)."""
    input:
        init="exp/kaldi_ko/model.pt",
        cuts="data/kaldi_ko/feats/target_train_cuts.jsonl.gz",
        valid="data/kaldi_ko/feats/target_dev_cuts.jsonl.gz",
        lang=f"{LANG}_target",
    output:
        model=f"exp/{KALDI_KO}/model.pt",
        provenance=f"exp/{KALDI_KO}/provenance.json",
    params:
        cfg=json.dumps(training_sections(config, KALDI_KO), sort_keys=True),
        seed=config["seed"],
    log:
        f"logs/finetune/{KALDI_KO}.log",
    benchmark:
        f"logs/finetune/{KALDI_KO}.benchmark.tsv"
    threads: 2
    shell:
        "{PYTHON} -m stages.finetune {input.init} {input.cuts} {input.valid} {input.lang} exp/" + KALDI_KO + " "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule decode:
    """HLG 1-best (and CTC greedy) recognitions of one test set by one system."""
    input:
        model="exp/{system}/model.pt",
        lang=lambda w: f"{LANG}_{w.testset.split('_')[0]}",
        cuts=lambda w: test_cuts(w.system, w.testset),
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
