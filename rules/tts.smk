# TTS: the target voice's corpus, phones and mels, Tacotron pretraining on the source voices,
# fine-tuning to the target voice and training on its minutes alone, synthesis, evaluation and
# the report. `snakemake --cores 8 exp/tts/report.html` runs it all (speechtune/tts).


def tts_section(*keys):
    """The keys of the tts section a stage reads, as its --config-json: changing another key
    (a vocoder setting for training, say) reruns nothing here."""
    return json.dumps({"tts": {key: config["tts"][key] for key in keys}}, sort_keys=True)


rule tts_corpus:
    """The TTS target voice (tts.voice): one speaker of a family the source never has, reading
    the target domain's commands, clean."""
    output:
        directory(ex.TTS_VOICE_DIR),
    params:
        cfg=json.dumps({"tts": {"voice": config["tts"]["voice"]}, "corpus": config["corpus"]}, sort_keys=True),
        seed=SEED,
    threads: rule_threads("tts_corpus")
    resources:
        **rule_resources("tts_corpus"),
    log:
        "logs/tts/corpus.log",
    benchmark:
        "logs/tts/corpus.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.tts_corpus --jobs {threads} --config-json {params.cfg:q} --seed {params.seed} "
        "{output} > {log} 2>&1"


rule tts_prepare:
    """One split of the voice's Kaldi data dir as validated lhotse manifests (the prepare stage)."""
    input:
        ex.TTS_VOICE_DIR,
    output:
        **{name: str(path) for name, path in manifest_paths("data/manifests", "voice_{tts_split}").items()},
    wildcard_constraints:
        tts_split="train|test",
    params:
        cfg=section("prepare"),
        seed=SEED,
    threads: rule_threads("tts_prepare")
    resources:
        **rule_resources("tts_prepare"),
    log:
        "logs/tts/prepare_voice_{tts_split}.log",
    shell:
        "{PYTHON} -m stages.prepare import {input}/{wildcards.tts_split} data/manifests "
        "--subset voice_{wildcards.tts_split} --config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


def tts_data_inputs(wildcards):
    """The subset's manifest and, for the source, its corpus (which utterances were read clean)."""
    source = wildcards.tts_subset == "source_train"
    return {"cuts": ex.manifest_cuts(wildcards.tts_subset), **({"corpus": ex.corpus_dir("source")} if source else {})}


