"""Kaldi's basic-type I/O, reading and writing, in binary or text mode: the layer every Kaldi
model file (nnet3 models, i-vector extractors, GMMs) is parsed with::

    reader = KaldiReader(Path("am/final.mdl").read_bytes(), "am/final.mdl")
    reader.expect("<TransitionModel>")
    matrix = reader.matrix()            # numpy float32

    writer = KaldiWriter(binary=True)
    writer.token("<Nnet3>")
    Path("copy.mdl").write_bytes(writer.getvalue())

Binary format, as Kaldi's ``io-funcs``/``kaldi-matrix`` write it: the file starts with ``\\0B``;
tokens are strings ending with a space; an int32 is the byte 4 and four little-endian bytes; a
float is the byte 4 and a float32 (or 8 and a float64); a bool is ``T`` or ``F``; matrices are
``FM``/``DM``, rows, cols, then the data; vectors ``FV``/``DV``, size, data; integer vectors a
byte 4, a raw int32 count, the data. Compressed matrices (``CM``, ``CM2``, ``CM3``) are not
supported (no released chain ``final.mdl`` stores its weights compressed).
"""
import math
import struct
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Union

import numpy as np

from speechtune.errors import StageError

PathLike = Union[str, Path]
FieldValue = Any  # int | float | bool | None | np.ndarray | List[int] | Tuple[...]


class KaldiFormatError(StageError):
    """A file that is not a Kaldi model file this reader understands: names the file, the byte
    offset and the token or component concerned."""


_WHITESPACE = b" \t\n\r\v\f"


