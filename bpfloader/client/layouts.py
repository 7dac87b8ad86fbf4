"""A map's keys and values laid out by their BTF types: bytes decoded into Python values and
values encoded back, as bcc gives a table's keys and leaves, here from the BTF the kernel keeps
for the map (a map made from an object built with -g has it).

What each kind of type becomes:

- an integer (1 to 16 bytes, a bitfield too): int; `_Bool`: bool; a pointer: int (its address)
- an enum: the `enum.IntEnum` member of that value (an int for a value the enum does not name);
  written from an int, a member or a member's name
- `float`, `double`: float (floats of other sizes: their bytes)
- a char array (`char comm[16]`): bytes, without the trailing NULs (b"bash"); written from bytes
  or str (UTF-8), NUL-padded. Arrays of other elements: tuples (written from any sequence, the
  elements it leaves out zero)
- a struct: a frozen dataclass named after it, one field per member, so `value.pid`,
  `dataclasses.asdict(value)`, and struct keys that are dict keys. Every field defaults to zero:
  `m.value_type(pid=1)` is a whole value. The members of an anonymous struct or union member are
  fields of their own, as C reaches them. A member named like a Python keyword, or like
  `__dunder__`, gets a trailing `_` (`from` -> `from_`). A struct can also be written from a dict
  (members left out are zero) or a tuple in member order
- a union: a frozen dataclass whose fields are every member, each decoded; writing one writes
  the members that are not None, in order (fields default to None: `U(count=3)` writes `count`)

The BTF comes from the object, which nobody vouched for: laying a type out is bounded. It walks
at most MAX_DEPTH types deep, builds at most MAX_NODES members, enumerators and arrays, and
refuses a type whose value would decode into more than MAX_ITEMS Python objects (an array of
2**32 empty structs is 0 bytes). Members must lie inside their struct and sizes add up;
anything else is a MapError naming the type (fuzz/contract.py holds `layout` to that).
"""

from __future__ import annotations

import dataclasses
import enum
import keyword
import struct
from collections.abc import Mapping, Sequence
from typing import Any

from bpfloader.errors import LoaderError, MapError, MapTypeError
from bpfloader.obj.btf import INT_BOOL, INT_CHAR, INT_SIGNED, Btf, BtfType, Kind

MAX_DEPTH = 32
MAX_NODES = 8192
MAX_ITEMS = 1 << 20
POINTER_SIZE = 8  # BPF is a 64-bit target whatever the machine


class Layout:
    """How values of one BTF type lie in bytes: `size` bytes, decoding into `items` Python
    objects. unpack() reads one at `offset` of `data`; pack() writes one into `out` (zeroed
    where nothing is written), naming `where` (`value.comm[3]`) in its errors."""

    size: int
    items: int

    def unpack(self, data: bytes, offset: int) -> Any:
        raise NotImplementedError

    def pack(self, value: Any, out: bytearray, offset: int, where: str) -> None:
        raise NotImplementedError

    def zero(self) -> Any:
        """The value of all-zero bytes."""
        return self.unpack(bytes(self.size), 0)

    def plain(self, value: Any) -> Any:
        """`value` as JSON has it: numbers, strings, lists, objects."""
        return value

    @property
    def python_type(self) -> type:
        """What unpack() gives."""
        return type(self.zero())


class Integer(Layout):
    """`bits` bits from bit `shift` of `size` little-endian bytes (a bitfield's span)."""

    def __init__(
        self, size: int, signed: bool, boolean: bool = False, shift: int = 0, bits: int = 0
    ):
        self.size, self.signed, self.boolean = size, signed, boolean
        self.shift, self.bits = shift, bits or 8 * size
        self.items = 1
        self._whole = shift == 0 and self.bits == 8 * size

    def unpack(self, data: bytes, offset: int) -> Any:
        raw = int.from_bytes(data[offset : offset + self.size], "little")
        if not self._whole:
            raw = (raw >> self.shift) & ((1 << self.bits) - 1)
        if self.signed and raw >> (self.bits - 1):
            raw -= 1 << self.bits
        return bool(raw) if self.boolean else raw

    def pack(self, value: Any, out: bytearray, offset: int, where: str) -> None:
        if not isinstance(value, int):
            raise MapTypeError(f"{where} takes an int, not {_type_name(value)}")
        bits = self.bits
        low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if self.signed else (0, 1 << bits)
        if not low <= value < high:
            raise MapError(f"{where}: {value} does not fit in {self.describe()}")
        raw = value & ((1 << bits) - 1)
        end = offset + self.size
        if not self._whole:
            span = int.from_bytes(out[offset:end], "little")
            span &= ~(((1 << bits) - 1) << self.shift)
            raw = span | raw << self.shift
        out[offset:end] = raw.to_bytes(self.size, "little")

    def describe(self) -> str:
        what = "bool" if self.boolean else f"{'signed' if self.signed else 'unsigned'} integer"
        return f"a {self.bits}-bit {what}"


