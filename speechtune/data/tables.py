"""Kaldi text tables: one ``<key> <value>`` per line, the format of a data dir's ``wav.scp``,
``text``, ``utt2spk``, of decode's ``hyp.txt`` and of a lang dir's ``words.txt`` and
``lexicon.txt``. The one reader and writer every stage uses::

    texts = read_table(Path("data/corpus/target/train/text"))     # {"tgt-spk01-train-00003": "TURN OFF ..."}
    hyps = read_word_table(Path("exp/finetuned/decode/target_test/hlg/hyp.txt"))  # {utt: [words]}
    write_table(Path("hyp.txt"), [("utt1", "TURN ON"), ("utt2", "")])   # "utt2" alone: no words

The key ends at the first space or tab (Kaldi accepts either); a UTF-8 byte-order mark before
the first key is dropped. A duplicate key, a line that starts with whitespace or a
key that is not UTF-8 is an error naming the file and line: Kaldi's tools would silently use
one of two lines, and which one is a wrong result waiting to happen.
"""
from pathlib import Path
from typing import Dict, Iterable, List, Literal, Tuple, Union, overload

from speechtune.errors import StageError

UTF8_BOM = b"\xef\xbb\xbf"


@overload
def read_table(path: Path, binary_values: Literal[False] = ..., missing: str = ...) -> Dict[str, str]: ...
@overload
def read_table(path: Path, binary_values: Literal[True], missing: str = ...) -> Dict[str, bytes]: ...


def read_table(path: Path, binary_values: bool = False,
               missing: str = "check the path") -> Union[Dict[str, str], Dict[str, bytes]]:
    """``{key: value}`` of a Kaldi table, values stripped. ``binary_values`` leaves them
    undecoded (a transcript that is not UTF-8 then skips one utterance, not the whole set);
    ``missing`` is the fix a missing file's error names."""
    path = Path(path)
    if not path.is_file():
        raise StageError(f"{path} is missing: {missing}")
    table: Dict[str, Union[str, bytes]] = {}
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.rstrip(b"\r\n")
            if lineno == 1 and line.startswith(UTF8_BOM):  # an editor's mark, not part of the first id
                line = line[len(UTF8_BOM):]
            if not line.strip():
                continue
            if line[:1].isspace():
                raise StageError(f"{path}:{lineno}: expected '<id> <value>', got {line[:80]!r}")
            key_bytes, *rest = line.split(None, 1)
            value = rest[0].strip() if rest else b""
            try:
                key = key_bytes.decode("utf-8")
            except UnicodeDecodeError:
                raise StageError(f"{path}:{lineno}: the id is not UTF-8; re-encode the file as UTF-8") from None
            if key in table:
                raise StageError(
                    f"{path}:{lineno}: duplicate id '{key}'; every id must be unique "
                    f"(Kaldi's utils/fix_data_dir.sh does not fix this: rename one of them)"
                )
            if binary_values:
                table[key] = value
            else:
                try:
                    table[key] = value.decode("utf-8")
                except UnicodeDecodeError:
                    raise StageError(f"{path}:{lineno}: not UTF-8; re-encode the file as UTF-8") from None
    return table  # type: ignore[return-value]


def read_word_table(path: Path, missing: str = "check the path") -> Dict[str, List[str]]:
    """``{utterance: words}`` of a ``text``-format table (``hyp.txt``, ``ref.txt``)."""
    return {key: value.split() for key, value in read_table(path, missing=missing).items()}


def write_table(path: Path, rows: Iterable[Tuple[str, str]]) -> None:
    """Write ``key value`` lines in the order given (a key alone where the value is empty)."""
    Path(path).write_text("".join(f"{key} {value}".rstrip() + "\n" for key, value in rows), encoding="utf-8")