class KaldiReader:
    """Kaldi's basic-type I/O over a file's bytes, in binary or text mode."""

    def __init__(self, data: bytes, path: str):
        self.data, self.path = data, path
        self.binary = data[:2] == b"\0B"
        self.pos = 2 if self.binary else 0

    def error(self, what: str, pos: Optional[int] = None) -> KaldiFormatError:
        mode = "binary" if self.binary else "text"
        return KaldiFormatError(f"{self.path}: byte {self.pos if pos is None else pos} ({mode}): {what}")

    def _skip_space(self) -> None:
        while self.pos < len(self.data) and self.data[self.pos] in _WHITESPACE:
            self.pos += 1

    def token(self) -> str:
        """A whitespace-terminated token (Kaldi's ReadToken); consumes one space after it."""
        self._skip_space()
        start = self.pos
        while self.pos < len(self.data) and self.data[self.pos] not in _WHITESPACE:
            self.pos += 1
        if self.pos == start:
            raise self.error("expected a token, found the end of the file")
        token = self.data[start:self.pos].decode("latin-1")
        self.pos += 1
        return token

    def expect(self, expected: str) -> None:
        start = self.pos
        got = self.token()
        if got != expected:
            raise self.error(f"expected {expected}, found {got[:40]!r}", start)

    def peek_token(self) -> str:
        pos = self.pos
        token = self.token()
        self.pos = pos
        return token

    def line(self) -> str:
        """The rest of the current line (the nnet3 config section is line-based in both modes)."""
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            raise self.error("unexpected end of file in the config section")
        text = self.data[self.pos:end].decode("utf-8").rstrip("\r")
        self.pos = end + 1
        return text

    def _binary_scalar(self, what: str, sizes: Mapping[int, str]) -> Union[int, float]:
        if self.pos >= len(self.data):
            raise self.error(f"expected {what}, found the end of the file")
        size = self.data[self.pos]
        if size not in sizes:
            raise self.error(f"expected {what} (size byte {' or '.join(map(str, sizes))}), found byte {size}")
        fmt = sizes[size]
        if self.pos + 1 + struct.calcsize(fmt) > len(self.data):
            raise self.error(f"expected {what}, found the end of the file")
        value = struct.unpack_from(fmt, self.data, self.pos + 1)[0]
        self.pos += 1 + struct.calcsize(fmt)
        return value

    def _text_number(self, what: str, convert: Any) -> Any:
        start = self.pos
        token = self.token()
        try:
            return convert(token)
        except ValueError:
            raise self.error(f"expected {what}, found {token[:40]!r}", start) from None

    def int32(self) -> int:
        if self.binary:
            return int(self._binary_scalar("an int32", {4: "<i"}))
        return self._text_number("an integer", int)

    def float32(self) -> float:
        """A BaseFloat, rounded to float32 in both modes (so text and binary twins agree)."""
        if self.binary:
            value = self._binary_scalar("a float", {4: "<f", 8: "<d"})
        else:
            value = self._text_number("a number", float)
        return float(np.float32(value))

    def float64(self) -> float:
        if self.binary:
            return float(self._binary_scalar("a double", {4: "<f", 8: "<d"}))
        return self._text_number("a number", float)

    def boolean(self) -> bool:
        start = self.pos
        if self.binary:
            char = self.data[self.pos:self.pos + 1]
            self.pos += 1
        else:
            char = self.token().encode()
        if char not in (b"T", b"F"):
            raise self.error(f"expected a bool (T or F), found {char[:40]!r}", start)
        return char == b"T"

    def _binary_array(self, count: int, dtype: str, double: bool = False) -> np.ndarray:
        nbytes = count * np.dtype(dtype).itemsize
        if count < 0 or self.pos + nbytes > len(self.data):
            raise self.error(f"array of {count} values runs past the end of the file")
        array = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += nbytes
        if dtype == "<i4":
            return array.astype(np.int32)
        return array.astype(np.float64 if double else np.float32)

    def _text_bracketed(self) -> str:
        """The text between ``[`` and ``]``."""
        self.expect("[")
        end = self.data.find(b"]", self.pos)
        if end < 0:
            raise self.error("a '[' without its closing ']'")
        text = self.data[self.pos:end].decode("latin-1")
        self.pos = end + 1
        return text

    def matrix(self, double: bool = False) -> np.ndarray:
        """A Matrix (``FM``/``DM``), as float32, or float64 with ``double``."""
        dtype = np.float64 if double else np.float32
        if self.binary:
            start = self.pos
            kind = self.token()
            if kind in ("CM", "CM2", "CM3"):
                raise self.error(f"compressed matrix ({kind}) is not supported; copy the model "
                                 "with nnet3-am-copy to store it uncompressed", start)
            if kind not in ("FM", "DM"):
                raise self.error(f"expected a matrix (FM or DM), found {kind[:40]!r}", start)
            rows, cols = self.int32(), self.int32()
            data = self._binary_array(rows * cols, "<f4" if kind == "FM" else "<f8", double)
            return data.reshape(rows, cols)
        start = self.pos
        lines = [line.split() for line in self._text_bracketed().split("\n") if line.strip()]
        if not lines:
            return np.zeros((0, 0), dtype=dtype)
        if any(len(line) != len(lines[0]) for line in lines):
            raise self.error("matrix rows of different lengths", start)
        try:
            return np.array(lines, dtype=dtype)
        except ValueError:
            raise self.error("a matrix with a value that is not a number", start) from None

    def sp_matrix(self, double: bool = False) -> np.ndarray:
        """A symmetric SpMatrix (``FP``/``DP``: its lower triangle, row by row) as a full
        (n, n) matrix, float32, or float64 with ``double``."""
        start = self.pos
        if self.binary:
            kind = self.token()
            if kind not in ("FP", "DP"):
                raise self.error(f"expected a packed matrix (FP or DP), found {kind[:40]!r}", start)
            n = self.int32()
            packed = self._binary_array(n * (n + 1) // 2, "<f4" if kind == "FP" else "<f8", double)
        else:
            try:
                packed = np.array(self._text_bracketed().split(), dtype=np.float64 if double else np.float32)
            except ValueError:
                raise self.error("a packed matrix with a value that is not a number", start) from None
            n = int(round((math.sqrt(8 * packed.size + 1) - 1) / 2))
            if n * (n + 1) // 2 != packed.size:
                raise self.error(f"{packed.size} values do not fill a triangular matrix", start)
        full = np.zeros((n, n), dtype=packed.dtype)
        full[np.tril_indices(n)] = packed
        return full + np.tril(full, -1).T

    def vector(self, double: bool = False) -> np.ndarray:
        """A Vector (``FV``/``DV``), as float32, or float64 with ``double``."""
        if self.binary:
            start = self.pos
            kind = self.token()
            if kind not in ("FV", "DV"):
                raise self.error(f"expected a vector (FV or DV), found {kind[:40]!r}", start)
            return self._binary_array(self.int32(), "<f4" if kind == "FV" else "<f8", double)
        start = self.pos
        try:
            return np.array(self._text_bracketed().split(), dtype=np.float64 if double else np.float32)
        except ValueError:
            raise self.error("a vector with a value that is not a number", start) from None

    def int_vector(self) -> List[int]:
        if self.binary:
            if self.data[self.pos:self.pos + 1] != b"\x04" or self.pos + 5 > len(self.data):
                raise self.error("expected an int32 vector (size byte 4, then its length)")
            count = struct.unpack_from("<i", self.data, self.pos + 1)[0]
            self.pos += 5
            return self._binary_array(count, "<i4").tolist()
        start = self.pos
        try:
            return [int(v) for v in self._text_bracketed().split()]
        except ValueError:
            raise self.error("an integer vector with a value that is not an integer", start) from None

    def value(self, kind: str) -> FieldValue:
        return {"i": self.int32, "f": self.float32, "d": self.float64, "b": self.boolean,
                "M": self.matrix, "V": self.vector, "I": self.int_vector}[kind]()


class KaldiWriter:
    """Kaldi's basic-type I/O, writing: the byte layout ``KaldiReader`` reads."""

    def __init__(self, binary: bool):
        self.binary = binary
        self.parts: List[bytes] = [b"\0B"] if binary else []

    def getvalue(self) -> bytes:
        """Everything written so far: the file's bytes."""
        return b"".join(self.parts)

    def raw(self, text: str) -> None:
        self.parts.append(text.encode())

    def token(self, token: str) -> None:
        self.raw(token + " ")

    def int32(self, value: int) -> None:
        self.parts.append(struct.pack("<bi", 4, value) if self.binary else f"{value} ".encode())

    def float32(self, value: float) -> None:
        self.parts.append(struct.pack("<bf", 4, value) if self.binary else f"{np.float32(value)} ".encode())

    def float64(self, value: float) -> None:
        self.parts.append(struct.pack("<bd", 8, value) if self.binary else f"{value!r} ".encode())

    def boolean(self, value: bool) -> None:
        self.raw(("T" if value else "F") + ("" if self.binary else " "))

    def matrix(self, m: np.ndarray) -> None:
        m = np.asarray(m, dtype=np.float32)
        if self.binary:
            self.token("FM")
            self.int32(m.shape[0])
            self.int32(m.shape[1])
            self.parts.append(m.astype("<f4").tobytes())
        elif m.size == 0:
            self.raw(" [ ]\n")
        else:
            rows = "".join("\n  " + " ".join(str(v) for v in row) + " " for row in m)
            self.raw(f" [{rows}]\n")

    def vector(self, v: np.ndarray) -> None:
        v = np.asarray(v, dtype=np.float32)
        if self.binary:
            self.token("FV")
            self.int32(v.shape[0])
            self.parts.append(v.astype("<f4").tobytes())
        else:
            self.raw(" [ " + "".join(f"{x} " for x in v) + "]\n")

    def int_vector(self, v: Sequence[int]) -> None:
        if self.binary:
            self.parts.append(struct.pack("<bi", 4, len(v)) + np.asarray(v, dtype="<i4").tobytes())
        else:
            self.raw("[ " + "".join(f"{x} " for x in v) + "]\n")

    def value(self, kind: str, value: FieldValue) -> None:
        {"i": self.int32, "f": self.float32, "d": self.float64, "b": self.boolean,
         "M": self.matrix, "V": self.vector, "I": self.int_vector}[kind](value)