_FLOATS = {4: struct.Struct("<f"), 8: struct.Struct("<d")}


class Float(Layout):
    def __init__(self, size: int):
        self.size, self.items = size, 1
        self._format = _FLOATS[size]

    def unpack(self, data: bytes, offset: int) -> Any:
        return self._format.unpack_from(data, offset)[0]

    def pack(self, value: Any, out: bytearray, offset: int, where: str) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise MapTypeError(f"{where} takes a float, not {_type_name(value)}")
        try:
            self._format.pack_into(out, offset, value)
        except (OverflowError, struct.error) as e:
            raise MapError(f"{where}: {value} does not fit in a {8 * self.size}-bit float") from e


class Opaque(Layout):
    """Bytes kept as they are (a float of a size Python has no type for)."""

    def __init__(self, size: int):
        self.size, self.items = size, 1

    def unpack(self, data: bytes, offset: int) -> Any:
        return bytes(data[offset : offset + self.size])

    def pack(self, value: Any, out: bytearray, offset: int, where: str) -> None:
        data = _bytes_at_most(value, self.size, where)
        if len(data) != self.size:
            raise MapError(f"{where} takes {self.size} bytes, not {len(data)}")
        out[offset : offset + self.size] = data

    def plain(self, value: Any) -> Any:
        return bytes(value).hex()


class Enumeration(Layout):
    """An enum: its integer, named by `members` (an IntEnum) where Python can hold the names."""

    def __init__(self, integer: Integer, members: type[enum.IntEnum] | None):
        self.integer, self.members = integer, members
        self.size, self.items = integer.size, 1

    def unpack(self, data: bytes, offset: int) -> Any:
        value = self.integer.unpack(data, offset)
        if self.members is None:
            return value
        try:
            return self.members(value)
        except ValueError:
            return value  # a value the enum does not name

    def pack(self, value: Any, out: bytearray, offset: int, where: str) -> None:
        if isinstance(value, str) and self.members is not None:
            try:
                value = self.members[value]
            except KeyError:
                enum_name = self.members.__name__
                raise MapError(f"{where}: {value!r} is not a name of {enum_name}") from None
        self.integer.pack(value, out, offset, where)

    def plain(self, value: Any) -> Any:
        return value.name if isinstance(value, enum.Enum) else value

    @property
    def python_type(self) -> type:
        return self.members or int


class CharArray(Layout):
    """`char name[N]`: bytes without trailing NULs; text when JSON shows it (as bpftool)."""

    def __init__(self, count: int):
        self.size, self.items = count, 1

    def unpack(self, data: bytes, offset: int) -> Any:
        return bytes(data[offset : offset + self.size]).rstrip(b"\0")

    def zero(self) -> Any:
        return b""

    def pack(self, value: Any, out: bytearray, offset: int, where: str) -> None:
        if isinstance(value, str):
            value = value.encode()
        data = _bytes_at_most(value, self.size, where)
        out[offset : offset + len(data)] = data

    def plain(self, value: Any) -> Any:
        try:
            text = bytes(value).decode()
        except UnicodeDecodeError:
            text = None
        if text is not None and text.isprintable():
            return text
        return list(bytes(value).ljust(self.size, b"\0"))


