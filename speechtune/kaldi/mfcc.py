"""The front end a Kaldi/Vosk model directory asks for: MFCC as its ``conf/mfcc.conf`` says,
computed by kaldi-native-fbank (Kaldi's own algorithm)::

    opts = mfcc_options(Path(model_dir) / "conf" / "mfcc.conf")   # knf.MfccOptions
    feats = compute_mfcc(samples, 16000, opts)                     # (T, 40) float32

``samples`` are floats in [-1, 1] (what soundfile and lhotse give); Kaldi computes features on
16-bit sample values, so they are scaled by 32768 first. The scale matters: with
``use-energy=false`` it shifts the 0th cepstral coefficient by a constant, which the network's
LDA and batch-norm statistics were trained with. Options the file does not set keep Kaldi's
defaults, except ``dither``: Kaldi adds random noise by default (``--dither=1``); here it is 0,
so features are reproducible (set ``--dither`` in the file to change that).

The i-vectors the model also needs (``ivector/``: online CMVN, splicing, LDA+MLLT, diagonal UBM,
i-vector extractor) are computed by :mod:`speechtune.kaldi.ivector`.
"""
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np


def _flag(value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"expected true or false, found {value!r}")
    return value.lower() in ("true", "1")


# Kaldi's option name -> (part of knf.MfccOptions, attribute, conversion).
_OPTIONS: Dict[str, Tuple[str, str, Callable[[str], Any]]] = {
    "sample-frequency": ("frame_opts", "samp_freq", float),
    "frame-shift": ("frame_opts", "frame_shift_ms", float),
    "frame-length": ("frame_opts", "frame_length_ms", float),
    "dither": ("frame_opts", "dither", float),
    "preemphasis-coefficient": ("frame_opts", "preemph_coeff", float),
    "remove-dc-offset": ("frame_opts", "remove_dc_offset", _flag),
    "window-type": ("frame_opts", "window_type", str),
    "round-to-power-of-two": ("frame_opts", "round_to_power_of_two", _flag),
    "blackman-coeff": ("frame_opts", "blackman_coeff", float),
    "snip-edges": ("frame_opts", "snip_edges", _flag),
    "num-mel-bins": ("mel_opts", "num_bins", int),
    "low-freq": ("mel_opts", "low_freq", float),
    "high-freq": ("mel_opts", "high_freq", float),
    "vtln-low": ("mel_opts", "vtln_low", float),
    "vtln-high": ("mel_opts", "vtln_high", float),
    "num-ceps": ("", "num_ceps", int),
    "use-energy": ("", "use_energy", _flag),
    "energy-floor": ("", "energy_floor", float),
    "raw-energy": ("", "raw_energy", _flag),
    "cepstral-lifter": ("", "cepstral_lifter", float),
    "htk-compat": ("", "htk_compat", _flag),
}

# Options that steer resampling, not the features: compute_mfcc asks for audio at the
# configured rate instead.
_RESAMPLING = ("allow-upsample", "allow-downsample")


