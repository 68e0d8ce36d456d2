"""Mel spectrogram to audio, behind one interface so that a neural vocoder can plug in::

    vocoder = VOCODERS.get("griffin_lim")(iterations=32)
    samples = vocoder.vocode(mel)          # (frames, 80) log mel -> 16 kHz float32 in [-1, 1]

A vocoder registers under a name (``@VOCODERS.register("name")``) and implements ``vocode``;
the config's ``tts.vocoder`` names it.
"""
from typing import Type

import numpy as np
import torch

from speechtune.registry import Registry
from speechtune.tts.features import MEL, mel_bank


class Vocoder:
    """Turns a log mel spectrogram (:func:`speechtune.tts.features.log_mel`) into samples."""

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        raise NotImplementedError


VOCODERS: "Registry[Type[Vocoder]]" = Registry("vocoder")


@VOCODERS.register("griffin_lim")
class GriffinLim(Vocoder):
    """torchaudio's Griffin-Lim on the linear magnitudes the mel frames imply: mel power back to
    linear power by the mel bank's least-squares inverse (clipped at 0), its square root as the
    magnitude, then ``iterations`` of phase estimation (momentum 0.99, torchaudio's default)."""

    def __init__(self, iterations: int = 32) -> None:
        import torchaudio

        self.iterations = iterations
        self.inverse_bank = torch.linalg.pinv(mel_bank())  # (num_mels, bins)
        self.griffin_lim = torchaudio.transforms.GriffinLim(
            n_fft=MEL.fft_length, win_length=MEL.win_length, hop_length=MEL.hop_length,
            n_iter=iterations, power=1.0)

    def vocode(self, mel: np.ndarray) -> np.ndarray:
        mel_power = torch.from_numpy(np.exp(np.asarray(mel, dtype=np.float32)))
        linear_power = (mel_power @ self.inverse_bank).clamp(min=0.0)
        # torch.stft pads half an FFT at each end: a synthesis that stopped after a frame or two
        # is padded with silent frames to a length it accepts, and trimmed back after.
        frames = len(linear_power)
        short = max(0, MEL.fft_length // MEL.hop_length + 1 - frames)
        magnitude = torch.cat([linear_power.sqrt(), linear_power.new_zeros(short, linear_power.shape[1])])
        with torch.no_grad():
            samples = self.griffin_lim(magnitude.T.contiguous())[:frames * MEL.hop_length]
        peak = float(samples.abs().max()) if samples.numel() else 0.0
        # lhotse's frames are not normalized by the window's energy as torch.stft's inverse
        # expects, so the level comes back off by a constant: scale to a safe peak instead.
        return (samples / peak * 0.9 if peak > 0 else samples).numpy().astype(np.float32)
