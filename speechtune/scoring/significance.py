"""Bootstrap confidence intervals for a WER and for the WER difference of two systems.

The method of Kaldi's ``compute-wer-bootci`` (Bisani & Ney, "Bootstrap estimates for confidence
intervals in ASR performance evaluation", ICASSP 2004): the utterances of a test set are
resampled with replacement, each replication's WER is its resampled errors over its resampled
reference words, and the spread of those WERs is the uncertainty that the choice of test
utterances puts on the score. Two systems on the same test set are resampled together (the
same utterances in each replication), so their difference keeps the pairing::

    >>> from speechtune.scoring.significance import wer_ci, wer_difference_ci, format_difference
    >>> d = "exp/{}/decode/target_test/hlg/"
    >>> wer_ci(d.format("finetuned") + "ref.txt", d.format("finetuned") + "hyp.txt")
    {'wer': 23.18, 'ci_low': 16.69, 'ci_high': 30.41, 'level': 0.95, 'utterances': 116, ...}
    >>> diff = wer_difference_ci(d.format("pretrained") + "ref.txt",
    ...                          d.format("pretrained") + "hyp.txt", d.format("finetuned") + "hyp.txt")
    >>> format_difference(diff, "pretrained", "finetuned")
    'finetuned vs pretrained: −72.8 abs, 95% CI [−79.7, −65.4], P(improvement) = 1.00'

Point estimates are the WERs of the whole test set (``speechtune.scoring.wer``'s numbers, to the digit);
intervals are percentiles of the replications; P(improvement) is the fraction of replications
in which system B makes fewer errors than system A (Kaldi's "probability of improvement").

kaldialign's ``bootstrap_wer_ci`` implements compute-wer-bootci too, but its interval is the
normal approximation (bootstrap mean +- 1.96 standard deviations, symmetric, unbounded at 0),
its centre is the bootstrap mean rather than the test set's WER, it has no interval for the
difference of two systems, and its resampling is a C++ generator that numpy cannot reproduce;
hence this numpy version (the tests check it against kaldialign's).
"""
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Sequence, Tuple, Union

import numpy as np

from speechtune.data.tables import read_word_table
from speechtune.errors import StageError
from speechtune.scoring.wer import DECODE_FIRST, align_utterance

PathLike = Union[str, Path]
DEFAULT_REPLICATIONS = 1000
DEFAULT_SEED = 0
DEFAULT_LEVEL = 0.95
# Resampled utterance indices held in memory at once (times 8 bytes and the columns summed).
_MAX_INDICES_PER_BLOCK = 1 << 20


@dataclass(frozen=True)
class UtteranceErrors:
    """Word errors and reference words per utterance of one system on one test set."""

    ref_path: Path
    hyp_path: Path
    utterances: Tuple[str, ...]
    references: Tuple[Tuple[str, ...], ...]
    errors: np.ndarray
    words: np.ndarray

    @property
    def wer(self) -> float:
        return 100.0 * float(self.errors.sum()) / float(self.words.sum())


def utterance_errors(ref_path: PathLike, hyp_path: PathLike) -> UtteranceErrors:
    """Align each utterance of ``hyp_path`` to ``ref_path`` (Kaldi ``text`` files, as ``decode``
    writes them) and count its errors the way :mod:`speechtune.scoring.wer` does.

    Both files must hold the same utterance ids: a hypothesis missing, or one without a
    reference, is an error naming both files::

        >>> e = utterance_errors("exp/finetuned/decode/target_test/hlg/ref.txt",
        ...                      "exp/finetuned/decode/target_test/hlg/hyp.txt")
        >>> e.wer, len(e.utterances)
        (23.178807947019866, 116)
    """
    ref_path, hyp_path = Path(ref_path), Path(hyp_path)
    refs = read_word_table(ref_path, missing=DECODE_FIRST)
    hyps = read_word_table(hyp_path, missing=DECODE_FIRST)
    if set(refs) != set(hyps):
        missing, extra = sorted(set(refs) - set(hyps)), sorted(set(hyps) - set(refs))
        problems = [f"lacks {len(missing)} utterances of {ref_path} (first: {missing[0]})"] if missing else []
        problems += [f"has {len(extra)} utterances {ref_path} lacks (first: {extra[0]})"] if extra else []
        raise StageError(
            f"{hyp_path} {' and '.join(problems)}: a confidence interval needs the hypotheses of "
            f"exactly the reference's utterances; decode the same test set"
        )
    utterances = tuple(sorted(refs))
    counts = [align_utterance(refs[utt], hyps[utt])[0] for utt in utterances]
    words = np.array([c.words for c in counts], dtype=np.int64)
    if words.sum() == 0:
        raise StageError(f"{ref_path} holds no reference words: there is no WER to bound")
    return UtteranceErrors(
        ref_path, hyp_path, utterances, tuple(tuple(refs[utt]) for utt in utterances),
        np.array([c.errors for c in counts], dtype=np.int64), words,
    )


