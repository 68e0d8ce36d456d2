"""Kaldi's model files, read as Kaldi writes them: basic-type binary/text I/O
(:mod:`~speechtune.kaldi.io`), nnet3 models (:mod:`~speechtune.kaldi.nnet3`), the MFCC front end
(:mod:`~speechtune.kaldi.mfcc`), online i-vectors (:mod:`~speechtune.kaldi.ivector`) and model
directories found by path or package (:mod:`~speechtune.kaldi.model_dir`). No torch here: the
network as a torch module is :mod:`speechtune.models.kaldi_nnet3`."""
