"""Stage ``score``: word error rate the way Kaldi reports it, with kaldialign doing the alignment.

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

Usage::

    python -m stages.score exp/finetuned/decode/target_test/hlg --copy-to exp/finetuned/wer.txt

Every reference utterance must have a hypothesis line: a missing one is an error (Kaldi's
``compute-wer --mode=strict``), since scoring only what happens to be present flatters a system.
"""
import argparse
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import kaldialign

from stages.cli import StageError, run_cli
from stages.provenance import atomic_file

EPS = "***"


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


def read_text_table(path: Path) -> Dict[str, List[str]]:
    """Read a Kaldi ``text`` file into utt-id -> words; duplicate ids are an error."""
    if not Path(path).is_file():
        raise StageError(f"{path} is missing: run the decode stage first")
    table: Dict[str, List[str]] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            fields = line.split()
            if not fields:
                continue
            if fields[0] in table:
                raise StageError(f"{path}:{lineno}: duplicate utterance id '{fields[0]}'")
            table[fields[0]] = fields[1:]
    return table


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
    refs = read_text_table(decode_dir / "ref.txt")
    hyps = read_text_table(decode_dir / "hyp.txt")
    missing = sorted(set(refs) - set(hyps))
    if missing:
        raise StageError(
            f"{decode_dir / 'hyp.txt'} lacks {len(missing)} of {len(refs)} utterances of "
            f"ref.txt (first: {missing[0]}); rerun decode, which writes one line per utterance"
        )
    utt2spk = {utt: words[0] for utt, words in read_text_table(decode_dir / "utt2spk").items() if words}
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


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m stages.score", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("decode_dir", type=Path, help="holds ref.txt, hyp.txt, utt2spk")
    parser.add_argument("--copy-to", type=Path, default=None, help="also copy wer.txt here")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = get_parser().parse_args(argv)
    total = score_decode_dir(args.decode_dir)
    print(total.kaldi_line())
    if args.copy_to is not None:
        with atomic_file(args.copy_to) as tmp:
            shutil.copyfile(args.decode_dir / "wer.txt", tmp)


if __name__ == "__main__":
    run_cli(main)