rule tts_data:
    """One TTS subset's phones and invertible mels: data/tts/fbank/<subset>_cuts.jsonl.gz."""
    input:
        unpack(tts_data_inputs),
    output:
        **feature_outputs(ex.tts_cuts("{tts_subset}")),
    wildcard_constraints:
        tts_subset=one_of(ex.TTS_SUBSETS),
    params:
        cfg=json.dumps({"corpus": config["corpus"]}, sort_keys=True),
        seed=SEED,
        clean=lambda w, input: f"--clean-of {input.corpus}" if "corpus" in input.keys() else "",
    threads: rule_threads("tts_data")
    resources:
        **rule_resources("tts_data"),
    log:
        "logs/tts/data_{tts_subset}.log",
    benchmark:
        "logs/tts/data_{tts_subset}.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.tts_data {input.cuts} {output.cuts} {params.clean} --threads {threads} "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule tts_pretrain:
    """Tacotron 2 on every source voice read clean, from nothing: exp/tts/pretrained."""
    input:
        cuts=ex.tts_cuts("source_train"),
    output:
        f"{ex.tts_dir('pretrained')}/model.pt",
    params:
        cfg=tts_section("model", "max_frames", "valid_fraction", "pretrain"),
        seed=SEED,
        exp_dir=ex.tts_dir("pretrained"),
    threads: rule_threads("tts_pretrain")
    resources:
        **rule_resources("tts_pretrain"),
    log:
        "logs/tts/pretrain.log",
    benchmark:
        "logs/tts/pretrain.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.tts_pretrain {input.cuts} {params.exp_dir} --threads {threads} "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule tts_finetune:
    """The pretrained Tacotron 2 adapted to the target voice (tts.finetune: alpha * L_pre +
    (1 - alpha) * L_task, rehearsing the source where alpha > 0): exp/tts/finetuned."""
    input:
        cuts=ex.tts_cuts("voice_train"),
        pretrained=f"{ex.tts_dir('pretrained')}/model.pt",
        source=ex.tts_cuts("source_train"),
    output:
        f"{ex.tts_dir('finetuned')}/model.pt",
    params:
        cfg=tts_section("max_frames", "valid_fraction", "finetune"),
        seed=SEED,
        exp_dir=ex.tts_dir("finetuned"),
    threads: rule_threads("tts_finetune")
    resources:
        **rule_resources("tts_finetune"),
    log:
        "logs/tts/finetune.log",
    benchmark:
        "logs/tts/finetune.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.tts_finetune {input.cuts} {input.pretrained} {params.exp_dir} "
        "--source-cuts {input.source} --threads {threads} --config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule tts_scratch:
    """Tacotron 2 on the target voice's minutes alone, from nothing: exp/tts/scratch."""
    input:
        cuts=ex.tts_cuts("voice_train"),
    output:
        f"{ex.tts_dir('scratch')}/model.pt",
    params:
        cfg=tts_section("model", "max_frames", "valid_fraction", "scratch"),
        seed=SEED,
        exp_dir=ex.tts_dir("scratch"),
    threads: rule_threads("tts_scratch")
    resources:
        **rule_resources("tts_scratch"),
    log:
        "logs/tts/scratch.log",
    benchmark:
        "logs/tts/scratch.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.tts_scratch {input.cuts} {params.exp_dir} --threads {threads} "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule tts_synthesize:
    """One TTS system renders the voice's test sentences: exp/tts/<system>/synth."""
    input:
        model=f"{ex.tts_dir('{tts_system}')}/model.pt",
        cuts=ex.tts_cuts("voice_test"),
    output:
        directory(f"{ex.tts_dir('{tts_system}')}/synth"),
    wildcard_constraints:
        tts_system=one_of(ex.TTS_SYSTEMS),
    params:
        cfg=tts_section("vocoder", "synthesize"),
        seed=SEED,
        unseen=lambda w: "--unseen-voice" if w.tts_system == "pretrained" else "",
    threads: rule_threads("tts_synthesize")
    resources:
        **rule_resources("tts_synthesize"),
    log:
        "logs/tts/synthesize_{tts_system}.log",
    benchmark:
        "logs/tts/synthesize_{tts_system}.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.tts_synthesize {input.model} {input.cuts} {output} {params.unseen} "
        "--threads {threads} --config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule tts_evaluate:
    """One TTS system's syntheses judged: exp/tts/<system>/eval.json (MCD, both recognizers'
    WER, speaker similarity, DNSMOS, attention health)."""
    input:
        synth=f"{ex.tts_dir('{tts_system}')}/synth",
        references=ex.tts_cuts("voice_test"),
        source=ex.tts_cuts("source_train"),
        recognizer=f"{ex.system_dir(ex.PLAIN)}/model.pt",
        lang=ex.lang_dir(config, "target"),
    output:
        f"{ex.tts_dir('{tts_system}')}/eval.json",
    wildcard_constraints:
        tts_system=one_of(ex.TTS_SYSTEMS),
    params:
        cfg=json.dumps({name: config[name] for name in ("prepare", "features", "decode")}, sort_keys=True),
        seed=SEED,
    threads: rule_threads("tts_evaluate")
    resources:
        **rule_resources("tts_evaluate"),
    log:
        "logs/tts/evaluate_{tts_system}.log",
    benchmark:
        "logs/tts/evaluate_{tts_system}.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.tts_evaluate {input.synth} {input.references} {input.source} {input.recognizer} "
        "{input.lang} {output} --threads {threads} --config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule tts_report:
    """The TTS systems side by side and the listening page: exp/tts/report.{json,md,html},
    exp/tts/listening.html."""
    input:
        evals=[f"{ex.tts_dir(system)}/eval.json" for system in ex.TTS_SYSTEMS],
        cuts=ex.tts_cuts("voice_test"),
    output:
        json="exp/tts/report.json",
        md="exp/tts/report.md",
        html="exp/tts/report.html",
        listening="exp/tts/listening.html",
    params:
        cfg=tts_section("listening_sentences"),
        seed=SEED,
        systems=" ".join(ex.TTS_SYSTEMS),
    threads: rule_threads("tts_report")
    resources:
        **rule_resources("tts_report"),
    log:
        "logs/tts/report.log",
    shell:
        "{PYTHON} -m stages.tts_report exp/tts {input.cuts} --systems {params.systems} "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"
