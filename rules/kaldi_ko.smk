# The released Korean Kaldi chain model: import, and the check of the import against Vosk.
# (Its fine-tuned system is built by the finetune rule, its features by the features rule.)


rule import_kaldi:
    """A released Kaldi nnet3 chain model (kaldi_ko.model) as an icefall-format checkpoint, with
    its front end's files: exp/kaldi_ko."""
    output:
        model=f"{ex.KALDI_KO_IMPORT}/model.pt",
        provenance=f"{ex.KALDI_KO_IMPORT}/provenance.json",
    params:
        model=config["kaldi_ko"]["model"],
    threads: rule_threads("import_kaldi")
    resources:
        **rule_resources("import_kaldi"),
    log:
        "logs/import/kaldi_ko.log",
    shell:
        "{PYTHON} -m stages.import_kaldi {params.model} " + ex.KALDI_KO_IMPORT + " > {log} 2>&1"


rule kaldi_ko_testset:
    """Korean speech synthesized with espeak-ng: what the import is checked on against Vosk."""
    output:
        directory("data/kaldi_ko/test"),
    threads: rule_threads("kaldi_ko_testset")
    resources:
        **rule_resources("kaldi_ko_testset"),
    log:
        "logs/kaldi_ko/testset.log",
    shell:
        "{PYTHON} -m stages.kaldi_ko_testset {output} > {log} 2>&1"


rule kaldi_ko_agreement:
    """Our import (MFCC, online i-vectors, network) decoded by Kaldi's decoder over the model's own
    lookahead graph, beside Vosk (Kaldi's own online decoder), dither off on both sides:
    exp/kaldi_ko_agreement.json (best-path and default-result agreement per utterance)."""
    input:
        data="data/kaldi_ko/test",
    output:
        "exp/kaldi_ko_agreement.json",
    params:
        model=config["kaldi_ko"]["model"],
    threads: rule_threads("kaldi_ko_agreement")
    resources:
        **rule_resources("kaldi_ko_agreement"),
    log:
        "logs/kaldi_ko/agreement.log",
    shell:
        "{PYTHON} -m stages.kaldi_ko_agreement {input.data} {output}"
        " --model {params.model} --modes online --no-dither > {log} 2>&1"


rule kaldi_ko_frames:
    """Our import's per-frame log-likelihoods against Kaldi's (Vosk decoding graphs that force our
    best path) on one test utterance: exp/kaldi_ko/frame_check.json."""
    input:
        data="data/kaldi_ko/test",
    output:
        f"{ex.KALDI_KO_IMPORT}/frame_check.json",
    params:
        model=config["kaldi_ko"]["model"],
    threads: rule_threads("kaldi_ko_frames")
    resources:
        **rule_resources("kaldi_ko_frames"),
    log:
        "logs/kaldi_ko/frames.log",
    shell:
        "{PYTHON} -m stages.kaldi_ko_frames {input.data} {output}"
        " --model {params.model} > {log} 2>&1"
