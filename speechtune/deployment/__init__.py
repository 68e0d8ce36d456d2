"""Using a trained system outside the pipeline: what ``speechtune recognize`` and ``speechtune
export`` do.

- :mod:`~speechtune.deployment.system`: a system's files (checkpoint, lang dir, HLG) and its
  feature extractor, found where the pipeline's decode stage finds them
  (:mod:`speechtune.experiment`'s layout);
- :mod:`~speechtune.deployment.recognize`: audio files or Kaldi data dirs -> words, with the
  decode stage's HLG 1-best (:mod:`speechtune.decoding`) on features computed as the features
  stage computes them (:mod:`speechtune.features.extract`);
- :mod:`~speechtune.deployment.onnx_export`: the acoustic model as ONNX with the lang files a
  runtime decodes with, and that ONNX model back in :func:`speechtune.decoding.decode_cuts`.

::

    from speechtune.deployment.onnx_export import export_system
    from speechtune.deployment.recognize import recognize
    from speechtune.deployment.system import find_system

    system = find_system(load_config([DEFAULT_CONFIG_PATH]), "finetuned")
    words = recognize([Path("hello.flac")], system)          # {"hello": ["TURN", "ON", ...]}
    export_system(system, Path("onnx/finetuned"))
"""
