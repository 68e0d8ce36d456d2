"""Transcript normalization shared by every stage that reads or compares words.

The rule, applied to the embedded corpus, imported Kaldi data dirs and (later) scoring alike:

1. Unicode NFKC, so full-width letters and ligatures become plain letters; terminal escape
   sequences (``\x1b[31m``) are removed.
2. Hyphens, dashes and slashes separate words ("next-to-last" -> "NEXT TO LAST").
3. Apostrophes are kept inside words ("don't" -> "DON'T"); curly ones become "'";
   leading/trailing apostrophes (quotes) are dropped.
4. Every other character that is not a letter or a digit is removed.
5. Upper case (as LibriSpeech and icefall's lang dirs), single spaces, no leading/trailing space.

Digits are kept as they are: the normalizer never guesses how a number was read. The embedded
corpus writes numbers as words, and drops source sentences that contain digits. The OOV word
``<UNK>`` passes unchanged (it is what :func:`apply_markup` makes of Kaldi's ``<unk>``).

Corpus markup is not speech: :func:`apply_markup` maps the configured tags (``<unk>``) to the
OOV word and drops the non-speech ones (``[laughter]``, ``<noise>``) before normalization, so
they never become the words UNK or LAUGHTER; every other ``<...>`` or ``[...]`` token is
dropped too and counted as unlisted.

>>> normalize_text("Set a timer -- for ten minutes, please!")
'SET A TIMER FOR TEN MINUTES PLEASE'
>>> normalize_text("the 'next-to-last' column")
'THE NEXT TO LAST COLUMN'
"""
import collections
import re
import unicodedata
from typing import Counter, Iterable, Tuple

OOV_WORD = "<UNK>"  # words.txt's unknown word (icefall's); the lexicon pronounces it as noise
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[@-_]")
_SEPARATORS = re.compile(r"[-\u2010-\u2015/_]+")
_NOT_WORD_CHAR = re.compile(r"[^\w' ]+")
_SPACES = re.compile(r"\s+")
_MARKUP = re.compile(r"^(<[^<>]*>|\[[^\[\]]*\])$")


def _normalize_words(text: str) -> str:
    text = text.replace("\u2019", "'").replace("\u2018", "'").replace("`", "'")
    text = _SEPARATORS.sub(" ", text)
    text = _NOT_WORD_CHAR.sub(" ", text)
    words = []
    for word in _SPACES.split(text):
        word = word.replace("_", "").strip("'")
        if word:
            words.append(word.upper())
    return " ".join(words)


def normalize_text(text: str) -> str:
    """Normalize a transcript to the project's word convention (see the module docstring)."""
    text = _ESCAPES.sub("", unicodedata.normalize("NFKC", text))
    words = (token if token == OOV_WORD else _normalize_words(token) for token in text.split())
    return " ".join(word for word in words if word)


def apply_markup(text: str, oov_tags: Iterable[str], drop_tags: Iterable[str]) -> Tuple[str, Counter[str]]:
    """``text`` with each markup token (compared case-insensitively) replaced: ``oov_tags`` by
    the OOV word, ``drop_tags`` and unlisted ``<...>``/``[...]`` tokens removed; and how often
    each happened (``{"<unk> -> <UNK>": 2, "[laughter] dropped": 1, "<xyz> unlisted": 1}``).

    >>> apply_markup("turn <UNK> on [laughter]", ["<unk>"], ["[laughter]"])
    ('turn <UNK> on', Counter({'<unk> -> <UNK>': 1, '[laughter] dropped': 1}))
    """
    oov, drop = {t.lower() for t in oov_tags}, {t.lower() for t in drop_tags}
    kept, counts = [], collections.Counter()
    for token in text.split():
        tag = token.lower()
        if tag in oov:
            kept.append(OOV_WORD)
            counts[f"{tag} -> {OOV_WORD}"] += 1
        elif tag in drop:
            counts[f"{tag} dropped"] += 1
        elif _MARKUP.match(token):
            counts[f"{tag} unlisted"] += 1
        else:
            kept.append(token)
    return " ".join(kept), counts
