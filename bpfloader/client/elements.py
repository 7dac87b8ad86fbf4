"""One element of a pinned map, named on the command line: `bpfloader map lookup`, `update` and
`delete` (bpftool's verbs), through BpfMap. Keys and values are written as `map dump` prints
them, by the same types (dump.TYPE_NAMES, or a struct format):

- hex (raw bytes, the default): hex digits, spaces and a 0x in front allowed: `0a000000`,
  `0a 00 00 00`;
- u8..u64, i8..i64 (and a one-field struct format): a number, `7`, `-1`, `0x10`;
- a struct format of several fields: the fields separated by commas, `1,2` (or as `map dump
  --json` prints them, `[1, 2]`); a field of bytes (`4s`) in hex;
- a per-CPU map's value: one value, which every CPU gets, or a JSON list of one per possible
  CPU, `[1, 2, 3, 4]`.

`map lookup --json` prints {"key": KEY, "value": VALUE}, each as `map dump --json` prints it
(numbers, hex strings, lists).
"""

from __future__ import annotations

import json
import re
import struct
from typing import Any

from bpfloader.client import dump
from bpfloader.client.maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST, BpfMap
from bpfloader.errors import MapError

# `map update --flag`: which elements an update may write (bpftool's words).
UPDATE_FLAGS = {"any": BPF_ANY, "noexist": BPF_NOEXIST, "exist": BPF_EXIST}

# One field code of a struct format, with its count (`4s` is one field, `2I` two).
_FIELD = re.compile(r"(\d*)([xcbB?hHiIlLqQnNefdspP])")


def named_type(name: str | None) -> str | type | None:
    """The client's type for a type named on the command line; raw bytes (hex) where none is
    named (text is parsed by the types named, not by the map's BTF)."""
    if name is None:
        return None
    named = dump.named_type(name)
    assert isinstance(named, str | type)  # a name is never the map's BTF
    return named


def lookup(path: str, key: str, key_type: str | None, value_type: str | None) -> dict[str, Any]:
    """{"key": ..., "value": ...} of the element `key` (MapError when there is none)."""
    kind = named_type(key_type)
    with BpfMap.open(path, key=kind, value=named_type(value_type), readonly=True) as m:
        parsed = parse(key, key_type, "key")
        try:
            value = m[parsed]
        except KeyError:
            raise MapError(f"no element with key {key}", file=path) from None
        return {"key": m.key_codec.plain(parsed), "value": m.value_codec.plain(value)}


def update(
    path: str,
    key: str,
    value: str,
    key_type: str | None,
    value_type: str | None,
    flag: str = "any",
) -> None:
    """Write the element `key` (`flag`: UPDATE_FLAGS; KernelError EEXIST or ENOENT when the
    element is, or is not, there)."""
    with BpfMap.open(path, key=named_type(key_type), value=named_type(value_type)) as m:
        parsed = parse(value, value_type, "value", per_cpu=m.cpus)
        m.update_elem(parse(key, key_type, "key"), parsed, UPDATE_FLAGS[flag])


def delete(path: str, key: str, key_type: str | None) -> None:
    """Delete the element `key` (MapError when there is none, or the map's elements cannot be
    deleted: an array's)."""
    with BpfMap.open(path, key=named_type(key_type)) as m:
        try:
            del m[parse(key, key_type, "key")]
        except KeyError:
            raise MapError(f"no element with key {key}", file=path) from None


def parse(text: str, type_name: str | None, what: str, *, per_cpu: int = 0) -> Any:
    """The key or value `text` as the client takes it for the type `type_name` (the module
    says the syntax); for a per-CPU map's value (`per_cpu`: the possible CPUs), a list of one
    value per CPU. MapError, naming what was expected, for text that is not one."""
    kind = named_type(type_name)
    expected = f"{what} {text!r} is not a {type_name or 'hex'} {what}: expected {_syntax(kind)}"
    try:
        written = json.loads(text) if text.lstrip().startswith(("[", '"')) else text
        if not per_cpu:
            return _checked(_value(written, kind), kind)
        if isinstance(written, list) and _is_per_cpu_list(written, kind):
            if len(written) != per_cpu:
                raise MapError(
                    f"{what} {text!r}: {len(written)} values for a per-CPU map of {per_cpu} "
                    "possible CPUs (give one value, which every CPU gets, or one per CPU)"
                )
            return [_checked(_value(v, kind), kind) for v in written]
        return [_checked(_value(written, kind), kind)] * per_cpu
    except MapError:
        raise
    except struct.error as e:
        raise MapError(f"{what} {text!r} does not fit a {type_name} {what}: {e}") from e
    except (ValueError, TypeError) as e:
        raise MapError(expected) from e


def _syntax(kind: str | type | None) -> str:
    if kind is None:
        return "hex digits (0a000000, or 0a 00 00 00)"
    assert isinstance(kind, str)
    fields = _fields(kind)
    if len(fields) == 1:
        return "a number (7, -1, 0x10)"
    return f"{len(fields)} fields separated by commas (1,2), bytes in hex"


def _checked(value: Any, kind: str | type | None) -> Any:
    """`value`, once it is known to pack as `kind` (struct.error when it does not fit)."""
    if isinstance(kind, str):
        struct.pack(kind, *value) if isinstance(value, tuple) else struct.pack(kind, value)
    return value


def _is_per_cpu_list(written: list[Any], kind: str | type | None) -> bool:
    """Whether a list is one value per CPU, not the fields of one struct value."""
    if isinstance(kind, str) and len(_fields(kind)) > 1:
        return all(isinstance(v, list | str) for v in written)
    return True


def _value(written: Any, kind: str | type | None) -> Any:
    if kind is None:
        return _hex(written)
    assert isinstance(kind, str)  # named_type gives a struct format or None
    fields = _fields(kind)
    if len(fields) == 1:
        return _field(written, fields[0])
    items = written if isinstance(written, list) else str(written).strip("[] ").split(",")
    if len(items) != len(fields):
        raise ValueError(f"{len(items)} fields given, the format {kind!r} has {len(fields)}")
    return tuple(_field(item, code) for item, code in zip(items, fields, strict=True))


def _fields(kind: str) -> list[str]:
    """The code of each field of a struct format, in order (pad bytes have none)."""
    codes = []
    for count, code in _FIELD.findall(kind.lstrip("@=<>!")):
        if code == "x":
            continue
        codes += [code] if code in "sp" else [code] * int(count or 1)
    return codes


def _field(written: Any, code: str) -> Any:
    if code in "sp":
        return _hex(written)
    if code == "c":
        return _hex(written)[:1]
    if code in "efd":
        return float(written)
    if code == "?":
        return written if isinstance(written, bool) else bool(int(str(written), 0))
    if isinstance(written, int):
        return written
    return int(str(written).strip(), 0)


def _hex(written: Any) -> bytes:
    if not isinstance(written, str):
        raise TypeError(f"expected hex digits, not {written!r}")
    digits = "".join(written.split()).removeprefix("0x")
    return bytes.fromhex(digits)
