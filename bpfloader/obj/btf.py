"""BTF (.BTF) and BTF.ext (.BTF.ext) of an object: read, bounded, and fixed up for the kernel.

Only what loading needs is modelled: every type's kind, name, size or referenced type, and
the members, array shapes, variables and data-section entries that map definitions, global
data and type sizes are read from. The raw bytes are kept: the kernel gets them back with
the fix-ups it requires (data-section sizes and variable offsets, which the compiler leaves
to the loader) patched in place.

Memory stays a small multiple of the section, whatever it declares: parse_btf checks every
record in one pass (kinds, lengths, names, the types referred to) and keeps of each type only
where its record starts (4 bytes; the kernel's own BTF and a crafted one of a million types
alike); a `BtfType` is decoded when asked for, its members and variables when read. Counts
cannot outgrow the bytes: a record's items must fit in the type section before any is read.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import pairwise
from typing import TypeVar

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.elf import LazySequence, first_bad_name, long_name_spans
from bpfloader.obj.spec import FuncInfo, LineInfo

BTF_MAGIC = 0xEB9F
HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type_off/len, str_off/len
TYPE = struct.Struct("<III")  # name_off, info, size_or_type
BTF_VAR_GLOBAL_ALLOCATED = 1
ITEM = struct.Struct("<III")  # a member, an array, a DATASEC variable: three u32s
PARAM = struct.Struct("<II")  # a FUNC_PROTO's parameter: name offset, type
MAX_TYPES = 1 << 20
MAX_RESOLVE_DEPTH = 64
MAX_NAME_LEN = 4096  # a type, member or variable name, in bytes (the kernel allows 512)
# An INT's encoding bits (int_encoding).
INT_SIGNED, INT_CHAR, INT_BOOL = 1, 2, 4


class BtfError(ObjectFormatError):
    """The BTF is malformed: the reader names the section."""


class Kind(IntEnum):
    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


# Bytes that follow the common record, per kind: fixed, and per vlen item.
_EXTRA: dict[Kind, tuple[int, int]] = {
    Kind.INT: (4, 0),
    Kind.ARRAY: (12, 0),
    Kind.STRUCT: (0, 12),
    Kind.UNION: (0, 12),
    Kind.ENUM: (0, 8),
    Kind.FUNC_PROTO: (0, 8),
    Kind.VAR: (4, 0),
    Kind.DATASEC: (0, 12),
    Kind.DECL_TAG: (4, 0),
    Kind.ENUM64: (0, 12),
}
MODIFIERS = {Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG}
# Kinds whose size_or_type is a type id, which must exist.
_REFERRING = frozenset({*MODIFIERS, Kind.PTR, Kind.FUNC, Kind.VAR, Kind.DECL_TAG})


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    type: int
    bit_offset: int


@dataclass(frozen=True, slots=True)
class SecVar:
    """One variable of a DATASEC: its VAR type id, offset and size in the section."""

    type: int
    offset: int
    size: int
    record: int  # where its offset field lives in the raw type section (for fix-ups)


_Item = TypeVar("_Item", Member, SecVar)


class Items(LazySequence[_Item]):
    """A struct's members or a DATASEC's variables, each decoded when read (a struct may have
    65535 members, and most readers want a few)."""

    def __init__(self, body: int, count: int, make: Callable[[int], _Item]):
        self._body = body  # where the first item's record starts in the type section
        self._count = count
        self._make: Callable[[int], _Item] = make  # a record's position -> its item

    def __len__(self) -> int:
        return self._count

    def _item(self, index: int) -> _Item:
        return self._make(self._body + ITEM.size * index)


@dataclass(frozen=True, slots=True)
class BtfType:
    id: int
    kind: Kind
    name: str
    size_or_type: int
    record: int  # offset of the record in the type section
    members: Sequence[Member] = ()
    array: tuple[int, int] | None = None  # (element type, element count)
    sec_vars: Sequence[SecVar] = ()
    linkage: int = 0  # VAR and FUNC
    info: int = 0  # the record's info word: vlen (low 16 bits) and kind_flag (bit 31)

    @property
    def vlen(self) -> int:
        return self.info & 0xFFFF

    @property
    def kflag(self) -> bool:
        """A struct's or union's members carry bitfield sizes; an enum is signed; a FWD
        declares a union."""
        return bool(self.info >> 31)


class BtfTypes(LazySequence[BtfType]):
    """Every type of a BTF by id (0 is void), decoded when asked for."""

    def __init__(self, btf: Btf):
        self._btf = btf

    def __len__(self) -> int:
        return len(self._btf.offsets)

    def _item(self, index: int) -> BtfType:
        return self._btf.decode(index)


VOID = BtfType(0, Kind.UNKN, "void", 0, -1)


@dataclass(frozen=True)
class DatasecRewrite:
    """A DATASEC the loader lays out itself (`.ksyms`): its entries (type, offset, size) and
    size, patches at offsets of the type section, and a global VAR (name, type) to append."""

    datasec_id: int
    entries: tuple[tuple[int, int, int], ...]
    size: int
    patches: tuple[tuple[int, bytes], ...] = ()
    appended: tuple[str, int] | None = None


class Btf:
    """A parsed BTF: its raw bytes, where each type's record starts, and the ids of each kind
    (what `named` and the fix-ups look through).

    Split BTF (a kernel module's, /sys/kernel/btf/MODULE) continues a `base` (vmlinux's): its
    type ids start where the base's end, its string offsets where the base's string table
    ends; a type or name of the base is the base's.

    It pickles with its index (the object cache keeps the BTF of an object's CO-RE relocations
    and __ksym externs: loader/object_cache.py): loaded, it is not parsed again."""

    def __init__(
        self,
        raw: bytes,
        header_len: int,
        type_off: int,
        type_len: int,
        strings: bytes,
        base: Btf | None = None,
    ):
        self.raw = raw
        self.header_len = header_len
        self.type_off = type_off
        self.type_len = type_len
        self.strings: bytes = strings
        self.base = base
        self.first_id = base.end_id if base is not None else 1  # the first type id of its own
        self.strings_base = len(base.strings) if base is not None else 0
        self.type_section = self._type_section()
        # By type id - first_id + 1 (the type id, but in split BTF); [0] (void) has no record.
        self.offsets: array[int] = array("I", [0])
        self.ids_by_kind: dict[Kind, array[int]] = {}
        self._named: dict[Kind, dict[str, int]] = {}

    def _type_section(self) -> memoryview:
        """The type section, without a copy: every record offset is relative to it."""
        start = self.header_len + self.type_off
        return memoryview(self.raw)[start : start + self.type_len]

    def __getstate__(self) -> dict[str, object]:
        state = dict(self.__dict__)
        del state["type_section"]  # a view (pickle refuses one): made again from `raw`
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self.type_section = self._type_section()

    @property
    def types(self) -> BtfTypes:
        return BtfTypes(self)

    @property
    def end_id(self) -> int:
        """One past the last type id."""
        return self.first_id + len(self.offsets) - 1

    def name_at(self, offset: int) -> str:
        if self.base is not None and offset < self.strings_base:
            return self.base.name_at(offset)
        return _string(self.strings, offset - self.strings_base, "BTF string")

    def type(self, type_id: int) -> BtfType:
        if not 0 < type_id < self.end_id:
            raise BtfError(f"type id {type_id} does not exist ({self.end_id - 1} types)")
        return self.decode(type_id)

    def of_kind(self, kind: Kind) -> Iterator[BtfType]:
        """The types of one kind, by id."""
        return (self.decode(i) for i in self.ids_by_kind.get(kind, ()))

    def decode(self, type_id: int) -> BtfType:
        """Type `type_id` (0 is void) as parse_btf checked it."""
        if type_id == 0:
            return VOID
        if type_id < self.first_id and self.base is not None:
            return self.base.decode(type_id)
        raw, pos = self.type_section, self.offsets[type_id - self.first_id + 1]
        name_off, info, size_or_type = TYPE.unpack_from(raw, pos)
        kind, vlen = _KINDS[(info >> 24) & 0x1F], info & 0xFFFF
        name = self.name_at(name_off) if name_off else ""
        body = pos + TYPE.size
        if kind is Kind.STRUCT or kind is Kind.UNION:
            members = Items(body, vlen, self._member)
            return BtfType(type_id, kind, name, size_or_type, pos, members=members, info=info)
        if kind is Kind.ARRAY:
            elem, _, count = ITEM.unpack_from(raw, body)
            return BtfType(type_id, kind, name, size_or_type, pos, array=(elem, count), info=info)
        if kind is Kind.DATASEC:
            sec_vars = Items(body, vlen, self._sec_var)
            return BtfType(type_id, kind, name, size_or_type, pos, sec_vars=sec_vars, info=info)
        if kind is Kind.VAR:
            linkage: int = struct.unpack_from("<I", raw, body)[0]
            return BtfType(type_id, kind, name, size_or_type, pos, linkage=linkage, info=info)
        if kind is Kind.FUNC:
            return BtfType(type_id, kind, name, size_or_type, pos, linkage=vlen, info=info)
        return BtfType(type_id, kind, name, size_or_type, pos, info=info)

    def int_encoding(self, t: BtfType) -> tuple[int, int, int]:
        """An INT's (encoding, bit offset, bits): encoding bit 0 is signed."""
        if t.id < self.first_id and self.base is not None:
            return self.base.int_encoding(t)
        word: int = struct.unpack_from("<I", self.type_section, t.record + TYPE.size)[0]
        return (word >> 24) & 0x0F, (word >> 16) & 0xFF, word & 0xFF

    def enumerators(self, t: BtfType) -> list[tuple[int, int]]:
        """An ENUM's or ENUM64's (name offset, value) pairs, the values as libbpf reads them:
        an ENUM's as a signed 32-bit value, an ENUM64's as an unsigned 64-bit one."""
        if t.id < self.first_id and self.base is not None:
            return self.base.enumerators(t)
        body, raw = t.record + TYPE.size, self.type_section
        if t.kind is Kind.ENUM:
            return [struct.unpack_from("<Ii", raw, body + 8 * i) for i in range(t.vlen)]
        pairs = []
        for i in range(t.vlen):
            name_off, lo, hi = ITEM.unpack_from(raw, body + 12 * i)
            pairs.append((name_off, hi << 32 | lo))
        return pairs

    def params(self, t: BtfType) -> list[int]:
        """A FUNC_PROTO's parameter types."""
        return [type_id for _, type_id in self.param_records(t)]

    def param_records(self, t: BtfType) -> list[tuple[int, int]]:
        """A FUNC_PROTO's parameters as (name offset, type)."""
        if t.id < self.first_id and self.base is not None:
            return self.base.param_records(t)
        body = t.record + TYPE.size
        return [PARAM.unpack_from(self.type_section, body + 8 * i) for i in range(t.vlen)]

    def string_offset(self, name: str) -> int:
        """The offset of string `name` in the string table (one that starts a string, as
        libbpf deduplicates them), or the offset it takes when appended to the table."""
        wanted = name.encode("latin-1") + b"\0"
        if self.strings.startswith(wanted):
            return self.strings_base
        pos = self.strings.find(b"\0" + wanted)
        return self.strings_base + (pos + 1 if pos >= 0 else len(self.strings))

    def _member(self, pos: int) -> Member:
        name_off, type_id, bit_offset = ITEM.unpack_from(self.type_section, pos)
        return Member(self.name_at(name_off) if name_off else "", type_id, bit_offset)

    def _sec_var(self, pos: int) -> SecVar:
        type_id, offset, size = ITEM.unpack_from(self.type_section, pos)
        return SecVar(type_id, offset, size, pos)

    def resolve(self, type_id: int) -> BtfType:
        """Skip typedefs and qualifiers; refuses a chain that loops."""
        for _ in range(MAX_RESOLVE_DEPTH):
            t = self.type(type_id)
            if t.kind not in MODIFIERS:
                return t
            type_id = t.size_or_type
        raise BtfError(f"type {type_id} refers to itself through typedefs or qualifiers")

    def size_of(self, type_id: int, depth: int = 0) -> int:
        if depth > MAX_RESOLVE_DEPTH:
            raise BtfError(f"type {type_id} is nested too deeply (or refers to itself)")
        t = self.resolve(type_id)
        if t.kind in (
            Kind.INT,
            Kind.STRUCT,
            Kind.UNION,
            Kind.ENUM,
            Kind.ENUM64,
            Kind.FLOAT,
            Kind.DATASEC,
        ):
            return t.size_or_type
        if t.kind is Kind.PTR:
            return 8
        if t.kind is Kind.ARRAY and t.array is not None:
            return t.array[1] * self.size_of(t.array[0], depth + 1)
        if t.kind is Kind.VAR:
            return self.size_of(t.size_or_type, depth + 1)
        raise BtfError(f"type {type_id} ({t.kind.name}) has no size")

    def datasec(self, name: str) -> BtfType | None:
        return self.named(Kind.DATASEC, name)

    def fixed_up(
        self,
        section_sizes: Mapping[str, int],
        symbol_offsets: Mapping[str, Mapping[str, int]],
        allocated: Sequence[int] = (),
        rewrite: DatasecRewrite | None = None,
    ) -> bytes:
        """The raw BTF with each DATASEC's size and its variables' offsets filled in from the
        ELF (the compiler leaves 0s there; the kernel checks them), the variables sorted by
        offset as the kernel requires. `symbol_offsets` is {section: {symbol: offset}}; the
        VARs `allocated` (externs the loader gives a place, `.kconfig`) become global ones.
        `rewrite` gives one DATASEC whole, with its patches and a variable to append (the
        externs of `.ksyms`: obj/ksyms.py)."""
        base = self.header_len + self.type_off
        patches: list[tuple[int, bytes]] = [
            (base + self.type(v).record + TYPE.size, struct.pack("<I", BTF_VAR_GLOBAL_ALLOCATED))
            for v in allocated
        ]
        for sec in self.of_kind(Kind.DATASEC):
            if rewrite is not None and sec.id == rewrite.datasec_id:
                patches += [(base + pos, patch) for pos, patch in rewrite.patches]
                patches.append((base + sec.record + 8, struct.pack("<I", rewrite.size)))
                if rewrite.entries:
                    packed = b"".join(ITEM.pack(*entry) for entry in rewrite.entries)
                    patches.append((base + sec.sec_vars[0].record, packed))
                continue
            size = section_sizes.get(sec.name)
            if size is None:
                raise BtfError(f"DATASEC {sec.name} has no ELF section")
            patches.append((base + sec.record + 8, struct.pack("<I", size)))
            offsets = symbol_offsets.get(sec.name, {})
            entries = []
            for var in sec.sec_vars:
                name = self.type(var.type).name
                offset = offsets.get(name, var.offset)
                if offset + var.size > size:
                    raise BtfError(f"variable {name} lies outside DATASEC {sec.name}")
                entries.append((offset, var.type, var.size))
            if entries:
                packed = b"".join(ITEM.pack(t, o, n) for o, t, n in sorted(entries))
                patches.append((base + sec.sec_vars[0].record, packed))
        appended = rewrite.appended if rewrite is not None else None
        if not patches and appended is None:
            return self.raw
        # Spliced in one join: the BTF is copied once, not twice (bytearray, then bytes).
        raw, at = memoryview(self.raw), 0
        pieces: list[bytes | memoryview] = []
        for pos, patch in sorted(patches):
            pieces += (raw[at:pos], patch)
            at = pos + len(patch)
        pieces.append(raw[at:])
        fixed = b"".join(pieces)
        return fixed if appended is None else self._with_var(fixed, *appended)

    def _with_var(self, raw: bytes, name: str, type_id: int) -> bytes:
        """`raw` (this BTF, patched) with a global VAR `name` of type `type_id` appended, as
        type end_id: the header, then the types, then the strings (with `name` appended where
        the table lacks it), as libbpf lays out a BTF it has added to."""
        name_off = self.string_offset(name)
        strings = self.strings
        if name_off - self.strings_base == len(strings):
            strings += name.encode("latin-1") + b"\0"
        start = self.header_len + self.type_off
        types = raw[start : start + len(self.type_section)]
        types += TYPE.pack(name_off, Kind.VAR << 24, type_id)
        types += struct.pack("<I", BTF_VAR_GLOBAL_ALLOCATED)
        header = bytearray(raw[: self.header_len])
        struct.pack_into("<IIII", header, 8, 0, len(types), len(types), len(strings))
        return bytes(header) + types + strings

    def named(self, kind: Kind, name: str) -> BtfType | None:
        """The first type of `kind` named `name`: the names of a kind are indexed the first
        time one is asked for."""
        index = self._named.get(kind)
        if index is None:
            index = self._named[kind] = {}
            for type_id in self.ids_by_kind.get(kind, ()):
                record = self.offsets[type_id - self.first_id + 1]
                name_off = TYPE.unpack_from(self.type_section, record)[0]
                index.setdefault(self.name_at(name_off) if name_off else "", type_id)
        found = index.get(name)
        return self.decode(found) if found is not None else None