class Array(Layout):
    def __init__(self, element: Layout, count: int):
        self.element, self.count = element, count
        self.size = element.size * count
        self.items = 1 + element.items * count

    def unpack(self, data: bytes, offset: int) -> Any:
        element, step = self.element, self.element.size
        return tuple(element.unpack(data, offset + i * step) for i in range(self.count))

    def pack(self, value: Any, out: bytearray, offset: int, where: str) -> None:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise MapTypeError(f"{where} takes a sequence of {self.count}, not {_type_name(value)}")
        if len(value) > self.count:
            raise MapError(f"{where} holds {self.count} elements, not {len(value)}")
        step = self.element.size
        for i, element in enumerate(value):
            self.element.pack(element, out, offset + i * step, f"{where}[{i}]")

    def zero(self) -> Any:
        return (self.element.zero(),) * self.count

    def plain(self, value: Any) -> Any:
        return [self.element.plain(v) for v in value]

    @property
    def python_type(self) -> type:
        return tuple


@dataclasses.dataclass(frozen=True)
class Field:
    """One field of a struct's dataclass: a member (or a member of an anonymous member)."""

    name: str  # the dataclass field: the member's name, made a Python name
    offset: int  # in bytes, from the start of the outermost struct laid out
    layout: Layout
    overlaps: bool  # a union's member: None leaves it unwritten, and is its default


class Composite(Layout):
    """A struct or union: its dataclass, `value_class`, and the fields that fill it."""

    def __init__(self, value_class: type, fields: tuple[Field, ...], size: int):
        self.value_class, self.fields, self.size = value_class, fields, size
        self.items = 1 + sum(f.layout.items for f in fields)

    def unpack(self, data: bytes, offset: int) -> Any:
        return self.value_class(*[f.layout.unpack(data, offset + f.offset) for f in self.fields])

    def pack(self, value: Any, out: bytearray, offset: int, where: str) -> None:
        for f, given in self._given(value, where):
            if given is not None:
                f.layout.pack(given, out, offset + f.offset, f"{where}.{f.name}")

    def _given(self, value: Any, where: str) -> list[tuple[Field, Any]]:
        name = self.value_class.__name__
        if isinstance(value, self.value_class):
            return [(f, getattr(value, f.name)) for f in self.fields]
        if isinstance(value, Mapping):
            unknown = set(value) - {f.name for f in self.fields}
            if unknown:
                raise MapError(f"{where}: {name} has no member {sorted(map(str, unknown))[0]!r}")
            return [(f, value.get(f.name)) for f in self.fields]
        if isinstance(value, tuple):
            if len(value) > len(self.fields):
                raise MapError(f"{where}: {name} has {len(self.fields)} members, not {len(value)}")
            return list(zip(self.fields, value, strict=False))
        raise MapTypeError(
            f"{where} takes a {name} (or a dict of its members), not {_type_name(value)}"
        )

    def zero(self) -> Any:
        return self.value_class()

    def plain(self, value: Any) -> Any:
        return {
            f.name: f.layout.plain(v)
            for f in self.fields
            if (v := getattr(value, f.name)) is not None
        }

    @property
    def python_type(self) -> type:
        return self.value_class


def layout(btf: Btf, type_id: int, size: int, what: str) -> Layout:
    """The layout of BTF type `type_id`, which must be `size` bytes (the map's `what`: key or
    value); MapError for a type that cannot be one, or that lies about its size."""
    builder = _Builder(btf)
    try:
        found = builder.layout(type_id, 0, "")
    except LoaderError as e:  # BtfError too: a type or a string that the BTF does not hold
        raise MapError(f"the map's {what} type (BTF type {type_id}): {e.reason}") from e
    if found.size != size:
        raise MapError(
            f"the map's {what} type (BTF type {type_id}) is {found.size} bytes,"
            f" the map's {what} is {size} bytes"
        )
    if found.items > MAX_ITEMS:
        raise MapError(
            f"the map's {what} type (BTF type {type_id}) decodes into {found.items} values,"
            f" more than {MAX_ITEMS}"
        )
    return found


