"""A whole map for people to read, as bpftool prints it: typed by the map's BTF unless the
operator names the types, values as text or JSON.

`map dump --json` prints a list of the map's elements (bpftool's form):

    [{"key": KEY, "value": VALUE}, ...]

each KEY and VALUE as its type gives it: a number (u8..i64, an enum's value), a hex string
(hex: raw bytes), a list of the fields of a struct format (bytes fields in hex), and, typed by
the map's BTF, an object of a struct's fields by name, an enum's name, a char array as text, a
list for another array; a per-CPU map's VALUE is a list of such values, one per possible CPU.
"""

from __future__ import annotations

import errno
import json
import struct
from typing import Any

from bpfloader.client.codec import FROM_BTF, ValueType
from bpfloader.client.maps import BpfMap
from bpfloader.client.syntax import TYPE_HELP
from bpfloader.errors import KernelError, MapError

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
    """A type name (TYPE_NAMES) or struct format as the client's key/value type; None (no
    type named) for the map's own BTF type."""
    if name is None:
        return FROM_BTF
    if name in TYPE_NAMES:
        return TYPE_NAMES[name]
    try:
        struct.calcsize(name)
    except struct.error as e:
        raise MapError(f"{name!r} is not a type: expected {TYPE_HELP}") from e
    return name


def dump(path: str, key: str | None = None, value: str | None = None) -> list[dict[str, Any]]:
    """Every element of the map pinned at `path`, as {"key": ..., "value": ...} made of JSON's
    numbers, strings, lists and objects: by the map's BTF types where `key` or `value` names
    none (structs as objects, enums by name, char arrays as text, as bpftool prints them),
    else by the type named (raw bytes as hex). Per-CPU values: a list, one per possible CPU."""
    try:
        opened = BpfMap.open(path, key=named_type(key), value=named_type(value), readonly=True)
    except KernelError as e:
        if e.operation != "BPF_BTF_GET_FD_BY_ID" or e.errno != errno.EPERM:
            raise
        raise e.explained(
            "the map's types are in its BTF, which the kernel shows only to CAP_SYS_ADMIN:"
            " name them with --key-type and --value-type (hex for raw bytes)"
        ) from e
    with opened as m:
        keys, values = m.key_codec, m.value_codec
        return [{"key": keys.plain(k), "value": values.plain(v)} for k, v in m.lookup_batch()]


def text(value: Any) -> str:
    """A plain() value on one line: numbers and strings (hex, text) as they are; lists and
    objects in brackets and braces, strings in them quoted."""
    if isinstance(value, list):
        return "[" + ", ".join(_inner(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_inner(v)}" for k, v in value.items()) + "}"
    return str(value)


def _inner(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else text(value)
