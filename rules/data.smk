# Data: the corpus as Kaldi data dirs, lhotse manifests, features, noise for noise mixing.
from speechtune.data.kaldi_dir import manifest_paths  # noqa: E402
from speechtune.features.extract import output_paths  # noqa: E402


def feature_outputs(cuts):
    """The features stage's outputs for its output cuts: the cuts, their archive, provenance."""
    storage, provenance = output_paths(Path(cuts))
    return {"cuts": cuts, "storage": str(storage), "provenance": str(provenance)}


rule fbank:
    """Everything up to features for every subset."""
    input:
        [ex.feature_cuts(subset) for subset in ex.subsets(config)],


rule corpus:
    """One domain's corpus as Kaldi data dirs, by its recipe (corpus.<domain>.recipe): the
    embedded default synthesized, or a real corpus read (and, with download: true, fetched)."""
    output:
        directory(ex.corpus_dir("{domain}")),
    params:
        cfg=lambda w: section("corpus", w.domain),
        seed=SEED,
    threads: rule_threads("corpus")
    resources:
        **rule_resources("corpus"),
    log:
        "logs/corpus/{domain}.log",
    benchmark:
        "logs/corpus/{domain}.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.corpus --domain {wildcards.domain} --jobs {threads} "
        "--config-json {params.cfg:q} --seed {params.seed} {output} > {log} 2>&1"


rule prepare:
    """Import one split's Kaldi data dir as validated lhotse manifests."""
    input:
        ex.corpus_dir("{domain}"),
    output:
        **{name: str(path) for name, path in manifest_paths("data/manifests", "{domain}_{split}").items()},
    params:
        cfg=section("prepare"),
        seed=SEED,
    threads: rule_threads("prepare")
    resources:
        **rule_resources("prepare"),
    log:
        "logs/prepare/{domain}_{split}.log",
    benchmark:
        "logs/prepare/{domain}_{split}.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.prepare import {input}/{wildcards.split} data/manifests "
        "--subset {wildcards.domain}_{wildcards.split} "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


def features_inputs(wildcards):
    """The subset's manifest (a `_sp` subset's is the unperturbed one's), and the model whose
    front end computes the features where the feature dir has one."""
    subset = wildcards.subset.removesuffix(SPEED_PERTURBED)
    model = ex.front_end_model(wildcards.feature_dir)
    return {"cuts": ex.manifest_cuts(subset), **({"model": f"{model}/model.pt"} if model else {})}


def features_options(wildcards):
    perturb = wildcards.subset.endswith(SPEED_PERTURBED)
    model = ex.front_end_model(wildcards.feature_dir)
    return " ".join([*(["--speed-perturb", *map(str, SPEED_FACTORS)] if perturb else []),
                     *(["--front-end", model] if model else [])])


rule features:
    """One subset's features: fbank (features.extractor) in data/fbank, with speed-perturbed
    copies for a `_sp` subset, or an imported Kaldi model's front end in data/kaldi_ko/feats."""
    input:
        unpack(features_inputs),
    output:
        **feature_outputs("data/{feature_dir}/{subset}_cuts.jsonl.gz"),
    params:
        cfg=section("features"),
        seed=SEED,
        options=features_options,
    threads: rule_threads("features")
    resources:
        **rule_resources("features"),
    log:
        "logs/features/{feature_dir}/{subset}.log",
    benchmark:
        "logs/features/{feature_dir}/{subset}.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.features {input.cuts} {output.cuts} {params.options} --threads {threads} "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule noise:
    """Sox noise recordings with features: what noise_mix mixes into target batches."""
    output:
        **feature_outputs(ex.feature_cuts(ex.NOISE_SUBSET)),
        noise=directory("data/noise"),
    params:
        cfg=section("features"),
        seed=SEED,
        types=config["corpus"]["target"]["noise_types"],
    threads: rule_threads("noise")
    resources:
        **rule_resources("noise"),
    log:
        "logs/noise/noise.log",
    shell:
        "{PYTHON} -m stages.noise {output.noise} {output.cuts} --noise-types {params.types} --threads {threads} "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule subset:
    """The first minutes of target_train in a seeded order (a learning curve's nested subsets);
    the cuts keep target_train's features."""
    input:
        ex.feature_cuts("target_train"),
    output:
        ex.feature_cuts(ex.CURVE_SUBSET),
    wildcard_constraints:
        minutes=r"[0-9]+(\.[0-9]+)?",
    threads: rule_threads("subset")
    resources:
        **rule_resources("subset"),
    log:
        "logs/subset/target_train_{minutes}min.log",
    shell:
        "{PYTHON} -m stages.subset {input} {output} --minutes {wildcards.minutes} --seed {SEED} > {log} 2>&1"
