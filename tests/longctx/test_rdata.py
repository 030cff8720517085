"""The lazy-load reader against bytes built here by a tiny writer of R's XDR serialization (format 3)."""

import gzip
import struct
import zlib

import pytest

from longctx.rdata import RDataError, RVector, lazyload_objects, unserialize


def i32(*values):
    return struct.pack(f">{len(values)}i", *values)


def charsxp(s):
    if s is None:
        return i32(9, -1)
    data = s.encode("utf-8")
    return i32(9 | (1 << 3) << 12, len(data)) + data  # UTF8 level bit, as R writes non-ASCII strings


def names_attr(names):
    # pairlist (LISTSXP with tag) names = STRSXP, then NULL; the second use of a symbol is a REFSXP
    return i32(2 | 1 << 10) + i32(1) + charsxp("names") + strsxp(names) + i32(254)


def strsxp(values, names=None):
    flags = 16 | (1 << 9 if names else 0)
    return i32(flags, len(values)) + b"".join(charsxp(v) for v in values) + (names_attr(names) if names else b"")


def intsxp(values, names=None, kind=13):
    flags = kind | (1 << 9 if names else 0)
    return i32(flags, len(values), *values) + (names_attr(names) if names else b"")


def vecsxp(items, names):
    return i32(19 | 1 << 9, len(items)) + b"".join(items) + names_attr(names)


def serialized(body):
    return b"X\n" + i32(3, 0x40201, 0x30500, 5) + b"UTF-8" + body


def test_character_vector_with_na_and_utf8():
    assert unserialize(serialized(strsxp(["Emma", "", None, "café"]))) == RVector(["Emma", "", None, "café"])


def test_named_list_resolves_names():
    obj = unserialize(serialized(vecsxp([intsxp([1, 2]), strsxp(["a"])], ["x", "y"])))
    assert obj.named() == {"x": RVector([1, 2]), "y": RVector(["a"])}


def test_lazyload_database_round_trip(tmp_path):
    books = {"emma": ["EMMA", "", "By Jane Austen"], "persuasion": ["Persuasion"]}
    rdb, variables = b"", []
    for lines in books.values():
        body = serialized(strsxp(lines))
        blob = struct.pack(">I", len(body)) + zlib.compress(body)
        variables.append(intsxp([len(rdb), len(blob)]))
        rdb += blob
    index = vecsxp([vecsxp(variables, list(books)), i32(254), intsxp([1], kind=10)],
                   ["variables", "references", "compressed"])
    (tmp_path / "Rdata.rdb").write_bytes(rdb)
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(serialized(index)))
    objects = lazyload_objects(tmp_path / "Rdata.rdb")
    assert {name: obj.values for name, obj in objects.items()} == books


def test_refuses_what_it_cannot_read():
    with pytest.raises(RDataError, match="XDR"):
        unserialize(b"A\n" + i32(3))
    with pytest.raises(RDataError, match="type 3 is not supported"):
        unserialize(serialized(i32(3)))  # a closure
    with pytest.raises(RDataError, match="truncated"):
        unserialize(serialized(i32(16, 2)) + charsxp("a"))
