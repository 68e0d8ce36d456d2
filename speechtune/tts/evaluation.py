"""How good synthesized speech is, measured five ways, each a small function that the TTS
evaluation stage composes (a reference is the target voice's real recording of the same
sentence; audio is 16 kHz float32 in [-1, 1], as :func:`speechtune.tts.features.log_mel` reads)::

    mel_cepstral_distortion(reference, synthesized)           # (6.1, 0.04): dB, DTW-aligned; alignment penalty
    speaker_similarity(synthesized_list, {"target": target_recordings, "source": src_recordings})
                                                              # per utterance: {"target": array([0.82, ...]), ...}
    dnsmos({"utt1": samples})                                 # {"utt1": {"sig": 3.4, "bak": 3.9, "ovrl": 3.0}}
    whisper_wer({"utt1": samples}, {"utt1": "turn on the lights"})   # (12.5, (4.2, 21.0))
    wer_of(refs, hyps)                                        # %WER and its 95% bootstrap interval
    attention_health({"utt1": model.infer(...)}, {"utt1": 42}, {"utt1": 230})

- Mel-cepstral distortion: ``mel-cepstral-distance`` (Kubichek's MCD, 1993) on our own log mel
  frames (:func:`~speechtune.tts.features.log_mel`, the frames the model predicts), its cepstra
  c1..c13 aligned by DTW (fastdtw, radius 10 frames) and averaged over the aligned frames, then
  scaled to the usual dB (see :func:`mel_cepstral_distortion`). Lower is closer. DTW forgives
  timing, also a synthesis that never stopped (its babble aligns to the recording's last
  frames): the package's alignment penalty, ``2 - (N_ref + N_syn) / N_aligned`` (0 for equal
  lengths and no warping, towards 1 for very different ones), says how much warping it took.
- Speaker similarity: the cosine between resemblyzer's d-vectors (GE2E, its weights ship in the
  wheel) of each synthesized utterance and the centroid of a voice's recordings, averaged over
  the utterances: near the target's own recordings' value means the voice was caught; high
  against a source voice means the model kept a pretraining voice.
- DNSMOS P.835 (``speechmos``, its ONNX models in the wheel): SIG, BAK and OVRL as a network
  trained on noise-suppressed speech *predicts* listeners would rate them. A predictor, not a
  MOS: it has never heard a Griffin-Lim vocoder, so it ranks systems at best; only people give a
  MOS (:mod:`speechtune.tts.listening`).
- Intelligibility: Whisper tiny.en (:mod:`speechtune.scoring.whisper`, as bench/peers.py runs
  it) transcribes the synthesized audio and
  :func:`wer_of` scores it against the sentences with :mod:`speechtune.scoring`.
- Attention health: the mean diagonality of the inference alignments
  (:func:`speechtune.tts.training.attention_diagonality`), utterances whose stop token fired
  too early (fewer frames than half the reference's) and those that never stopped.

The speaker encoder, DNSMOS and Whisper are optional installs (``make setup TTS_EVAL=1``:
requirements-tts-eval.txt); without them their functions raise StageError saying so.
"""
import functools
import importlib.util
from pathlib import Path
from typing import Any, Dict, List, Mapping, NamedTuple, Sequence, Tuple

import numpy as np

from speechtune.errors import StageError, import_optional
from speechtune.scoring.significance import (DEFAULT_LEVEL, DEFAULT_REPLICATIONS, DEFAULT_SEED, UtteranceErrors,
                                             bootstrap_mean, bootstrap_wer)
from speechtune.scoring.wer import align_utterance
from speechtune.scoring.whisper import whisper_transcripts
from speechtune.text import normalize_text
from speechtune.tts.features import MEL, SAMPLE_RATE, log_mel
from speechtune.tts.model import Synthesis
from speechtune.tts.training import attention_diagonality

TTS_EVAL_MISSING = "run `make setup TTS_EVAL=1` (requirements-tts-eval.txt)"
MCD_MISSING = "run `make setup` (requirements.txt pins mel-cepstral-distance)"
# c1..c13: the usual count with 80 mel bands (Ref-Tacotron, Capacitron). mel-cepstral-distance's
# cosine transform starts at c1 (it has no energy row), so its s=0 is c1; its s=1 would drop c1.
MCD_FIRST, MCD_COUNT = 0, 13
DTW_RADIUS = 10  # fastdtw's search radius in frames: mel-cepstral-distance's default
EARLY_STOP = 0.5  # a synthesis shorter than this share of the reference's frames stopped too early


