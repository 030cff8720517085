"""Read character vectors out of an R package's lazy-load database (`data/Rdata.rdb` + `.rdx`), no R needed.

The index `.rdx` is a gzip'd R serialization of list(variables, references, compressed); `variables` maps
each object's name to (offset, length) in `.rdb`. Each object there is a 4-byte big-endian uncompressed
length and a zlib stream (compressed = TRUE), or, for compressed = 2 or 3, the length, one type byte
('Z' zlib, '2' bzip2, 'X' xz, '0' none) and the stream. Inside is R's XDR serialization, format 2 or 3
("R Internals" §1.8, "Serialization Formats"). We decode the subset data sets use: NULL, symbols,
pairlists (attributes), and logical, integer, double, character and generic vectors."""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# SEXP types and special markers ("R Internals" §1.1 and serialize.c)
SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP = 1, 2, 9, 10, 13, 14, 16, 19
NILVALUE_SXP, REFSXP = 254, 255
IS_OBJECT, HAS_ATTR, HAS_TAG = 1 << 8, 1 << 9, 1 << 10
LATIN1 = 1 << 2  # CHARSXP encoding bit in the levels field (flags >> 12)
NA_INTEGER = -(2**31)


class RDataError(ValueError):
    """The bytes are not an R serialization this reader understands."""


@dataclass(frozen=True)
class RVector:
    """An R vector: its values (str | None for a character vector) and attributes (e.g. names)."""

    values: list[Any]
    attributes: dict[str, Any] = field(default_factory=dict)

    def named(self) -> dict[str, Any]:
        """{name: value} through the `names` attribute."""
        return dict(zip(self.attributes["names"].values, self.values))


class _Reader:
    """XDR (big-endian) decoding of one serialized object."""

    def __init__(self, data: bytes):
        if data[:2] != b"X\n":
            raise RDataError("not an XDR R serialization (expected the header 'X\\n')")
        self.data, self.pos, self.refs = data, 2, []
        version = self.int()
        self.int(), self.int()  # R version that wrote it, minimal reader version
        if version == 3:
            self.take(self.int())  # native encoding name
        elif version != 2:
            raise RDataError(f"R serialization format {version} is not supported (2 or 3 are)")

    def take(self, n: int) -> bytes:
        chunk = self.data[self.pos:self.pos + n]
        if len(chunk) < n:
            raise RDataError("truncated R serialization")
        self.pos += n
        return chunk

    def int(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def length(self) -> int:
        n = self.int()
        return n if n != -1 else (self.int() << 32) + self.int()  # long vector: upper and lower words

    def item(self) -> Any:
        flags = self.int()
        kind = flags & 0xFF
        if kind == NILVALUE_SXP:
            return None
        if kind == REFSXP:
            index = flags >> 8 or self.int()
            return self.refs[index - 1]
        if kind == SYMSXP:
            name = self.item()  # a CHARSXP
            self.refs.append(name)
            return name
        if kind == LISTSXP:
            return self.pairlist(flags)
        if kind == CHARSXP:
            n = self.int()
            return None if n == -1 else self.take(n).decode("latin-1" if (flags >> 12) & LATIN1 else "utf-8")
        values = self.vector(kind)
        attributes = self.item() if flags & HAS_ATTR else {}
        return RVector(values, attributes)

    def vector(self, kind: int) -> list[Any]:
        if kind not in (LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP):
            raise RDataError(f"R object type {kind} is not supported (data sets of vectors and lists are)")
        n = self.length()
        if kind in (LGLSXP, INTSXP):
            return [None if v == NA_INTEGER else v for v in struct.unpack(f">{n}i", self.take(4 * n))]
        if kind == REALSXP:
            return list(struct.unpack(f">{n}d", self.take(8 * n)))
        return [self.item() for _ in range(n)]  # STRSXP or VECSXP

    def pairlist(self, flags: int) -> dict[str, Any]:
        """A pairlist (as attributes are stored) as {tag: value}, following the CDR chain."""
        out: dict[str, Any] = {}
        while True:
            if flags & HAS_ATTR:
                self.item()
            tag = self.item() if flags & HAS_TAG else str(len(out))
            out[tag] = self.item()
            flags = self.int()
            if flags & 0xFF == NILVALUE_SXP:
                return out
            if flags & 0xFF != LISTSXP:
                raise RDataError("a pairlist ends in something other than NULL")


def unserialize(data: bytes) -> Any:
    """The object in an XDR R serialization (as `serialize(x, NULL)` writes)."""
    return _Reader(data).item()


def _inflate(blob: bytes, compressed: Any) -> bytes:
    """The serialized bytes of one `.rdb` entry."""
    if compressed is True or compressed == 1:
        return zlib.decompress(blob[4:])
    kind, body = blob[4:5], blob[5:]
    codecs = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress, b"0": bytes}
    if kind not in codecs:
        raise RDataError(f"unknown .rdb compression type {kind!r}")
    return codecs[kind](body)


def lazyload_objects(rdb: Path) -> dict[str, Any]:
    """Every object of a lazy-load database, by name: `rdb` is the `.rdb` file, its `.rdx` lies beside it."""
    index = unserialize(gzip.decompress(Path(rdb).with_suffix(".rdx").read_bytes())).named()
    compressed = index.get("compressed")
    compressed = compressed.values[0] if isinstance(compressed, RVector) else True
    data = Path(rdb).read_bytes()
    objects = {}
    for name, where in index["variables"].named().items():
        offset, length = where.values
        objects[name] = unserialize(_inflate(data[offset:offset + length], compressed))
    return objects
