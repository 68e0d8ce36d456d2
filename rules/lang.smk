# Lang dirs: one per domain, each with its domain's words, LM and HLG, all sharing one token
# inventory (CMUdict phones; with BPE units the source's sentencepiece model, which the
# target's reuses).
BPE = config["lang"]["unit"] == "bpe"


rule lang:
    """Tokens, lexicon, L, the domain's n-gram LM and HLG (an icefall-compatible lang dir)."""
    input:
        cuts=ex.manifest_cuts("{domain}_train"),
        # The target domain spells its words with the pretrained model's BPE pieces.
        source_lang=lambda w: [ex.lang_dir(config, "source")] if BPE and w.domain == "target" else [],
    output:
        directory(ex.lang_dir(config, "{domain}")),
    params:
        cfg=section("lang"),
        seed=SEED,
        bpe_model=lambda w, input: f"--bpe-model {input.source_lang[0]}/bpe.model" if input.source_lang else "",
    threads: rule_threads("lang")
    resources:
        **rule_resources("lang"),
    log:
        "logs/lang/{domain}.log",
    benchmark:
        "logs/lang/{domain}.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.lang {input.cuts} --lm-text {wildcards.domain}={input.cuts} {params.bpe_model} "
        "{output} --config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"
