# speechtune: the chain of stages. Rules only wire; each calls one stage CLI,
# `python -m stages.<rule>`, with its config section as params, so changing a key reruns the
# rule that reads it and what follows, nothing upstream. What the systems, test sets and paths
# are is defined once, in speechtune/experiment.py; the rules take them from there.
#
#   snakemake --cores 8 exp/finetuned/wer.txt    # the whole chain, every system, exp/report.*
#   snakemake --cores 8 alpha_sweep              # + fine-tuning at each alpha: exp/alpha_sweep.*
#   snakemake --cores 8 fbank                    # corpus -> manifests -> features only
#   snakemake --cores 8 exp/finetuned/wer.txt --configfile config/tiny.yaml   # seconds of audio
#   snakemake --cores 8 exp/finetuned/wer.txt --configfile config/kaldi_ko.yaml   # + the imported
#                                  # Kaldi model fine-tuned (needs `make setup KALDI_KO=1`)
#   snakemake --cores 8 exp/finetuned/wer.txt --configfile config/icefall_librispeech.yaml   # a
#                                  # released icefall model as exp/pretrained (README: download it)
#   snakemake --cores 8 exp/tts/report.html      # TTS: Tacotron 2 pretrained, fine-tuned to a new voice, scratch
import os

configfile: os.path.join(workflow.basedir, "config", "config.yaml")


include: "rules/common.smk"
include: "rules/report.smk"   # first rule: the default target is the report
include: "rules/data.smk"
include: "rules/lang.smk"
include: "rules/train.smk"
include: "rules/decode.smk"
include: "rules/kaldi_ko.smk"
include: "rules/icefall.smk"   # pretrained.source icefall: import in place of pretrain, lang
include: "rules/tts.smk"       # TTS: exp/tts/report.html

localrules: fbank, wer, score   # no work, or a second of it: never worth a cluster job

unknown = sorted(set(config["resources"]) - {"default"} - {r.name for r in workflow.rules})
if unknown:
    raise ValueError(f"resources: {', '.join(unknown)} is no rule; rules: "
                     f"{', '.join(sorted(r.name for r in workflow.rules))}")
