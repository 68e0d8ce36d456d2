# Decoding and scoring: every system on every test set, with the test set's domain's lang dir
# and LM, on the system's own front end's features.


rule decode:
    """HLG 1-best (and CTC greedy) recognitions of one test set by one system."""
    input:
        model=ex.system_dir("{system}") + "/model.pt",
        lang=lambda w: ex.lang_dir(config, ex.testset_domain(w.testset)),
        cuts=lambda w: ex.feature_cuts(w.testset, ex.front_end(w.system)),
    output:
        expand(ex.decode_dir("{{system}}", "{{testset}}", "{method}") + "/{name}",
               method=METHODS, name=["hyp.txt", "ref.txt", "utt2spk", "rtf.json"]),
    params:
        cfg=section("decode"),
        seed=SEED,
        lm=lambda w: ex.testset_domain(w.testset),
        out=ex.decode_dir("{system}", "{testset}", method=None),
    threads: rule_threads("decode")
    resources:
        **rule_resources("decode"),
    log:
        "logs/decode/{system}_{testset}.log",
    benchmark:
        "logs/decode/{system}_{testset}.benchmark.tsv"
    shell:
        "{PYTHON} -m stages.decode {input.model} {input.lang} {params.lm} {input.cuts} {params.out} "
        "--threads {threads} --device {DEVICE} --config-json {params.cfg:q} --seed {params.seed} > {log} 2>&1"


rule score:
    """Kaldi's %WER line, per-utterance alignments and per-speaker WER."""
    input:
        ex.decode_dir("{system}", "{testset}", "{method}") + "/hyp.txt",
    output:
        expand(ex.decode_dir("{{system}}", "{{testset}}", "{{method}}") + "/{name}",
               name=["wer.txt", "wer.json", "per_utt.txt", "per_spk.txt"]),
    params:
        decode_dir=ex.decode_dir("{system}", "{testset}", "{method}"),
    threads: rule_threads("score")
    resources:
        **rule_resources("score"),
    log:
        "logs/score/{system}_{testset}_{method}.log",
    shell:
        "{PYTHON} -m stages.score {params.decode_dir} > {log} 2>&1"


rule wer:
    """exp/<system>/wer.txt: the target test set's WER, once every system is scored and
    reported, so the main target builds the whole comparison."""
    input:
        wer=ex.decode_dir("{system}", ex.TARGET_TESTSET) + "/wer.txt",
        report="exp/report.json",
    output:
        ex.system_dir("{system}") + "/wer.txt",
    shell:
        "cp {input.wer} {output}"
