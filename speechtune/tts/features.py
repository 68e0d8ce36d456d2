"""The mel spectrogram every TTS stage shares: lhotse's Kaldi-compatible Fbank, configured so
that it can be inverted (a Hann window, no pre-emphasis, no DC removal, no dither, the mel bank
spanning 0-8 kHz) -- the ASR features' Povey window and pre-emphasis would make the vocoder's
inversion wrong::

    mel = log_mel(samples)            # (frames, 80): natural log of mel power, 10 ms frames
    MEL.frame_shift, MEL.num_mels     # 0.01, 80
    mel_bank()                        # (257, 80): the filters, power spectrum -> mel power
"""
from dataclasses import dataclass

import numpy as np
import torch

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class MelConfig:
    """What a mel frame is: the STFT (window, shift, FFT size) and the mel bank."""

    num_mels: int = 80
    frame_length: float = 0.025   # 400 samples
    frame_shift: float = 0.01     # 160 samples
    fft_length: int = 512
    low_freq: float = 0.0
    high_freq: float = SAMPLE_RATE / 2

    @property
    def win_length(self) -> int:
        return int(round(self.frame_length * SAMPLE_RATE))

    @property
    def hop_length(self) -> int:
        return int(round(self.frame_shift * SAMPLE_RATE))


MEL = MelConfig()


def extractor():
    """lhotse's Fbank with :data:`MEL`'s settings (the object the features are computed by)."""
    from lhotse import Fbank, FbankConfig

    return Fbank(FbankConfig(
        sampling_rate=SAMPLE_RATE, frame_length=MEL.frame_length, frame_shift=MEL.frame_shift,
        window_type="hanning", preemph_coeff=0.0, remove_dc_offset=False, dither=0.0,
        low_freq=MEL.low_freq, high_freq=MEL.high_freq, num_filters=MEL.num_mels))


def log_mel(samples: np.ndarray) -> np.ndarray:
    """(frames, num_mels) float32 log mel power of 16 kHz mono ``samples``."""
    return extractor().extract(np.asarray(samples, dtype=np.float32), SAMPLE_RATE)


def mel_bank() -> torch.Tensor:
    """(fft_length // 2 + 1, num_mels): lhotse's mel filters as the extractor applies them."""
    from lhotse.features.kaldi.layers import create_mel_scale

    return create_mel_scale(MEL.num_mels, MEL.fft_length, SAMPLE_RATE, MEL.low_freq, MEL.high_freq,
                            norm_filters=False)
