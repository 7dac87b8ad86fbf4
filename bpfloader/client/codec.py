"""Turning Python values into map keys and values and back: struct formats, ctypes, bytes."""

from __future__ import annotations

import ctypes
import struct
from typing import Any

from bpfloader.errors import MapError

# A struct format string, a ctypes type (c_uint32, a Structure, an Array), or None for bytes.
ValueType = str | type | None


class Codec:
    """One side of a map (key or value): `kind` is a struct format, ctypes type or None."""

    def __init__(self, kind: ValueType, size: int, what: str):
        self.kind = kind
        self.size = size
        self.what = what
        declared = _size_of(kind)
        if declared is not None and declared != size:
            raise MapError(f"{what} type is {declared} bytes, the map's {what} is {size} bytes")

    def encode(self, value: Any) -> bytes:
        if self.kind is None:
            data = bytes(value)
        elif isinstance(self.kind, str):
            data = (
                struct.pack(self.kind, *value)
                if isinstance(value, tuple)
                else struct.pack(self.kind, value)
            )
        elif isinstance(value, self.kind):
            data = bytes(value)  # type: ignore[call-overload]
        else:
            data = bytes(self.kind(value))
        if len(data) != self.size:
            raise MapError(f"{len(data)} bytes given where the map's {self.what} is {self.size}")
        return data

    def decode(self, data: bytes) -> Any:
        if self.kind is None:
            return data
        if isinstance(self.kind, str):
            values = struct.unpack(self.kind, data)
            return values[0] if len(values) == 1 else values
        decoded = self.kind.from_buffer_copy(data)  # type: ignore[attr-defined]
        return getattr(decoded, "value", decoded) if issubclass(self.kind, _SIMPLE) else decoded


_SIMPLE: type = ctypes.c_int.__mro__[1]  # ctypes' _SimpleCData, which has no public name


def _size_of(kind: ValueType) -> int | None:
    if kind is None:
        return None
    if isinstance(kind, str):
        return struct.calcsize(kind)
    return ctypes.sizeof(kind)