def parse_btf(data: bytes, base: Btf | None = None) -> Btf:
    """Check every record of `data` in one pass and index where each starts (see the module's
    docstring); the first problem is a BtfError. With `base`, `data` is split BTF over it."""
    if len(data) < HEADER.size:
        raise BtfError(f"{len(data)} bytes is shorter than the BTF header")
    magic, version, _, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(data)
    if magic != BTF_MAGIC:
        raise BtfError(f"bad magic {magic:#06x} (big-endian BTF is not supported)")
    if version != 1:
        raise BtfError(f"unsupported BTF version {version}")
    if hdr_len < HEADER.size:
        raise BtfError(f"header length {hdr_len} is too short")
    for what, off, length in (("types", type_off, type_len), ("strings", str_off, str_len)):
        if hdr_len + off + length > len(data):
            raise BtfError(f"{what} run past the end of the section (truncated BTF)")
    strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
    btf = Btf(bytes(data), hdr_len, type_off, type_len, strings, base)
    _index_types(btf)
    return btf


def _index_types(btf: Btf) -> None:
    """Fill btf.offsets and btf.ids_by_kind, checking each record: its kind, that it fits,
    its name and its members' names, and (once every type is counted) the types it refers to."""
    raw = btf.type_section
    words = raw[: len(raw) - len(raw) % 4].cast("I")  # the section as u32s, for the items
    spans = long_name_spans(btf.strings, MAX_NAME_LEN)
    names: array[int] = array("I")  # every name offset, checked at the end
    max_ref: array[int] = array("I", [0])  # by type id: the largest type id it refers to
    offsets, by_kind = btf.offsets, btf.ids_by_kind
    pos, end_of_types = 0, len(raw)
    while pos < end_of_types:
        type_id = len(offsets) + btf.first_id - 1
        if len(offsets) > MAX_TYPES:
            raise BtfError(f"more than {MAX_TYPES} types")
        if pos + TYPE.size > end_of_types:
            raise BtfError(f"type {type_id} is cut short (truncated BTF)")
        name_off, info, size_or_type = TYPE.unpack_from(raw, pos)
        kind, vlen = _kind(info), info & 0xFFFF
        end = _record_end(pos, kind, vlen)
        if end > end_of_types:
            raise BtfError(f"type {type_id} ({kind.name}) is cut short (truncated BTF)")
        body = pos + TYPE.size
        names.append(name_off)
        ref = 0
        if kind is Kind.STRUCT or kind is Kind.UNION or kind is Kind.DATASEC:
            if vlen:
                if body % 4:  # the u32 view needs the items 4-aligned (a compiler's always are)
                    items = memoryview(bytes(raw[body:end])).cast("I")
                else:
                    items = words[body // 4 : end // 4]
                if kind is Kind.DATASEC:
                    ref = max(items[0::3])
                else:
                    ref = max(items[1::3])
                    names.extend(items[0::3])
        elif kind is Kind.ARRAY:
            ref = ITEM.unpack_from(raw, body)[0]
        elif kind in _REFERRING:
            ref = size_or_type
        offsets.append(pos)
        max_ref.append(ref)
        group = by_kind.get(kind)
        if group is None:
            group = by_kind[kind] = array("I")
        group.append(type_id)
        pos = end
    if btf.base is not None:  # names in the base's strings are the base's
        names = array("I", (n - btf.strings_base for n in names if n >= btf.strings_base))
    bad = first_bad_name(names, btf.strings, spans, MAX_NAME_LEN)
    if bad is not None:
        btf.name_at(bad + btf.strings_base)  # raises, naming the problem
    count = btf.end_id
    if max(max_ref) >= count:
        index = next(i for i, ref in enumerate(max_ref) if ref >= count)
        type_id = index + btf.first_id - 1
        t = btf.decode(type_id)
        ref = next(r for r in _references(t) if r >= count)
        raise BtfError(f"type {type_id} refers to type {ref}, which does not exist")


def type_ids_by_name(data: bytes, kinds: tuple[Kind, ...]) -> dict[tuple[Kind, str], int]:
    """{(kind, name): id} of the named types of `kinds` in BTF `data` (the first of each),
    without building the whole type table: the kernel's own BTF holds 100k+ types and a
    tracing program needs one of them."""
    if len(data) < HEADER.size:
        raise BtfError(f"{len(data)} bytes is shorter than the BTF header")
    magic, _, _, hdr_len, type_off, type_len, str_off, str_len = HEADER.unpack_from(data)
    if magic != BTF_MAGIC or hdr_len + max(type_off + type_len, str_off + str_len) > len(data):
        raise BtfError("not BTF, or truncated")
    types_raw = data[hdr_len + type_off : hdr_len + type_off + type_len]
    strings = data[hdr_len + str_off : hdr_len + str_off + str_len]
    wanted = {int(k) for k in kinds}
    found: dict[tuple[Kind, str], int] = {}
    pos, type_id = 0, 1
    while pos + TYPE.size <= len(types_raw):
        name_off, info, _ = TYPE.unpack_from(types_raw, pos)
        number = (info >> 24) & 0x1F
        if number in wanted and name_off:
            key = (Kind(number), _string(strings, name_off, "BTF string"))
            found.setdefault(key, type_id)
        pos = _next_record(types_raw, pos)
        type_id += 1
    return found


def _next_record(raw: bytes, pos: int) -> int:
    info: int = TYPE.unpack_from(raw, pos)[1]
    return _record_end(pos, _kind(info), info & 0xFFFF)


def _record_end(pos: int, kind: Kind, vlen: int) -> int:
    fixed, per_item = _EXTRA.get(kind, (0, 0))
    return pos + TYPE.size + fixed + per_item * vlen


_KINDS = tuple(Kind)  # by number: they are 0, 1, 2, ... in order


def _kind(info: int) -> Kind:
    number = (info >> 24) & 0x1F
    if number >= len(_KINDS):
        raise BtfError(f"unknown BTF kind {number}")
    return _KINDS[number]


def _references(t: BtfType) -> list[int]:
    refs = [m.type for m in t.members] + [v.type for v in t.sec_vars]
    if t.array is not None:
        refs.append(t.array[0])
    if t.kind in _REFERRING:
        refs.append(t.size_or_type)
    return refs


def _string(table: bytes, offset: int, what: str) -> str:
    if not 0 <= offset < max(len(table), 1):
        raise BtfError(f"{what} offset {offset} is outside the string table")
    end = table.find(b"\0", offset, offset + MAX_NAME_LEN + 1)
    if end < 0 and len(table) - offset > MAX_NAME_LEN:
        raise BtfError(f"{what} at offset {offset} is longer than {MAX_NAME_LEN} bytes")
    return table[offset : end if end >= 0 else len(table)].decode("latin-1")


# -- .BTF.ext ---------------------------------------------------------------------------------

EXT_HEADER = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, func/line info off+len
EXT_CORE = struct.Struct("<II")  # core_relo off+len, in headers of 40 bytes and more


CORE_KINDS = 13  # enum bpf_core_relo_kind: FIELD_BYTE_OFFSET (0) .. TYPE_MATCHES (12)


@dataclass(frozen=True, slots=True)
class CoreReloRecord:
    """One `struct bpf_core_relo`: instruction `insn` of its section (an index) is patched
    by relocation `kind` of type `type_id` along the access string at `access_off`. `number`
    is its place among all of the object's records: libbpf resolves them in that order."""

    insn: int
    type_id: int
    access_off: int
    kind: int
    number: int


@dataclass
class BtfExt:
    func_info: dict[str, list[FuncInfo]] = field(default_factory=dict)
    line_info: dict[str, list[LineInfo]] = field(default_factory=dict)
    # CO-RE relocations per section, in the order of their instructions (stable).
    core_relos: dict[str, list[CoreReloRecord]] = field(default_factory=dict)


def parse_btf_ext(data: bytes, btf: Btf) -> BtfExt:
    if len(data) < EXT_HEADER.size:
        raise BtfError(f"{len(data)} bytes is shorter than the BTF.ext header")
    magic, version, _, hdr_len, func_off, func_len, line_off, line_len = EXT_HEADER.unpack_from(
        data
    )
    if magic != BTF_MAGIC or version != 1:
        raise BtfError(f"bad BTF.ext magic {magic:#06x} or version {version}")
    ext = BtfExt()
    for name_off, records in _ext_entries(data, hdr_len + func_off, func_len, 2):
        name = btf.name_at(name_off)
        _check_order(records, "function", name)
        ext.func_info[name] = [FuncInfo(r[0] // 8, r[1]) for r in records]
    for name_off, records in _ext_entries(data, hdr_len + line_off, line_len, 4):
        name = btf.name_at(name_off)
        _check_order(records, "line", name)
        ext.line_info[name] = [LineInfo(r[0] // 8, r[1], r[2], r[3]) for r in records]
    if hdr_len >= EXT_HEADER.size + EXT_CORE.size and len(data) >= EXT_HEADER.size + EXT_CORE.size:
        core_off, core_len = EXT_CORE.unpack_from(data, EXT_HEADER.size)
        number = 0
        for name_off, records in _ext_entries(data, hdr_len + core_off, core_len, 4):
            name = btf.name_at(name_off)
            relos = ext.core_relos.setdefault(name, [])
            for insn_off, type_id, access_off, kind in records:
                if insn_off % 8 or kind >= CORE_KINDS:
                    what = f"offset {insn_off}" if insn_off % 8 else f"unknown kind {kind}"
                    raise BtfError(f"CO-RE relocation #{number} of section '{name}': {what}")
                if not 0 < type_id < len(btf.offsets):
                    raise BtfError(
                        f"CO-RE relocation #{number} of section '{name}': type id {type_id} "
                        "does not exist"
                    )
                btf.name_at(access_off)  # checked here: a bad offset is a one-line BtfError
                relos.append(CoreReloRecord(insn_off // 8, type_id, access_off, kind, number))
                number += 1
            relos.sort(key=_record_insn)
    return ext


def _record_insn(record: CoreReloRecord) -> int:
    return record.insn


def _check_order(records: list[tuple[int, ...]], what: str, section: str) -> None:
    """A section's records are one per instruction at most, in the order of the instructions,
    as the kernel takes them (and as the linker finds a function's own by bisection)."""
    insns = [r[0] // 8 for r in records]
    if any(a >= b for a, b in pairwise(insns)):
        raise BtfError(
            f"the {what} records of section '{section}' are not in the order of its instructions"
        )


def _ext_entries(
    data: bytes, start: int, length: int, fields: int
) -> list[tuple[int, list[tuple[int, ...]]]]:
    """(section name offset, records) of one BTF.ext info block; records keep their first
    `fields` u32s (a newer, longer record layout is read by its declared size)."""
    if start + length > len(data):
        raise BtfError("BTF.ext info runs past the end of the section (truncated)")
    if length == 0:
        return []
    chunk = data[start : start + length]
    if len(chunk) < 4:
        raise BtfError("BTF.ext info block is too short for its record size")
    rec_size = struct.unpack_from("<I", chunk)[0]
    if rec_size < 4 * fields:
        raise BtfError(f"BTF.ext record size {rec_size} is smaller than {4 * fields}")
    record = struct.Struct(f"<{fields}I")
    entries = []
    pos = 4
    while pos < len(chunk):
        if pos + 8 > len(chunk):
            raise BtfError("BTF.ext section entry is cut short")
        name_off, count = struct.unpack_from("<II", chunk, pos)
        pos += 8
        if pos + count * rec_size > len(chunk):
            raise BtfError(f"BTF.ext entry of {count} records runs past its end")
        entries.append(
            (name_off, [record.unpack_from(chunk, pos + i * rec_size) for i in range(count)])
        )
        pos += count * rec_size
    return entries
