"""client/layouts.py on BTF made here (pure: no kernel): names Python cannot take as they are,
enums, bitfields, char arrays, and the bounds that hold against a crafted object's BTF (depth,
members, values a type decodes into, members outside their struct, sizes that lie)."""

from __future__ import annotations

import enum
import struct
import time

import pytest

from bpfloader.client import layouts
from bpfloader.client.layouts import layout
from bpfloader.errors import MapError, MapTypeError
from bpfloader.obj.btf import INT_BOOL, INT_CHAR, INT_SIGNED, Kind, parse_btf


class BtfMaker:
    """BTF types appended one by one; each method gives the new type's id."""

    def __init__(self) -> None:
        self.types = b""
        self.strings = b"\0"
        self.count = 0

    def name(self, text: str) -> int:
        if not text:
            return 0
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def _add(self, name: str, kind: Kind, vlen: int, size_or_type: int, body: bytes = b"",
             kflag: bool = False) -> int:  # fmt: skip
        info = kind << 24 | vlen | (kflag << 31)
        self.types += struct.pack("<III", self.name(name), info, size_or_type) + body
        self.count += 1
        return self.count

    def int(self, name: str, size: int, encoding: int = 0, bits: int = 0, offset: int = 0) -> int:
        word = encoding << 24 | offset << 16 | (bits or 8 * size)
        return self._add(name, Kind.INT, 0, size, struct.pack("<I", word))

    def struct(self, name: str, size: int, members: list[tuple[str, int, int]],
               kflag: bool = False, union: bool = False) -> int:  # fmt: skip
        body = b"".join(struct.pack("<III", self.name(n), t, off) for n, t, off in members)
        kind = Kind.UNION if union else Kind.STRUCT
        return self._add(name, kind, len(members), size, body, kflag)

    def array(self, element: int, count: int, index: int = 1) -> int:
        return self._add("", Kind.ARRAY, 0, 0, struct.pack("<III", element, index, count))

    def enum(
        self, name: str, size: int, values: list[tuple[str, int]], signed: bool = False
    ) -> int:
        body = b"".join(struct.pack("<Ii", self.name(n), v) for n, v in values)
        return self._add(name, Kind.ENUM, len(values), size, body, signed)

    def ref(self, kind: Kind, target: int, name: str = "") -> int:
        return self._add(name, kind, 0, target)

    def btf(self):  # type: ignore[no-untyped-def]
        header = struct.pack(
            "<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings)
        )
        return parse_btf(header + self.types + self.strings)


def round_trip(found: layouts.Layout, value: object) -> object:
    out = bytearray(found.size)
    found.pack(value, out, 0, "value")
    return found.unpack(bytes(out), 0)


def test_member_names_python_cannot_take_as_they_are():
    b = BtfMaker()
    u32 = b.int("unsigned int", 4)
    names = ["self", "MISSING", "from", "class", "__init__", "__pad", "_"]
    members = [(n, u32, 32 * i) for i, n in enumerate(names)]
    s = b.struct("None", 4 * len(names), members)  # a keyword: the class takes its kind's name
    found = layout(b.btf(), s, 4 * len(names), "value")
    assert isinstance(found, layouts.Composite)
    assert found.value_class.__name__ == "struct"
    assert [f.name for f in found.fields] == [
        "self", "MISSING", "from_", "class_", "__init___", "__pad", "_",
    ]  # fmt: skip
    value = found.value_class(self=1, MISSING=2, from_=3, class_=4, __init___=5, __pad=6, _=7)
    assert round_trip(found, value) == value


def test_enums_signed_unsigned_and_names_python_refuses():
    b = BtfMaker()
    colors = b.enum("color", 4, [("RED", 0), ("BLUE", -2)], signed=True)
    flags = b.enum("", 4, [("HIGH", -0x80000000)])  # unsigned: 0x80000000
    odd = b.enum("odd", 2, [("_sunder_", 1), ("ok", 2)])
    typedef = b.ref(Kind.TYPEDEF, flags, "flags_t")
    btf = b.btf()
    color = layout(btf, colors, 4, "value")
    blue = color.unpack(struct.pack("<i", -2), 0)
    assert isinstance(blue, enum.IntEnum) and blue.name == "BLUE" and blue == -2
    assert color.unpack(struct.pack("<i", 5), 0) == 5  # a value it does not name
    assert round_trip(color, "RED") == 0 and color.plain(blue) == "BLUE"
    high = layout(btf, typedef, 4, "value").unpack(b"\0\0\0\x80", 0)
    assert (type(high).__name__, high.name, int(high)) == ("flags_t", "HIGH", 0x80000000)
    assert layout(btf, odd, 2, "value").unpack(b"\x01\0", 0) == 1  # plain ints
    assert type(layout(btf, odd, 2, "value").unpack(b"\x01\0", 0)) is int


