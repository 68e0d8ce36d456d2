"""speechtune: fine-tuning pretrained speech models, and measuring what the fine-tuning bought.

The library the stage CLIs (``stages/<name>.py``, one per Snakefile rule) call into. It is built
in layers, lowest first; a module imports only from its own layer or lower ones, never from a
higher one, and no modules import each other in a circle (``tests/test_layers.py`` checks both
against :data:`LAYERS`):

1. foundations: :mod:`~speechtune.errors` (the errors a stage reports in one line),
   :mod:`~speechtune.registry` (named variants), :mod:`~speechtune.config` (loading and
   schema validation), :mod:`~speechtune.provenance` (atomic writes, provenance.json),
   :mod:`~speechtune.text` (transcript normalization), :mod:`~speechtune.cli` (what every
   stage CLI shares), :mod:`~speechtune.devices` (CPU or CUDA)
2. data and Kaldi I/O: :mod:`~speechtune.data` (Kaldi text tables, Kaldi data dirs <-> lhotse
   manifests, cut loading), :mod:`~speechtune.kaldi` (Kaldi's model files: nnet3, MFCC,
   i-vectors)
3. :mod:`~speechtune.features` (extractors, extraction), :mod:`~speechtune.lang` (lang dirs,
   LMs, HLG, training graphs)
4. :mod:`~speechtune.models` (a registry of model types: TDNN, TDNN-F, imported Kaldi nnet3;
   adapters)
5. :mod:`~speechtune.training` (the loop, recipes, batches, losses, checkpoints)
6. :mod:`~speechtune.finetuning` (the pretrained start, a registry of regularizers, the
   fine-tuning recipe), :mod:`~speechtune.decoding` (HLG 1-best, CTC greedy),
   :mod:`~speechtune.scoring` (WER, bootstrap significance, Whisper tiny.en),
   :mod:`~speechtune.tts` (speech synthesis: mels, Tacotron 2, its training, vocoders,
   evaluation, the listening test)
7. :mod:`~speechtune.experiment` (systems, test sets and the data/ and exp/ layout: the one
   definition the Snakefile, status and reports share)
8. :mod:`~speechtune.reporting` (report.json/md/html, plots, status),
   :mod:`~speechtune.deployment` (a trained system outside the pipeline: recognizing audio
   files and data dirs as the decode stage does, ONNX export with its lang files)
9. ``speechtune.__main__``: the ``speechtune`` command

Data flows up the same way: a corpus becomes Kaldi data dirs, lhotse manifests (``data``),
features and lang dirs, then trained models, decodes, scores and the report (docs/architecture.md
follows one utterance through it).
"""

# The layers above, by the top-level name of a module under speechtune/.
LAYERS = (
    ("errors", "registry", "text", "config", "provenance", "cli", "devices"),
    ("data", "kaldi"),
    ("features", "lang"),
    ("models",),
    ("training",),
    ("finetuning", "decoding", "scoring", "tts"),
    ("experiment",),
    ("reporting", "deployment"),
    ("__main__",),
)