def _at_16k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """``samples`` as float32 at 16 kHz, the rate every model here was trained on."""
    samples = np.asarray(samples, dtype=np.float32)
    if sample_rate == SAMPLE_RATE:
        return samples
    from scipy.signal import resample_poly

    return resample_poly(samples, SAMPLE_RATE, sample_rate).astype(np.float32)


class MelCepstralDistortion(NamedTuple):
    db: float
    alignment_penalty: float


def mel_cepstral_distortion(reference: np.ndarray, synthesized: np.ndarray,
                            sample_rate: int = SAMPLE_RATE) -> MelCepstralDistortion:
    """Mel-cepstral distortion in dB between a real recording and a synthesis of the same
    sentence, their frames aligned by DTW (so a slower or faster synthesis is not penalized for
    its timing, only for its spectra); 0 for identical audio, and blind to overall level. With
    it, the alignment penalty of that DTW (see the module docstring): how far the timing was.

    The cepstra are mel-cepstral-distance's (Kubichek): ``C_i = sum_n X_n cos(i (n - 1/2) pi / M)``
    of the M = 80 log10 mel powers X. For the cepstrum of the natural-log amplitude,
    ``c_i = ln(10) / (2 M) * C_i``, the usual dB form ``10 / ln(10) * sqrt(2 * sum_i dc_i^2)``
    (Kominek et al. 2008, as SPTK-based tools report it) becomes ``5 * sqrt(2) / M * |dC|``.
    """
    mcd = import_optional("mel_cepstral_distance", MCD_MISSING)
    mels = []
    for name, samples in (("reference", reference), ("synthesized", synthesized)):
        mel = log_mel(_at_16k(samples, sample_rate))
        if len(mel) == 0:
            raise ValueError(f"the {name} audio is shorter than one frame ({MEL.win_length} samples)")
        mels.append(mel.astype(np.float64) / np.log(10.0))  # natural log -> log10 (Bel), as the package's X
    distance, penalty = mcd.compare_mel_spectrograms(*mels, s=MCD_FIRST, D=MCD_COUNT, aligning="dtw",
                                                     align_target="mfcc", dtw_radius=DTW_RADIUS)
    return MelCepstralDistortion(float(distance) * 5.0 * np.sqrt(2.0) / MEL.num_mels, float(penalty))


@functools.lru_cache(maxsize=None)
def _voice_encoder() -> Any:
    """resemblyzer's GE2E encoder, loaded once per process (its weights ship in the wheel)."""
    resemblyzer = import_optional("resemblyzer", TTS_EVAL_MISSING)
    return resemblyzer.VoiceEncoder(device="cpu", verbose=False)


