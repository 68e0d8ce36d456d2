"""Transcript normalization shared by every stage that reads or compares words.

The rule, applied to the embedded corpus, imported Kaldi data dirs and (later) scoring alike:

1. Unicode NFKC, so full-width letters and ligatures become plain letters.
2. Hyphens, dashes and slashes separate words ("next-to-last" -> "NEXT TO LAST").
3. Apostrophes are kept inside words ("don't" -> "DON'T"); curly ones become "'";
   leading/trailing apostrophes (quotes) are dropped.
4. Every other character that is not a letter or a digit is removed.
5. Upper case (as LibriSpeech and icefall's lang dirs), single spaces, no leading/trailing space.

Digits are kept as they are: the normalizer never guesses how a number was read. The embedded
corpus writes numbers as words, and drops source sentences that contain digits.

>>> normalize_text("Set a timer -- for ten minutes, please!")
'SET A TIMER FOR TEN MINUTES PLEASE'
>>> normalize_text("the 'next-to-last' column")
'THE NEXT TO LAST COLUMN'
"""
import re
import unicodedata

_SEPARATORS = re.compile(r"[-\u2010-\u2015/_]+")
_NOT_WORD_CHAR = re.compile(r"[^\w' ]+")
_SPACES = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Normalize a transcript to the project's word convention (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = _SEPARATORS.sub(" ", text)
    text = _NOT_WORD_CHAR.sub(" ", text)
    words = []
    for word in _SPACES.split(text):
        word = word.replace("_", "").strip("'")
        if word:
            words.append(word.upper())
    return " ".join(words)
