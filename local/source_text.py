"""The source domain's sentences: the example sentences of WordNet 3.0.

WordNet's glosses quote short usage examples ("she rubbed down her child with a sponge"):
about 48,000 phrases and sentences of everyday English, installed by the Debian package
wordnet-base. They are normalized with ``speechtune.text.normalize_text``; those with digits are
dropped, since how a digit string was read is a guess::

    >>> sentences = wordnet_sentences(min_words=4, max_words=20)
    >>> len(sentences) > 30000, sentences == sorted(set(sentences))
    (True, True)
"""
import collections
import re
from pathlib import Path
from typing import Iterator, List, Optional

from speechtune.text import normalize_text

WORDNET_DIR = Path("/usr/share/wordnet")
WORDNET_FILES = tuple(f"data.{pos}" for pos in ("noun", "verb", "adj", "adv"))

_QUOTED = re.compile(r'"([^"]+)"')
_DIGIT = re.compile(r"\d")


def wordnet_examples(wordnet_dir: Path = WORDNET_DIR) -> Iterator[str]:
    """The quoted examples of every synset's gloss, as written.

    A data line is ``<offset> <lex_filenum> <ss_type> ... | <gloss>``; lines starting with two
    spaces are the license header.
    """
    for name in WORDNET_FILES:
        with open(Path(wordnet_dir) / name, encoding="ascii") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:
                    continue
                yield from _QUOTED.findall(line.split(" | ", 1)[1])


def wordnet_sentences(
    min_words: int, max_words: int, vocabulary_size: Optional[int] = None,
    wordnet_dir: Path = WORDNET_DIR,
) -> List[str]:
    """Distinct normalized examples of ``min_words``..``max_words`` words without digits, sorted.

    With ``vocabulary_size``, only sentences whose every word is among the that many most
    frequent words of those examples are kept: WordNet's long tail of rare words (one per
    synset) would otherwise leave a fifth of the test words unseen in training, which no
    model trained in minutes can recognize.
    """
    sentences = set()
    for example in wordnet_examples(wordnet_dir):
        sentence = normalize_text(example)
        if min_words <= len(sentence.split()) <= max_words and not _DIGIT.search(sentence):
            sentences.add(sentence)
    if vocabulary_size is not None:
        counts = collections.Counter(word for sentence in sentences for word in sentence.split())
        # Ties broken by the word, not by Counter's first-seen order: that of a set of strings,
        # which string hashing (PYTHONHASHSEED) reorders in every process.
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
        vocabulary = {word for word, _ in ranked[:vocabulary_size]}
        sentences = {s for s in sentences if all(word in vocabulary for word in s.split())}
    return sorted(sentences)