def _resampled_sums(columns: np.ndarray, replications: int, seed: int) -> np.ndarray:
    """Column sums of ``columns`` (utterances x k) over ``replications`` resamplings of its rows
    with replacement: (replications x k). The same seed and row count give the same resamplings."""
    if replications < 1:
        raise ValueError(f"replications must be at least 1, got {replications}")
    rng = np.random.default_rng(seed)
    num_utts = len(columns)
    block = max(1, _MAX_INDICES_PER_BLOCK // num_utts)
    sums = []
    for start in range(0, replications, block):
        indices = rng.integers(0, num_utts, size=(min(block, replications - start), num_utts))
        sums.append(columns[indices].sum(axis=1))
    return np.concatenate(sums)


def _percent(errors: np.ndarray, words: np.ndarray) -> np.ndarray:
    # A replication that drew only empty references has no words: its WER counts as 0.
    return np.divide(100.0 * errors, words, out=np.zeros(len(errors)), where=words > 0)


def _interval(values: np.ndarray, level: float) -> Tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level}")
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def _summary(errors: UtteranceErrors, replicated_wer: np.ndarray, level: float) -> Dict[str, Any]:
    low, high = _interval(replicated_wer, level)
    return {
        "wer": errors.wer, "ci_low": low, "ci_high": high, "level": level,
        "utterances": len(errors.utterances), "words": int(errors.words.sum()),
        "errors": int(errors.errors.sum()),
    }


