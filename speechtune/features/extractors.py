"""Feature extractors the ``features`` stage can use, chosen by ``features.extractor``.

=====================  ====================================================================
``lhotse-fbank``       lhotse's ``Fbank``: Kaldi's fbank algorithm in torch (the default)
``kaldi-native-fbank`` ``KaldiNativeFbank`` below: Kaldi's C++ code via kaldi-native-fbank,
                       with lhotse's ``Fbank`` defaults; the Kaldi-exact reference
``kaldifeat``          lhotse's ``KaldifeatFbank``, where kaldifeat is installed
=====================  ====================================================================

and, for a released Kaldi model (``features --front-end MODEL_DIR``), ``KaldiModelFrontEnd``:
the MFCC its ``conf/mfcc.conf`` asks for with its online i-vectors appended to every frame.

All three produce log-mel filterbanks with the same options: 25 ms Povey windows every 10 ms,
no dither, ``snip_edges=False`` (``(num_samples + 80) // 160`` frames at 16 kHz, what lhotse's
duration-to-frames arithmetic expects), 20 Hz to Nyquist - 400 Hz, power spectrum, log floored
at float32 epsilon; samples stay in lhotse's [-1, 1] scale (Kaldi's own tools read int16
values, so their log energies are higher by ``2 * log(32768)`` where not floored)::

    extractor = make_extractor("kaldi-native-fbank", num_mel_bins=80, sampling_rate=16000)
    feats = extractor.extract(samples, 16000)    # (num_frames, 80) float32

lhotse 1.31 has no kaldi-native-fbank extractor of its own; ``KaldiNativeFbank`` is registered
with lhotse under the name ``kaldi-native-fbank`` (the ``type`` of the stored ``Features``).
"""
import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import numpy as np
import torch
from lhotse import Fbank, FbankConfig
from lhotse.features.base import FeatureExtractor, register_extractor
from lhotse.utils import Seconds, compute_num_frames

from speechtune.errors import StageError
from speechtune.kaldi.ivector import extract_online_ivectors, read_ivector_extractor
from speechtune.kaldi.mfcc import compute_mfcc, mfcc_options

EXTRACTORS = ("lhotse-fbank", "kaldi-native-fbank", "kaldifeat")


class _ExtractorConfig:
    """``to_dict``/``from_dict``: what lhotse asks of an extractor's config dataclass."""

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> Any:
        return cls(**data)


@dataclass
class KaldiNativeFbankConfig(_ExtractorConfig):
    """kaldi-native-fbank's options, at the values of lhotse's ``FbankConfig`` defaults."""

    sampling_rate: int = 16000
    frame_length: Seconds = 0.025
    frame_shift: Seconds = 0.01
    round_to_power_of_two: bool = True
    remove_dc_offset: bool = True
    preemph_coeff: float = 0.97
    window_type: str = "povey"
    dither: float = 0.0
    snip_edges: bool = False
    low_freq: float = 20.0
    high_freq: float = -400.0
    num_mel_bins: int = 80


@register_extractor
class KaldiNativeFbank(FeatureExtractor):
    """Log-mel fbank from ``kaldi_native_fbank.OnlineFbank``, as a lhotse extractor.

    Holds only its dataclass config, so it pickles into lhotse's worker processes; the
    C++ extractor is built per call (it is stateful: one waveform each).
    """

    name = "kaldi-native-fbank"
    config_type = KaldiNativeFbankConfig

    @property
    def frame_shift(self) -> Seconds:
        return self.config.frame_shift

    def feature_dim(self, sampling_rate: int) -> int:
        return self.config.num_mel_bins

    def _options(self) -> Any:
        import kaldi_native_fbank as knf

        c = self.config
        opts = knf.FbankOptions()
        frame = opts.frame_opts
        frame.samp_freq = float(c.sampling_rate)
        frame.frame_length_ms = c.frame_length * 1000
        frame.frame_shift_ms = c.frame_shift * 1000
        frame.round_to_power_of_two = c.round_to_power_of_two
        frame.remove_dc_offset = c.remove_dc_offset
        frame.preemph_coeff = c.preemph_coeff
        frame.window_type = c.window_type
        frame.dither = c.dither
        frame.snip_edges = c.snip_edges
        opts.mel_opts.num_bins = c.num_mel_bins
        opts.mel_opts.low_freq = c.low_freq
        opts.mel_opts.high_freq = c.high_freq
        # The rest (use_energy=False, use_power=True, log floor at float32 epsilon, Kaldi's
        # mel scale rather than librosa's) are kaldi-native-fbank's defaults and lhotse's.
        return opts

    def extract(self, samples: Union[np.ndarray, torch.Tensor], sampling_rate: int) -> np.ndarray:
        import kaldi_native_fbank as knf

        if sampling_rate != self.config.sampling_rate:
            raise ValueError(
                f"KaldiNativeFbank is configured for {self.config.sampling_rate} Hz, got "
                f"{sampling_rate} Hz; resample the cuts (CutSet.resample) first"
            )
        if isinstance(samples, torch.Tensor):
            samples = samples.numpy()
        samples = np.asarray(samples, dtype=np.float32)
        if samples.ndim == 2 and samples.shape[0] != 1:
            raise ValueError(f"KaldiNativeFbank takes mono audio; got {samples.shape[0]} channels")
        fbank = knf.OnlineFbank(self._options())
        fbank.accept_waveform(float(sampling_rate), samples.reshape(-1))
        fbank.input_finished()
        feats = np.empty((fbank.num_frames_ready, self.config.num_mel_bins), dtype=np.float32)
        for i in range(fbank.num_frames_ready):
            feats[i] = fbank.get_frame(i)
        return feats


