"""speechtune: a Kaldi-style pipeline for fine-tuning pretrained speech models.

Each stage is one module with a ``main()`` CLI (``python -m stages.<name> --help``); the
Snakefile only wires them. Shared code lives once: ``config`` (loading and schema validation),
``provenance`` (atomic writes and the provenance record every artifact directory carries),
``text`` (transcript normalization shared by every stage that reads words).
"""
