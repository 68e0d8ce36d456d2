"""Acoustic models, by type (``model_params["type"]``): ``tdnn`` and ``tdnnf``
(:mod:`~speechtune.models.tdnn`), ``kaldi_nnet3`` (an imported Kaldi network,
:mod:`~speechtune.models.kaldi_nnet3`), ``icefall_tdnn_lstm_ctc`` (icefall's LibriSpeech
tdnn_lstm_ctc with its parameter names, :mod:`~speechtune.models.icefall`). Importing this
package registers them all, so ``build_model`` rebuilds any checkpoint's model; adapters are in
:mod:`~speechtune.models.adapters`, shared layers in :mod:`~speechtune.models.layers`.

A new model type is a module here whose class or factory is decorated with
``@MODELS.register("<type>")`` (:mod:`~speechtune.models.base` says what a model offers), and
one import line below.
"""
from speechtune.models import icefall, kaldi_nnet3, tdnn  # noqa: F401  (registers the model types)
from speechtune.models.base import MODELS, build_model, num_parameters, trainable_parameters

__all__ = ["MODELS", "build_model", "num_parameters", "trainable_parameters"]
