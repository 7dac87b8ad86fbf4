"""A whole map for people to read: the types an operator can name, values as text or JSON.

`map dump --json` prints a list of the map's elements (bpftool's form):

    [{"key": KEY, "value": VALUE}, ...]

each KEY and VALUE as its type gives it: a number (u8..i64), a hex string (hex: raw bytes), a
list of the fields of a struct format (bytes fields in hex); a per-CPU map's VALUE is a list of
such values, one per possible CPU.
"""

from __future__ import annotations

import struct
from typing import Any

from bpfloader.client.codec import ValueType
from bpfloader.client.maps import BpfMap
from bpfloader.client.syntax import TYPE_HELP
from bpfloader.errors import MapError

# Native byte order, standard sizes: what programs on this machine wrote.
TYPE_NAMES: dict[str, str | None] = {
    "hex": None,
    "u8": "=B",
    "u16": "=H",
    "u32": "=I",
    "u64": "=Q",
    "i8": "=b",
    "i16": "=h",
    "i32": "=i",
    "i64": "=q",
}


def named_type(name: str | None) -> ValueType:
    """A type name (TYPE_NAMES) or struct format as the client's key/value type."""
    if name is None or name in TYPE_NAMES:
        return TYPE_NAMES.get(name or "hex")
    try:
        struct.calcsize(name)
    except struct.error as e:
        raise MapError(f"{name!r} is not a type: expected {TYPE_HELP}") from e
    return name


def dump(path: str, key: str | None = None, value: str | None = None) -> list[dict[str, Any]]:
    """Every element of the map pinned at `path`, as {"key": ..., "value": ...} made of
    numbers, lists and hex strings (per-CPU values: a list, one per possible CPU)."""
    with BpfMap.open(path, key=named_type(key), value=named_type(value), readonly=True) as m:
        return [{"key": plain(k), "value": plain(v)} for k, v in m.lookup_batch()]


def plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(text(v) for v in value) + "]"
    return str(value)
