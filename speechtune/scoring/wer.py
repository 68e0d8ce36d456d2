"""Word error rate the way Kaldi reports it, with kaldialign doing the alignment.

Reads a decode directory written by ``decode`` -- ``ref.txt`` and ``hyp.txt`` (Kaldi ``text``
format: ``<utt-id> <word> <word> ...``; an utterance with no words is its id alone) and
``utt2spk`` -- and writes beside them::

    wer.txt       %WER 12.34 [ 123 / 997, 10 ins, 20 del, 93 sub ]   (Kaldi's line, first)
                  %SER 30.00 [ 3 / 10 ]
                  Scored 10 sentences, 0 not present in hyp.
    per_utt.txt   per utterance: ref / hyp / op rows aligned, and #csid counts (Kaldi's
                  wer_per_utt_details.pl layout)
    per_spk.txt   per speaker: sentences, words, corr, sub, ins, del, %WER
    wer.json      {"wer", "words", "ins", "del", "sub", "sentences", "sentence_errors"}

Usage (the ``score`` stage)::

    total = score_decode_dir(Path("exp/finetuned/decode/target_test/hlg"))
    total.kaldi_line()     # '%WER 23.18 [ 211 / 910, 20 ins, 60 del, 131 sub ]'

Every reference utterance must have a hypothesis line: a missing one is an error (Kaldi's
``compute-wer --mode=strict``), since scoring only what happens to be present flatters a system.
"""
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import kaldialign

from speechtune.data.tables import read_word_table
from speechtune.errors import StageError
from speechtune.provenance import atomic_file

EPS = "***"
DECODE_FIRST = "run the decode stage first"


@dataclass
class ErrorCounts:
    """Word errors summed over utterances (and sentence errors, for %SER)."""

    words: int = 0
    ins: int = 0
    dels: int = 0
    subs: int = 0
    sentences: int = 0
    sentence_errors: int = 0

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def wer(self) -> float:
        return 100.0 * self.errors / self.words if self.words else 0.0

    def add(self, other: "ErrorCounts") -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def kaldi_line(self) -> str:
        return (
            f"%WER {self.wer:.2f} [ {self.errors} / {self.words}, "
            f"{self.ins} ins, {self.dels} del, {self.subs} sub ]"
        )

    def as_json(self) -> Dict[str, float]:
        return {
            "wer": round(self.wer, 4), "words": self.words, "ins": self.ins, "del": self.dels,
            "sub": self.subs, "sentences": self.sentences, "sentence_errors": self.sentence_errors,
        }


def align_utterance(ref: Sequence[str], hyp: Sequence[str]) -> Tuple[ErrorCounts, List[Tuple[str, str]]]:
    """Errors of one utterance and its alignment (pairs, ``***`` for the empty side)."""
    alignment = kaldialign.align(ref, hyp, EPS) if (ref or hyp) else []
    counts = ErrorCounts(words=len(ref), sentences=1)
    for r, h in alignment:
        if r == EPS:
            counts.ins += 1
        elif h == EPS:
            counts.dels += 1
        elif r != h:
            counts.subs += 1
    counts.sentence_errors = int(counts.errors > 0)
    return counts, alignment


def _per_utt_rows(utt: str, alignment: List[Tuple[str, str]], counts: ErrorCounts) -> List[str]:
    ops = ["I" if r == EPS else "D" if h == EPS else "C" if r == h else "S" for r, h in alignment]
    widths = [max(len(r), len(h), 1) for r, h in alignment]
    correct = counts.words - counts.dels - counts.subs
    return [
        f"{utt} ref  " + " ".join(r.ljust(w) for (r, _), w in zip(alignment, widths)),
        f"{utt} hyp  " + " ".join(h.ljust(w) for (_, h), w in zip(alignment, widths)),
        f"{utt} op   " + " ".join(o.ljust(w) for o, w in zip(ops, widths)),
        f"{utt} #csid {correct} {counts.subs} {counts.ins} {counts.dels}",
    ]


def score(
    refs: Dict[str, List[str]], hyps: Dict[str, List[str]], utt2spk: Dict[str, str]
) -> Tuple[ErrorCounts, Dict[str, ErrorCounts], List[str]]:
    """Total errors, errors per speaker, and the per-utterance alignment rows."""
    total = ErrorCounts()
    per_speaker: Dict[str, ErrorCounts] = {}
    rows: List[str] = []
    for utt in sorted(refs):
        counts, alignment = align_utterance(refs[utt], hyps[utt])
        total.add(counts)
        per_speaker.setdefault(utt2spk.get(utt, "unknown"), ErrorCounts()).add(counts)
        rows.extend(_per_utt_rows(utt, alignment, counts))
    return total, per_speaker, rows


def score_decode_dir(decode_dir: Path) -> ErrorCounts:
    """Score ``decode_dir`` (ref.txt, hyp.txt, utt2spk) and write the files listed above."""
    decode_dir = Path(decode_dir)
    refs = read_word_table(decode_dir / "ref.txt", missing=DECODE_FIRST)
    hyps = read_word_table(decode_dir / "hyp.txt", missing=DECODE_FIRST)
    missing = sorted(set(refs) - set(hyps))
    if missing:
        raise StageError(
            f"{decode_dir / 'hyp.txt'} lacks {len(missing)} of {len(refs)} utterances of "
            f"ref.txt (first: {missing[0]}); rerun decode, which writes one line per utterance"
        )
    utt2spk = {utt: words[0] for utt, words in read_word_table(decode_dir / "utt2spk", missing=DECODE_FIRST).items() if words}
    total, per_speaker, rows = score(refs, hyps, utt2spk)
    extra = len(set(hyps) - set(refs))
    outputs = {
        "wer.txt": (
            f"{total.kaldi_line()}\n"
            f"%SER {100.0 * total.sentence_errors / max(total.sentences, 1):.2f} "
            f"[ {total.sentence_errors} / {total.sentences} ]\n"
            f"Scored {total.sentences} sentences, 0 not present in hyp"
            + (f", {extra} hyps without a reference ignored" if extra else "") + ".\n"
        ),
        "per_utt.txt": "\n".join(rows) + "\n",
        "per_spk.txt": "".join(
            [f"{'SPEAKER':<24} {'#SENT':>6} {'#WORD':>6} {'Corr':>6} {'Sub':>5} {'Ins':>5} {'Del':>5} {'%WER':>7}\n"]
            + [
                f"{spk:<24} {c.sentences:>6} {c.words:>6} {c.words - c.subs - c.dels:>6} "
                f"{c.subs:>5} {c.ins:>5} {c.dels:>5} {c.wer:>7.2f}\n"
                for spk, c in sorted(per_speaker.items())
            ]
        ),
        "wer.json": json.dumps(
            {**total.as_json(), "per_speaker": {s: c.as_json() for s, c in sorted(per_speaker.items())}},
            indent=2,
        ) + "\n",
    }
    for name, content in outputs.items():
        with atomic_file(decode_dir / name) as tmp:
            tmp.write_text(content, encoding="utf-8")
    return total
