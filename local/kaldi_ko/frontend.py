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
i-vector extractor) are computed by :mod:`local.kaldi_ko.ivector`.
"""
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

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


def compute_mfcc(samples: np.ndarray, sample_rate: int, opts: Any) -> np.ndarray:
    """MFCC (T, num_ceps) of mono ``samples`` in [-1, 1] at ``sample_rate`` Hz."""
    import kaldi_native_fbank as knf

    if sample_rate != opts.frame_opts.samp_freq:
        raise ValueError(f"audio at {sample_rate} Hz; the model's features are at "
                         f"{opts.frame_opts.samp_freq:g} Hz: resample first")
    mfcc = knf.OnlineMfcc(opts)
    mfcc.accept_waveform(float(sample_rate), (np.asarray(samples, dtype=np.float32).reshape(-1) * 32768).tolist())
    mfcc.input_finished()
    return np.array([mfcc.get_frame(i) for i in range(mfcc.num_frames_ready)], dtype=np.float32).reshape(
        -1, opts.num_ceps)