def test_bitfields_straddle_bytes_and_keep_their_neighbours():
    b = BtfMaker()
    u32, s32 = b.int("unsigned int", 4), b.int("int", 4, INT_SIGNED)
    flag = b.int("_Bool", 1, INT_BOOL)
    # kflag: a member's offset word holds its bitfield size in its top 8 bits
    members = [("a", u32, 3 << 24), ("b", s32, 10 << 24 | 3), ("c", u32, 1 << 24 | 13),
               ("d", flag, 16)]  # fmt: skip
    s = b.struct("bits", 4, members, kflag=True)
    found = layout(b.btf(), s, 4, "value")
    value = found.value_class(a=5, b=-300, c=1, d=True)
    raw = bytearray(4)
    found.pack(value, raw, 0, "value")
    assert int.from_bytes(raw, "little") == 5 | ((-300) & 0x3FF) << 3 | 1 << 13 | 1 << 16
    assert found.unpack(bytes(raw), 0) == value
    with pytest.raises(MapError) as e:
        found.pack(found.value_class(b=512), bytearray(4), 0, "value")
    assert str(e.value) == "value.b: 512 does not fit in a 10-bit signed integer"
    with pytest.raises(MapTypeError) as wrong:
        found.pack({"a": 1.5}, bytearray(4), 0, "value")
    assert str(wrong.value) == "value.a takes an int, not float 1.5"


def test_char_arrays_are_bytes_without_trailing_nuls():
    b = BtfMaker()
    char = b.int("char", 1, INT_SIGNED)
    u8 = b.int("unsigned char", 1)
    encoded = b.int("c", 1, INT_CHAR)
    names, octets, marked = b.array(char, 8), b.array(u8, 4), b.array(encoded, 3)
    btf = b.btf()
    name = layout(btf, names, 8, "key")
    assert name.unpack(b"sh\0\0x\0\0\0", 0) == b"sh\0\0x"  # the bytes after a NUL are kept
    assert round_trip(name, "sh") == b"sh" and name.plain(b"sh") == "sh"
    assert name.plain(b"\xff") == [255, 0, 0, 0, 0, 0, 0, 0]  # not text: bytes, as bpftool
    with pytest.raises(MapError) as e:
        round_trip(name, b"123456789")
    assert str(e.value) == "value holds 8 bytes, not 9"
    assert layout(btf, octets, 4, "key").unpack(b"\x01\x02\x03\x04", 0) == (1, 2, 3, 4)
    assert layout(btf, marked, 3, "key").unpack(b"ab\0", 0) == b"ab"


def test_bounds_against_a_crafted_btf():
    b = BtfMaker()
    u8 = b.int("u8", 1)
    empty = b.struct("empty", 0, [])
    many_empty = b.array(empty, 2**32 - 1)  # 0 bytes, four billion values
    deep = u8
    for i in range(40):
        deep = b.struct(f"level{i}", 1, [("inner", deep, 0)])
    wide = b.struct("wide", 9000, [(f"m{i}", u8, 8 * i) for i in range(9000)])
    outside = b.struct("outside", 4, [("late", u8, 32)])
    selfish = b.count + 1
    b.struct("selfish", 1, [("me", selfish, 0)])
    nameless = b.count + 1  # holds itself as an anonymous member
    b.struct("nameless", 1, [("", nameless, 0)])
    proto = b._add("", Kind.FUNC_PROTO, 0, 0)
    btf = b.btf()
    start = time.monotonic()
    cases = {
        many_empty: (0, "decodes into more than 1048576 values"),
        deep: (1, "types nested more than 32 deep (or one holds itself)"),
        wide: (9000, "more than 8192 members, enumerators and arrays"),
        outside: (4, f"member late of type {outside} lies outside it (bytes 4..5 of 4)"),
        selfish: (1, "types nested more than 32 deep (or one holds itself)"),
        nameless: (1, "types nested more than 32 deep (or one holds itself)"),
        proto: (0, f"type {proto} is a FUNC_PROTO, which has no values"),
        u8: (2, "is 1 bytes, the map's value is 2 bytes"),
        999: (1, "type id 999 does not exist"),
    }
    for type_id, (size, reason) in cases.items():
        with pytest.raises(MapError) as e:
            layout(btf, type_id, size, "value")
        assert reason in str(e.value) and "\n" not in str(e.value)
        assert str(e.value).startswith(f"the map's value type (BTF type {type_id})")
    assert time.monotonic() - start < 2


def test_struct_values_are_written_from_dicts_and_tuples_and_are_hashable():
    b = BtfMaker()
    u16, u32 = b.int("u16", 2), b.int("u32", 4)
    inner = b.struct("", 4, [("x", u16, 0), ("y", u16, 16)])
    union = b.struct("", 4, [("whole", u32, 0), ("halves", b.array(u16, 2), 0)], union=True)
    outer = b.struct("key", 12, [("id", u32, 0), ("", inner, 32), ("", union, 64)])
    found = layout(b.btf(), outer, 12, "key")
    assert [f.name for f in found.fields] == ["id", "x", "y", "whole", "halves"]
    key = found.unpack(struct.pack("<IHHI", 1, 2, 3, 0x00050004), 0)
    assert (key.id, key.x, key.y, key.whole, key.halves) == (1, 2, 3, 0x50004, (4, 5))
    assert {key: "v"}[found.value_class(1, 2, 3, 0x50004, (4, 5))] == "v"
    assert round_trip(found, {"id": 9, "halves": [7]}) == found.value_class(9, 0, 0, 7, (7, 0))
    assert round_trip(found, (9, 1)) == found.value_class(9, 1, 0, 0, (0, 0))
    assert found.plain(key) == {"id": 1, "x": 2, "y": 3, "whole": 0x50004, "halves": [4, 5]}