@dataclass
class KaldiModelFrontEndConfig(_ExtractorConfig):
    """The Kaldi model directory whose front end to compute (``conf/mfcc.conf``, ``ivector/``)."""

    model_dir: str = ""
    frame_shift: Seconds = 0.01


@functools.lru_cache(maxsize=2)
def _kaldi_front_end(model_dir: str) -> Tuple[Any, Any]:
    """(MFCC options, i-vector extractor or None without ``ivector/``) of a model directory,
    read once per process."""
    ivector = read_ivector_extractor(model_dir) if (Path(model_dir) / "ivector").is_dir() else None
    return mfcc_options(Path(model_dir) / "conf" / "mfcc.conf"), ivector


@register_extractor
class KaldiModelFrontEnd(FeatureExtractor):
    """A released Kaldi chain model's input as one feature matrix per cut: the MFCC of its
    ``conf/mfcc.conf`` (:mod:`speechtune.kaldi.mfcc`, Kaldi's snip-edges framing, no dither) and,
    appended to every frame, the online i-vector of that frame's 10-frame period
    (:func:`speechtune.kaldi.ivector.extract_online_ivectors`: per utterance, every frame weight 1,
    as Kaldi's ``ivector-extract-online2`` computes training i-vectors). A model with
    ``feature_dim`` = MFCC dim + i-vector dim and ``ivector_in_features`` splits them again
    (:class:`speechtune.models.kaldi_nnet3.KaldiNnet3Model`). A model directory without ``ivector/`` (a
    model without i-vector input) gets the MFCC alone::

        extractor = KaldiModelFrontEnd(KaldiModelFrontEndConfig(model_dir="exp/kaldi_ko"))
        feats = extractor.extract(samples, 16000)      # (T, 40 + 100)

    Snip-edges framing gives ``1 + (n - 400) // 160`` frames where lhotse counts
    ``round(n / 160)``: the last frame is repeated to lhotse's count (Kaldi's decoders repeat
    edge frames for the network's right context the same way).
    """

    name = "kaldi-mfcc-ivector"
    config_type = KaldiModelFrontEndConfig

    @property
    def frame_shift(self) -> Seconds:
        return self.config.frame_shift

    def feature_dim(self, sampling_rate: int) -> int:
        opts, ivector = _kaldi_front_end(self.config.model_dir)
        return int(opts.num_ceps) + (ivector.ivector_dim if ivector is not None else 0)

    def extract(self, samples: Union[np.ndarray, torch.Tensor], sampling_rate: int) -> np.ndarray:
        if isinstance(samples, torch.Tensor):
            samples = samples.numpy()
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        opts, info = _kaldi_front_end(self.config.model_dir)
        mfcc = compute_mfcc(samples, sampling_rate, opts)
        if len(mfcc) == 0:
            raise ValueError(f"{len(samples)} samples: shorter than one {opts.frame_opts.frame_length_ms:g} ms frame")
        feats = mfcc
        if info is not None:
            period = info.options.ivector_period
            ivectors = np.repeat(extract_online_ivectors(info, mfcc, period), period, axis=0)[:len(mfcc)]
            feats = np.concatenate([mfcc, ivectors], axis=1)
        expected = compute_num_frames(len(samples) / sampling_rate, self.frame_shift, sampling_rate)
        if expected > len(feats):
            feats = np.concatenate([feats, np.repeat(feats[-1:], expected - len(feats), axis=0)])
        return np.ascontiguousarray(feats[:expected], dtype=np.float32)


def make_extractor(name: str, num_mel_bins: int, sampling_rate: int = 16000) -> FeatureExtractor:
    """The extractor that ``features.extractor`` names; a StageError where it cannot run here."""
    if name == "lhotse-fbank":
        return Fbank(FbankConfig(sampling_rate=sampling_rate, num_mel_bins=num_mel_bins))
    if name == "kaldi-native-fbank":
        try:
            import kaldi_native_fbank  # noqa: F401
        except ImportError:
            raise StageError(
                "features.extractor is 'kaldi-native-fbank' but the package is not installed: "
                "`pip install kaldi-native-fbank` (requirements.txt pins it), or set "
                "features.extractor: lhotse-fbank"
            ) from None
        return KaldiNativeFbank(
            KaldiNativeFbankConfig(sampling_rate=sampling_rate, num_mel_bins=num_mel_bins)
        )
    if name == "kaldifeat":
        try:
            import kaldifeat  # noqa: F401
        except ImportError:
            raise StageError(
                "features.extractor is 'kaldifeat' but kaldifeat is not installed, and it has no "
                "wheel for this stack (Python 3.9, torch 1.13.1+cu117): build it against that "
                "torch from https://github.com/csukuangfj/kaldifeat (`python setup.py install` in "
                "the venv), which needs the CUDA 11.7 toolkit and cuDNN; or set features.extractor "
                "to lhotse-fbank (the default) or kaldi-native-fbank in the config"
            ) from None
        from lhotse import KaldifeatFbank, KaldifeatFbankConfig
        from lhotse.features.kaldifeat import KaldifeatFrameOptions, KaldifeatMelOptions

        return KaldifeatFbank(KaldifeatFbankConfig(
            frame_opts=KaldifeatFrameOptions(sampling_rate=sampling_rate),
            mel_opts=KaldifeatMelOptions(num_bins=num_mel_bins),
        ))
    raise StageError(f"features.extractor: unknown extractor {name!r}; expected one of {', '.join(EXTRACTORS)}")