def bootstrap_wer(
    errors: UtteranceErrors, replications: int = DEFAULT_REPLICATIONS, seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> Dict[str, Any]:
    """WER and its bootstrap percentile interval from per-utterance counts::

        >>> bootstrap_wer(utterance_errors(ref, hyp), replications=1000, seed=0)
        {'wer': 23.18, 'ci_low': 16.69, 'ci_high': 30.41, 'level': 0.95, 'utterances': 116,
         'words': 906, 'errors': 210, 'replications': 1000, 'seed': 0}
    """
    sums = _resampled_sums(np.stack([errors.errors, errors.words], axis=1), replications, seed)
    return {**_summary(errors, _percent(sums[:, 0], sums[:, 1]), level),
            "replications": replications, "seed": seed}


def bootstrap_mean(
    values: Sequence[float], replications: int = DEFAULT_REPLICATIONS, seed: int = DEFAULT_SEED,
    level: float = DEFAULT_LEVEL,
) -> Dict[str, Any]:
    """The mean of per-utterance ``values`` (an MCD, a similarity; or two systems' paired
    differences on the same utterances) and its bootstrap percentile interval over utterances::

        >>> bootstrap_mean([6.1, 7.3, 5.8], replications=1000, seed=0)
        {'mean': 6.4, 'ci_low': 5.8, 'ci_high': 7.3, 'level': 0.95, 'utterances': 3}
    """
    column = np.asarray(values, dtype=np.float64)[:, None]
    if len(column) == 0:
        raise ValueError("bootstrap_mean needs at least one value")
    low, high = _interval(_resampled_sums(column, replications, seed)[:, 0] / len(column), level)
    return {"mean": float(column.mean()), "ci_low": low, "ci_high": high, "level": level, "utterances": len(column)}


def check_same_test_set(a: UtteranceErrors, b: UtteranceErrors) -> None:
    """Raise StageError, naming the files, unless ``a`` and ``b`` score the same utterances
    against the same reference words (two systems decoded on one test set)."""
    if a.utterances != b.utterances:
        only_a, only_b = sorted(set(a.utterances) - set(b.utterances)), sorted(set(b.utterances) - set(a.utterances))
        example = f"{only_a[0]} only in the first" if only_a else f"{only_b[0]} only in the second"
        raise StageError(
            f"{a.hyp_path} and {b.hyp_path} are not on the same utterances ({len(only_a)} ids only in "
            f"the first, {len(only_b)} only in the second, e.g. {example}): compare two systems "
            f"decoded on the same test set"
        )
    if a.references != b.references:
        utt = next(u for u, ra, rb in zip(a.utterances, a.references, b.references) if ra != rb)
        raise StageError(
            f"{a.ref_path} and {b.ref_path} give utterance {utt} different reference words: "
            f"compare two systems decoded on the same test set"
        )


def bootstrap_difference(
    a: UtteranceErrors, b: UtteranceErrors, replications: int = DEFAULT_REPLICATIONS,
    seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL,
) -> Dict[str, Any]:
    """B's WER minus A's (negative: B is better), with each system's interval, the interval of
    the difference and P(improvement), from paired resamplings of the shared utterances::

        >>> bootstrap_difference(utterance_errors(ref, hyp_pretrained), utterance_errors(ref, hyp_finetuned))
        {'a': {'wer': 96.03, 'ci_low': ...}, 'b': {'wer': 23.18, ...}, 'difference': -72.85,
         'ci_low': -79.74, 'ci_high': -65.35, 'p_improvement': 1.0, 'level': 0.95, ...}

    A and B must score the same utterances against the same reference words
    (:func:`check_same_test_set`).
    """
    check_same_test_set(a, b)
    sums = _resampled_sums(np.stack([a.errors, b.errors, a.words], axis=1), replications, seed)
    wer_a, wer_b = _percent(sums[:, 0], sums[:, 2]), _percent(sums[:, 1], sums[:, 2])
    low, high = _interval(wer_b - wer_a, level)
    return {
        "a": _summary(a, wer_a, level), "b": _summary(b, wer_b, level),
        "difference": b.wer - a.wer, "ci_low": low, "ci_high": high,
        "p_improvement": float(np.mean(sums[:, 1] < sums[:, 0])),
        "level": level, "replications": replications, "seed": seed,
    }


def wer_ci(
    ref_path: PathLike, hyp_path: PathLike, replications: int = DEFAULT_REPLICATIONS,
    seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL,
) -> Dict[str, Any]:
    """The WER of ``hyp_path`` against ``ref_path`` with its bootstrap confidence interval::

        >>> r = wer_ci("exp/finetuned/decode/target_test/hlg/ref.txt",
        ...            "exp/finetuned/decode/target_test/hlg/hyp.txt")
        >>> r["wer"], r["ci_low"], r["ci_high"]
        (23.18, 16.69, 30.41)
    """
    return bootstrap_wer(utterance_errors(ref_path, hyp_path), replications, seed, level)


def wer_difference_ci(
    ref_path: PathLike, hyp_a: PathLike, hyp_b: PathLike, replications: int = DEFAULT_REPLICATIONS,
    seed: int = DEFAULT_SEED, level: float = DEFAULT_LEVEL,
) -> Dict[str, Any]:
    """System B's WER minus system A's on the utterances of ``ref_path``, with its bootstrap
    interval and P(improvement) (the fraction of replications where B makes fewer errors)::

        >>> d = wer_difference_ci("exp/pretrained/decode/target_test/hlg/ref.txt",
        ...                       "exp/pretrained/decode/target_test/hlg/hyp.txt",
        ...                       "exp/finetuned/decode/target_test/hlg/hyp.txt")
        >>> format_difference(d, "pretrained", "finetuned")
        'finetuned vs pretrained: −72.8 abs, 95% CI [−79.7, −65.4], P(improvement) = 1.00'
    """
    return bootstrap_difference(
        utterance_errors(ref_path, hyp_a), utterance_errors(ref_path, hyp_b), replications, seed, level
    )


def _signed(value: float) -> str:
    """One decimal, with a typographic minus (U+2212) or a plus; zero unsigned."""
    text = f"{value:.1f}"
    if text.lstrip("-") == "0.0":
        return "0.0"
    return text.replace("-", "\u2212") if text.startswith("-") else f"+{text}"


def format_difference(result: Dict[str, Any], name_a: str, name_b: str) -> str:
    """One line for a ``wer_difference_ci``/``bootstrap_difference`` result (B vs A)::

        'finetuned vs pretrained: −12.3 abs, 95% CI [−14.0, −10.6], P(improvement) = 1.00'
    """
    return (
        f"{name_b} vs {name_a}: {_signed(result['difference'])} abs, "
        f"{100 * result['level']:.0f}% CI [{_signed(result['ci_low'])}, {_signed(result['ci_high'])}], "
        f"P(improvement) = {result['p_improvement']:.2f}"
    )