class _Builder:
    """One walk of a BTF: each struct, union and enum laid out once (one dataclass per type)."""

    def __init__(self, btf: Btf):
        self.btf = btf
        self.nodes = 0
        self.made: dict[int, Layout] = {}

    def count(self, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > MAX_NODES:
            raise MapError(f"more than {MAX_NODES} members, enumerators and arrays")

    def layout(self, type_id: int, depth: int, name_hint: str) -> Layout:
        if depth > MAX_DEPTH:
            raise MapError(f"types nested more than {MAX_DEPTH} deep (or one holds itself)")
        t = self.btf.type(type_id) if type_id else None
        while t is not None and t.kind in _QUALIFIERS:
            if t.kind is Kind.TYPEDEF and not name_hint:
                name_hint = t.name
            depth += 1
            if depth > MAX_DEPTH:
                raise MapError(f"type {type_id}: typedefs or qualifiers nested too deep")
            t = self.btf.type(t.size_or_type) if t.size_or_type else None
        if t is None:
            raise MapError("void has no values")
        made = self.made.get(t.id)
        if made is not None:
            return made
        made = self._make(t, depth, name_hint)
        if t.kind in (Kind.STRUCT, Kind.UNION, Kind.ENUM, Kind.ENUM64):
            self.made[t.id] = made
        return made

    def _make(self, t: BtfType, depth: int, name_hint: str) -> Layout:
        kind = t.kind
        if kind is Kind.INT:
            return self._integer(t)
        if kind is Kind.PTR:
            return Integer(POINTER_SIZE, signed=False)
        if kind in (Kind.ENUM, Kind.ENUM64):
            return self._enum(t, name_hint)
        if kind is Kind.FLOAT:
            size = t.size_or_type
            if size not in (2, 4, 8, 12, 16):  # the kernel's rule
                raise MapError(f"FLOAT type {t.id} is {size} bytes")
            return Float(size) if size in (4, 8) else Opaque(size)
        if kind is Kind.ARRAY and t.array is not None:
            element_id, count = t.array
            self.count(1)
            element = self.layout(element_id, depth + 1, "")
            if isinstance(element, Integer) and self._is_char(element_id):
                return CharArray(count)
            array = Array(element, count)
            if array.items > MAX_ITEMS:
                raise MapError(f"array type {t.id} decodes into more than {MAX_ITEMS} values")
            return array
        if kind in (Kind.STRUCT, Kind.UNION):
            return self._composite(t, depth, name_hint)
        raise MapError(f"type {t.id} is a {kind.name}, which has no values")

    def _integer(self, t: BtfType) -> Integer:
        encoding, bit_offset, bits = self.btf.int_encoding(t)
        size = t.size_or_type
        if size not in (1, 2, 4, 8, 16) or not 0 < bits <= 8 * size or bit_offset + bits > 8 * size:
            raise MapError(f"INT type {t.id} has {bits} bits at bit {bit_offset} of {size} bytes")
        signed = bool(encoding & INT_SIGNED)
        return Integer(size, signed, bool(encoding & INT_BOOL), bit_offset, bits)

    def _is_char(self, element_id: int) -> bool:
        """bpftool's rule for a string: an array of 1-byte ints of encoding CHAR or named
        `char` (a typedef of char is not looked through)."""
        t = self.btf.type(element_id)
        if t.kind is not Kind.INT or t.size_or_type != 1:
            return False
        return bool(self.btf.int_encoding(t)[0] & INT_CHAR) or t.name == "char"

    def _enum(self, t: BtfType, name_hint: str) -> Enumeration:
        size = t.size_or_type
        if size not in (1, 2, 4, 8):
            raise MapError(f"enum type {t.id} is {size} bytes")
        self.count(t.vlen)
        signed = t.kflag
        mask = (1 << (8 * size)) - 1
        pairs = []
        for name_off, value in self.btf.enumerators(t):
            value &= mask  # an ENUM's values are read as signed 32-bit ones
            if signed and value >> (8 * size - 1):
                value -= 1 << (8 * size)
            pairs.append((self.btf.name_at(name_off), value))
        return Enumeration(Integer(size, signed), _int_enum(t.name or name_hint, pairs))

    def _composite(self, t: BtfType, depth: int, name_hint: str) -> Composite:
        fields = self._fields(t, 0, depth, t.kind is Kind.UNION)
        if 1 + sum(f.layout.items for f in fields) > MAX_ITEMS:  # before any field's zero
            raise MapError(f"type {t.id} decodes into more than {MAX_ITEMS} values")
        seen: set[str] = set()
        for f in fields:
            if f.name in seen:
                raise MapError(f"type {t.id} has two members named {f.name!r}")
            seen.add(f.name)
        value_class = dataclasses.make_dataclass(
            _class_name(t.name or name_hint, t.kind),
            [
                (f.name, Any, dataclasses.field(default=None if f.overlaps else f.layout.zero()))
                for f in fields
            ],
            frozen=True,
        )
        value_class.__module__ = __name__
        return Composite(value_class, tuple(fields), t.size_or_type)

    def _fields(self, t: BtfType, base: int, depth: int, overlaps: bool) -> list[Field]:
        """The fields of struct or union `t` at byte `base`, anonymous members' flattened."""
        if depth > MAX_DEPTH:
            raise MapError(f"types nested more than {MAX_DEPTH} deep (or one holds itself)")
        self.count(t.vlen)
        size = t.size_or_type
        fields: list[Field] = []
        for member in t.members:
            bit_offset, bitfield = member.bit_offset, 0
            if t.kflag:
                bit_offset, bitfield = member.bit_offset & 0xFFFFFF, member.bit_offset >> 24
            if not member.name:
                resolved = self.btf.resolve(member.type)
                if resolved.kind in (Kind.STRUCT, Kind.UNION) and not bitfield:
                    if bit_offset % 8 or bit_offset // 8 + resolved.size_or_type > size:
                        raise MapError(f"an anonymous member of type {t.id} lies outside it")
                    inner_overlaps = overlaps or resolved.kind is Kind.UNION
                    fields += self._fields(
                        resolved, base + bit_offset // 8, depth + 1, inner_overlaps
                    )
                continue  # padding: `int :3`
            member_layout = self.layout(member.type, depth + 1, "")
            offset = bit_offset // 8
            if bitfield or bit_offset % 8:
                member_layout = self._bitfield(member_layout, bit_offset % 8, bitfield, t)
            if offset + member_layout.size > size:
                raise MapError(
                    f"member {member.name} of type {t.id} lies outside it"
                    f" (bytes {offset}..{offset + member_layout.size} of {size})"
                )
            fields.append(Field(_field_name(member.name), base + offset, member_layout, overlaps))
        return fields

    @staticmethod
    def _bitfield(base: Layout, shift: int, bits: int, t: BtfType) -> Layout:
        integer = base.integer if isinstance(base, Enumeration) else base
        if not isinstance(integer, Integer):
            raise MapError(f"a bitfield of type {t.id} is not an integer")
        bits = bits or integer.bits
        if bits > integer.bits:
            raise MapError(f"a bitfield of type {t.id} is wider than its type")
        span = Integer((shift + bits + 7) // 8, integer.signed, integer.boolean, shift, bits)
        return Enumeration(span, base.members) if isinstance(base, Enumeration) else span


_QUALIFIERS = frozenset({Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG})


def _field_name(name: str) -> str:
    if not _is_c_name(name):
        raise MapError(f"member name {name!r} is not a C identifier")
    if keyword.iskeyword(name) or (len(name) > 4 and name.startswith("__") and name.endswith("__")):
        return name + "_"
    return name


def _is_c_name(name: str) -> bool:
    """A C identifier: ASCII letters, digits and '_' (Python's identifiers take more)."""
    return name.isascii() and name.isidentifier()


def _class_name(name: str, kind: Kind) -> str:
    if _is_c_name(name) and not keyword.iskeyword(name):
        return name
    return kind.name.lower()  # an anonymous struct or union


def _int_enum(name: str, pairs: list[tuple[str, int]]) -> type[enum.IntEnum] | None:
    """An IntEnum of the enumerators; None where Python's Enum cannot hold their names (a
    `_sunder_` one, a name given twice): the values then stay plain ints."""
    if not pairs or not all(_is_c_name(n) and not n.startswith("_") for n, _ in pairs):
        return None
    try:
        members = enum.IntEnum(_class_name(name, Kind.ENUM), pairs)  # type: ignore[misc]
    except (TypeError, ValueError, AttributeError):
        return None
    members.__module__ = __name__
    return members


def _bytes_at_most(value: Any, size: int, where: str) -> bytes:
    """The bytes of a bytes-like `value`, refused before any copy when longer than `size`."""
    try:
        view = memoryview(value)
    except TypeError:
        raise MapTypeError(f"{where} takes bytes, not {_type_name(value)}") from None
    if view.nbytes > size:
        raise MapError(f"{where} holds {size} bytes, not {view.nbytes}")
    return view.tobytes()


def _type_name(value: Any) -> str:
    if isinstance(value, int | float):
        return f"{type(value).__name__} {value!r}"
    return type(value).__name__
