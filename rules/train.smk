# Training: the pretrained start, every system fine-tuned from a pretrained start (one rule:
# fine-tuning variants, adapted systems, the imported Kaldi model), and the from-scratch model.


rule pretrain:
    """The source-domain model from random initialization: the pretrained start."""
    input:
        **ex.training_inputs(config, ex.BASELINE),
    output:
        model=f"{ex.system_dir(ex.BASELINE)}/model.pt",
        provenance=f"{ex.system_dir(ex.BASELINE)}/provenance.json",
    params:
        cfg=training_config(ex.BASELINE),
        seed=SEED,
    threads: rule_threads("pretrain")
    resources:
        **rule_resources("pretrain"),
    log:
        "logs/pretrain/pretrain.log",
    benchmark:
        "logs/pretrain/pretrain.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.pretrain {input.cuts} {input.lang} " + ex.system_dir(ex.BASELINE) + " "
        "--threads {threads} --processes {PROCESSES[pretrain]} --device {DEVICE} "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule finetune:
    """A system trained from a pretrained start on the target domain: its inputs, the
    pretrained checkpoint and the extra inputs of its method come from speechtune.experiment."""
    input:
        unpack(lambda w: ex.training_inputs(config, w.system)),
    output:
        model=ex.system_dir("{system}") + "/model.pt",
        provenance=ex.system_dir("{system}") + "/provenance.json",
    wildcard_constraints:
        system=one_of(FINE_TUNED),
    params:
        cfg=lambda w: training_config(w.system),
        seed=lambda w: ex.system_seed(config, w.system),
        extra=extra_arguments,
    threads: rule_threads("finetune")
    resources:
        **rule_resources("finetune"),
    log:
        "logs/finetune/{system}.log",
    benchmark:
        "logs/finetune/{system}.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.finetune {input.init} {input.cuts} {input.valid} {input.lang} "
        + ex.system_dir("{wildcards.system}") + " "
        "{params.extra} --threads {threads} --processes {PROCESSES[finetune]} --device {DEVICE} "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule scratch:
    """The target data and finetune's step budget, from random initialization (and the
    learning curve's from-scratch points)."""
    input:
        unpack(lambda w: ex.training_inputs(config, w.system)),
    output:
        model=ex.system_dir("{system}") + "/model.pt",
        provenance=ex.system_dir("{system}") + "/provenance.json",
    wildcard_constraints:
        system=one_of(ex.scratch_systems(config)),
    params:
        cfg=lambda w: training_config(w.system),
        seed=lambda w: ex.system_seed(config, w.system),
        out=ex.system_dir("{system}"),
    threads: rule_threads("scratch")
    resources:
        **rule_resources("scratch"),
    log:
        "logs/scratch/{system}.log",
    benchmark:
        "logs/scratch/{system}.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.scratch {input.cuts} {input.valid} {input.lang} {params.out} "
        "--threads {threads} --processes {PROCESSES[scratch]} --device {DEVICE} "
        "--config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"