def speaker_embeddings(recordings: Sequence[np.ndarray], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(recordings, 256) unit-length resemblyzer d-vectors, one per recording; resemblyzer's own
    preprocessing first (level normalized, long silences trimmed by its VAD)."""
    resemblyzer = import_optional("resemblyzer", TTS_EVAL_MISSING)
    encoder = _voice_encoder()
    return np.stack([encoder.embed_utterance(resemblyzer.preprocess_wav(_at_16k(samples, sample_rate)))
                     for samples in recordings])


def speaker_similarity(
    synthesized: Sequence[np.ndarray], voices: Mapping[str, Sequence[np.ndarray]], sample_rate: int = SAMPLE_RATE,
) -> Dict[str, np.ndarray]:
    """Per voice, the cosine between each synthesized utterance's d-vector and the voice's
    centroid (the normalized mean of its recordings' d-vectors, resemblyzer's ``embed_speaker``),
    one per utterance (their mean, with an interval, is the system's similarity)::

        speaker_similarity(synthesized, {"target": target_recordings, "source": source_recordings})
        # {"target": array([0.83, 0.80, ...]), "source": array([0.61, 0.64, ...])}
    """
    if not len(synthesized):
        raise ValueError("no synthesized utterances to compare")
    utterances = speaker_embeddings(synthesized, sample_rate)
    similarity = {}
    for voice, recordings in voices.items():
        if not len(recordings):
            raise ValueError(f"voice {voice!r} has no recordings")
        centroid = speaker_embeddings(recordings, sample_rate).mean(axis=0)
        similarity[voice] = utterances @ (centroid / np.linalg.norm(centroid))
    return similarity


def dnsmos(audio: Mapping[str, np.ndarray], sample_rate: int = SAMPLE_RATE) -> Dict[str, Dict[str, float]]:
    """DNSMOS P.835's predicted SIG (speech), BAK (background) and OVRL (overall) on the 1-5
    scale, per utterance: a predictor of listeners' ratings, never a MOS (see the module
    docstring). Audio shorter than its 9 s window is repeated to fill it, as speechmos does."""
    speechmos = import_optional("speechmos.dnsmos", TTS_EVAL_MISSING)
    scores = {}
    for utt, samples in audio.items():
        # speechmos rejects samples beyond +-1; playing them clips them the same way.
        result = speechmos.run(np.clip(_at_16k(samples, sample_rate), -1.0, 1.0), SAMPLE_RATE)
        scores[utt] = {name: float(result[f"{name}_mos"]) for name in ("sig", "bak", "ovrl")}
    return scores


def wer_of(
    refs: Mapping[str, Sequence[str]], hyps: Mapping[str, Sequence[str]], replications: int = DEFAULT_REPLICATIONS,
    seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL,
) -> Tuple[float, Tuple[float, float]]:
    """%WER of ``hyps`` against ``refs`` (words per utterance id, the same ids in both) and its
    bootstrap interval: :mod:`speechtune.scoring`'s alignment and resampling, so the numbers are
    those the decode stages' scores would be for the same words::

        wer_of({"u1": ["TURN", "ON"]}, {"u1": ["TURN", "OFF"]})    # (50.0, (50.0, 50.0))
    """
    if set(refs) != set(hyps):
        missing, extra = sorted(set(refs) - set(hyps)), sorted(set(hyps) - set(refs))
        raise StageError(
            f"the hypotheses lack {len(missing)} of the {len(refs)} reference utterances (first: "
            f"{(missing or ['-'])[0]}) and have {len(extra)} without a reference (first: {(extra or ['-'])[0]}): "
            f"transcribe exactly the synthesized test sentences")
    utterances = tuple(sorted(refs))
    counts = [align_utterance(list(refs[utt]), list(hyps[utt]))[0] for utt in utterances]
    if sum(c.words for c in counts) == 0:
        raise StageError("the references hold no words: there is no WER to compute")
    # The files utterance_errors would have read: here the words came from memory.
    errors = UtteranceErrors(Path("<refs>"), Path("<hyps>"), utterances, tuple(tuple(refs[u]) for u in utterances),
                             np.array([c.errors for c in counts], dtype=np.int64),
                             np.array([c.words for c in counts], dtype=np.int64))
    result = bootstrap_wer(errors, replications, seed, level)
    return result["wer"], (result["ci_low"], result["ci_high"])


def whisper_wer(audio: Mapping[str, np.ndarray], texts: Mapping[str, str], sample_rate: int = SAMPLE_RATE,
                threads: int = 2) -> Tuple[float, Tuple[float, float]]:
    """Intelligibility: Whisper tiny.en's %WER (and 95% interval) on the synthesized ``audio``
    against the ``texts`` it was synthesized from (normalized as our transcripts)."""
    refs = {utt: normalize_text(text).split() for utt, text in texts.items()}
    at_16k = {utt: _at_16k(samples, sample_rate) for utt, samples in audio.items()}
    return wer_of(refs, whisper_transcripts(at_16k, threads))


def stop_token_errors(frames: Mapping[str, int], reference_frames: Mapping[str, int],
                      stopped: Mapping[str, bool]) -> Dict[str, List[str]]:
    """The utterances whose stop token failed: ``early`` (stopped with fewer frames than
    EARLY_STOP of the reference's: words were dropped) and ``failed`` (never stopped: cut off at
    the frame limit, usually attention stuck or looping). Each list sorted."""
    early = [utt for utt in frames if stopped[utt] and frames[utt] < EARLY_STOP * reference_frames[utt]]
    return {"early": sorted(early), "failed": sorted(utt for utt in frames if not stopped[utt])}


def attention_health(syntheses: Mapping[str, Synthesis], phone_lens: Mapping[str, int],
                     reference_frames: Mapping[str, int]) -> Dict[str, Any]:
    """How well the inference attention held, over utterances synthesized by
    :meth:`~speechtune.tts.model.Tacotron2.infer` (``phone_lens``: each input's phone count;
    ``reference_frames``: the frames of the real recording)::

        {"utterances": 40, "mean_diagonality": 0.91, "stop_token_errors": 3,
         "early": ["u07"], "failed": ["u12", "u31"]}
    """
    if not syntheses:
        raise ValueError("no synthesized utterances to judge")
    diagonality = [attention_diagonality(s.alignment, phone_lens[utt], len(s.alignment))
                   for utt, s in syntheses.items()]
    errors = stop_token_errors({utt: len(s.mel) for utt, s in syntheses.items()}, reference_frames,
                               {utt: s.stopped for utt, s in syntheses.items()})
    return {"utterances": len(syntheses), "mean_diagonality": float(np.mean(diagonality)),
            "stop_token_errors": len(errors["early"]) + len(errors["failed"]), **errors}


# The measures that need an optional install, and the module each needs.
OPTIONAL_MEASURES = {"whisper_wer": "faster_whisper", "speaker_similarity": "resemblyzer", "dnsmos": "speechmos"}


def missing_measures() -> Dict[str, str]:
    """{measure: why it cannot run here} for the optional measures whose package is absent."""
    return {measure: f"{module} is not installed: {TTS_EVAL_MISSING}"
            for measure, module in OPTIONAL_MEASURES.items() if importlib.util.find_spec(module) is None}


def evaluate_synthesis(
    audio: Mapping[str, np.ndarray], texts: Mapping[str, str], references: Mapping[str, np.ndarray],
    source_voices: Mapping[str, Sequence[np.ndarray]], asr_hyps: Mapping[str, Sequence[str]], threads: int = 1,
) -> Dict[str, Any]:
    """Every measure of one system's syntheses (``audio``, of ``texts``) against the target
    voice's recordings of the same sentences (``references``), each per utterance and as a mean
    with its bootstrap interval over utterances:

    - ``mcd_db``: mel-cepstral distortion to the recording, and ``mcd_alignment_penalty``, how
      much DTW warped the synthesis to get it;
    - ``asr_wer``: %WER of ``asr_hyps`` (our recognizer's words for the syntheses);
    - ``whisper_wer``: %WER of Whisper tiny.en's;
    - ``speaker_similarity``: ``target`` (cosine to the recordings' centroid) and ``source``
      (to the nearest of ``source_voices``, {speaker: recordings});
    - ``dnsmos``: predicted SIG, BAK, OVRL (a predictor, not a MOS).

    An optional measure whose package is not installed is ``{"skipped": why}`` (never a number).
    """
    utts = sorted(texts)
    refs = {utt: normalize_text(texts[utt]).split() for utt in utts}
    skipped = missing_measures()
    result: Dict[str, Any] = {"utterances": len(utts)}
    distortions = {utt: mel_cepstral_distortion(references[utt], audio[utt]) for utt in utts}
    for key, field in (("mcd_db", "db"), ("mcd_alignment_penalty", "alignment_penalty")):
        per_utterance = {utt: round(getattr(distortion, field), 4) for utt, distortion in distortions.items()}
        result[key] = {**bootstrap_mean(list(per_utterance.values())), "per_utterance": per_utterance}
    wer, (low, high) = wer_of(refs, {utt: list(asr_hyps[utt]) for utt in utts})
    result["asr_wer"] = {"wer": wer, "ci_low": low, "ci_high": high}
    if "whisper_wer" in skipped:
        result["whisper_wer"] = {"skipped": skipped["whisper_wer"]}
    else:
        wer, (low, high) = wer_of(refs, whisper_transcripts({utt: audio[utt] for utt in utts}, threads))
        result["whisper_wer"] = {"wer": wer, "ci_low": low, "ci_high": high}
    if "speaker_similarity" in skipped:
        result["speaker_similarity"] = {"skipped": skipped["speaker_similarity"]}
    else:
        synthesized = [audio[utt] for utt in utts]
        target = speaker_similarity(synthesized, {"target": [references[utt] for utt in utts]})["target"]
        per_source = speaker_similarity(synthesized, source_voices)
        nearest_source = np.max(np.stack(list(per_source.values())), axis=0)
        result["speaker_similarity"] = {"target": bootstrap_mean(target.tolist()),
                                        "source": bootstrap_mean(nearest_source.tolist()),
                                        "source_voices": len(source_voices)}
    if "dnsmos" in skipped:
        result["dnsmos"] = {"skipped": skipped["dnsmos"]}
    else:
        scores = dnsmos({utt: audio[utt] for utt in utts})
        result["dnsmos"] = {name: bootstrap_mean([scores[utt][name] for utt in utts])
                            for name in ("sig", "bak", "ovrl")}
    return result