def read_conf(conf: Path) -> List[Tuple[int, str, str, str]]:
    """The options of a Kaldi config file (``--name=value`` lines, ``#`` comments), as
    ``(line number, name, value, line)``; a bare ``--flag`` has the value ``"true"``, as in
    Kaldi. A line that is not an option is an error naming the file and line::

        for number, name, value, line in read_conf(Path("conf/mfcc.conf")): ...
    """
    options = []
    for number, line in enumerate(Path(conf).read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if not line.startswith("--"):
            raise ValueError(f"{conf}:{number}: expected --name=value, found {line!r}")
        name, equals, value = line[2:].partition("=")
        options.append((number, name, value if equals else "true", line))
    return options


def mfcc_options(conf: Path) -> Any:
    """``knf.MfccOptions`` for a Kaldi ``mfcc.conf`` (``--name=value`` lines, ``#`` comments).
    An option kaldi-native-fbank has no counterpart for is an error naming it and the file."""
    import kaldi_native_fbank as knf

    opts = knf.MfccOptions()
    opts.frame_opts.dither = 0.0
    for number, name, value, line in read_conf(conf):
        if name in _RESAMPLING:
            continue
        if name not in _OPTIONS:
            raise ValueError(f"{conf}:{number}: unsupported MFCC option {line!r} "
                             f"(supported: {', '.join(sorted(_OPTIONS))})")
        where, attr, convert = _OPTIONS[name]
        try:
            setattr(getattr(opts, where) if where else opts, attr, convert(value))
        except ValueError as e:
            raise ValueError(f"{conf}:{number}: --{name}: {e}") from None
    return opts


_RAND_MAX = 2147483647


def _rand_r(state: np.ndarray) -> np.ndarray:
    """glibc's ``rand_r`` on an array of uint32 states (updated in place)."""
    with np.errstate(over="ignore"):
        state *= np.uint32(1103515245)
        state += np.uint32(12345)
        result = (state // np.uint32(65536)) % np.uint32(2048)
        for _ in range(2):
            state *= np.uint32(1103515245)
            state += np.uint32(12345)
            result = (result << np.uint32(10)) ^ ((state // np.uint32(65536)) % np.uint32(1024))
    return result.astype(np.int64)


class KaldiDither:
    """The dither noise a Kaldi program draws (``Dither`` in feat/feature-window.cc, Kaldi's
    default ``--dither=1``, which Vosk keeps): per frame a ``RandomState`` seeded with the C
    library's ``rand() + 27437``, then per sample ``RandGauss`` = sqrt(-2 log u1) cos(2 pi u2)
    from two ``rand_r`` draws (u = (r + 1) / (RAND_MAX + 2)). With the same ``srand(seed)``
    before a Vosk recognizer and before this, the noise is Vosk's::

        noise = KaldiDither(seed=1).noise(num_frames, 400)      # (frames, samples) float32

    ``sqrt_first``: whether the sqrt factor's draw comes first (C++ leaves the order of the two
    draws unspecified; with it first, our features match Vosk's PyPI build: on the Korean test
    set, 24 of 30 best paths equal Vosk's, against 19 with the other order or no dither).
    Uses this process's C library (glibc) ``srand``/``rand``, so it resets their state."""

    def __init__(self, seed: int, scale: float = 1.0, sqrt_first: bool = True):
        self.seed, self.scale, self.sqrt_first = seed, scale, sqrt_first

    def noise(self, num_frames: int, frame_length: int) -> np.ndarray:
        import ctypes

        libc = ctypes.CDLL(None)  # the C library this process (and Vosk, in it) uses
        libc.srand(ctypes.c_uint(self.seed))
        seeds = [(libc.rand() + 27437) & 0xFFFFFFFF for _ in range(num_frames)]
        state = np.array(seeds, dtype=np.uint32)
        noise = np.empty((num_frames, frame_length), dtype=np.float32)
        for i in range(frame_length):
            first = (_rand_r(state) + 1.0) / (_RAND_MAX + 2.0)
            second = (_rand_r(state) + 1.0) / (_RAND_MAX + 2.0)
            u_sqrt, u_cos = (first, second) if self.sqrt_first else (second, first)
            radius = np.sqrt((-2 * np.log(u_sqrt.astype(np.float32).astype(np.float64))).astype(np.float32))
            angle = (2 * np.pi * u_cos.astype(np.float32).astype(np.float64)).astype(np.float32)
            noise[:, i] = radius * np.cos(angle)
        return noise * np.float32(self.scale)


def compute_mfcc(samples: np.ndarray, sample_rate: int, opts: Any,
                 dither: Optional[KaldiDither] = None) -> np.ndarray:
    """MFCC (T, num_ceps) of mono ``samples`` in [-1, 1] at ``sample_rate`` Hz; with ``dither``,
    its noise is added to each frame's samples first, as Kaldi does (snip-edges only)."""
    import kaldi_native_fbank as knf

    if sample_rate != opts.frame_opts.samp_freq:
        raise ValueError(f"audio at {sample_rate} Hz; the model's features are at "
                         f"{opts.frame_opts.samp_freq:g} Hz: resample first")
    scaled = np.asarray(samples, dtype=np.float32).reshape(-1) * 32768
    if dither is None:
        mfcc = knf.OnlineMfcc(opts)
        mfcc.accept_waveform(float(sample_rate), scaled.tolist())
        mfcc.input_finished()
        return np.array([mfcc.get_frame(i) for i in range(mfcc.num_frames_ready)], dtype=np.float32).reshape(
            -1, opts.num_ceps)
    if not opts.frame_opts.snip_edges:
        raise ValueError("dither is only supported with --snip-edges=true")
    length = int(sample_rate * opts.frame_opts.frame_length_ms / 1000)
    shift = int(sample_rate * opts.frame_opts.frame_shift_ms / 1000)
    num_frames = 0 if len(scaled) < length else 1 + (len(scaled) - length) // shift
    windows = scaled[np.arange(num_frames)[:, None] * shift + np.arange(length)[None, :]]
    windows = windows + dither.noise(num_frames, length)
    frames = []
    for window in windows:  # each frame on its own: its samples carry their own noise
        mfcc = knf.OnlineMfcc(opts)
        mfcc.accept_waveform(float(sample_rate), window.tolist())
        frames.append(mfcc.get_frame(0))
    return np.array(frames, dtype=np.float32).reshape(-1, opts.num_ceps)
