"""Turning Python values into map keys and values and back: struct formats, ctypes types, raw
bytes, or the map's own BTF types (layouts.py)."""

from __future__ import annotations

import ctypes
import struct
from typing import Any, Final

from bpfloader.client.layouts import Layout
from bpfloader.errors import MapError, MapTypeError


class FromBtf:
    """The default key and value type: the map's own, from its BTF (raw bytes where the map
    has none)."""

    def __repr__(self) -> str:
        return "FROM_BTF"


FROM_BTF: Final = FromBtf()

# What a caller names a side of a map with: a struct format ("I", "<Q", "4sI"), a ctypes type
# (c_uint32, a Structure, an Array), None for raw bytes, or FROM_BTF.
ValueType = str | type | FromBtf | None

TYPE_GIVEN = "a struct format such as 'I', a ctypes type, or None for raw bytes"


class Codec:
    """One side of a map (key or value), `size` bytes: `kind` is a struct format, a ctypes
    type, None for raw bytes, or the layout of the map's BTF type."""

    def __init__(self, kind: str | type | Layout | None, size: int, what: str):
        self.kind = kind
        self.size = size
        self.what = what
        declared = _size_of(kind, what)
        if declared is not None and declared != size:
            raise MapError(f"{what} type is {declared} bytes, the map's {what} is {size} bytes")

    @property
    def python_type(self) -> type | str:
        """What a key or value is made of: the class a BTF type decodes into, the ctypes type
        or struct format given, or bytes."""
        if isinstance(self.kind, Layout):
            return self.kind.python_type
        return bytes if self.kind is None else self.kind

    def encode(self, value: Any) -> bytes:
        kind = self.kind
        if kind is None:
            return self._raw(value)
        if isinstance(kind, Layout):
            out = bytearray(self.size)
            kind.pack(value, out, 0, self.what)
            return bytes(out)
        if isinstance(kind, str):
            values = value if isinstance(value, tuple) else (value,)
            try:
                data = struct.pack(kind, *values)
            except struct.error as e:
                raise MapError(f"{self.what} {value!r} does not fit format {kind!r}: {e}") from e
        elif isinstance(value, kind):
            data = bytes(value)  # type: ignore[call-overload]
        else:
            try:
                data = bytes(kind(value))
            except TypeError as e:
                raise MapTypeError(f"{self.what} {value!r} is not a {kind.__name__}: {e}") from e
        if len(data) != self.size:
            raise MapError(f"{len(data)} bytes given where the map's {self.what} is {self.size}")
        return data

    def _raw(self, value: Any) -> bytes:
        """Raw bytes, refused unread unless exactly the map's size: never bytes(9), nine zeros
        made of an int, or bytes(2**40)."""
        if isinstance(value, int):
            raise MapTypeError(
                f"a raw-bytes map {self.what} takes {self.size} bytes, not the int {value}:"
                f" give the map a {self.what} type ({self.what}='I', say) to use ints"
            )
        try:
            view = memoryview(value)
        except TypeError:
            raise MapTypeError(
                f"a raw-bytes map {self.what} takes {self.size} bytes, not {type(value).__name__}"
            ) from None
        if view.nbytes != self.size:
            raise MapError(f"{view.nbytes} bytes given where the map's {self.what} is {self.size}")
        return view.tobytes()

    def plain(self, value: Any) -> Any:
        """A decoded key or value as JSON has it: by its BTF layout (structs as objects, enums
        by name, char arrays as text); raw bytes as hex; a per-CPU list or a tuple as a list."""
        if isinstance(value, list):  # one per CPU
            return [self.plain(v) for v in value]
        if isinstance(self.kind, Layout):
            return self.kind.plain(value)
        if isinstance(value, bytes):
            return value.hex()
        if isinstance(value, tuple):
            return [self.plain(v) for v in value]
        return value

    def decode(self, data: bytes) -> Any:
        kind = self.kind
        if kind is None:
            return data
        if isinstance(kind, Layout):
            return kind.unpack(data, 0)
        if isinstance(kind, str):
            values = struct.unpack(kind, data)
            return values[0] if len(values) == 1 else values
        decoded = kind.from_buffer_copy(data)  # type: ignore[attr-defined]
        return getattr(decoded, "value", decoded) if issubclass(kind, _SIMPLE) else decoded


_SIMPLE: type = ctypes.c_int.__mro__[1]  # ctypes' _SimpleCData, which has no public name
_CTYPES_BASES: tuple[type, ...] = (_SIMPLE, ctypes.Structure, ctypes.Union, ctypes.Array)


def _size_of(kind: object, what: str) -> int | None:
    """The size of a key or value type; MapTypeError for something that is not one."""
    if kind is None:
        return None
    if isinstance(kind, Layout):
        return kind.size
    if isinstance(kind, str):
        try:
            return struct.calcsize(kind)
        except struct.error as e:
            raise MapTypeError(f"{what}={kind!r} is not a struct format: {e}") from e
    if isinstance(kind, type) and issubclass(kind, _CTYPES_BASES):
        return ctypes.sizeof(kind)  # type: ignore[arg-type]
    shown = f"the {type(kind).__name__} value {kind!r}"
    if isinstance(kind, type):
        shown = f"the class {kind.__name__}, which is not a ctypes type"
    raise MapTypeError(f"{what}= takes a type ({TYPE_GIVEN}), not {shown}")
