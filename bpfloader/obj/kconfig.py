"""`__kconfig` externs, as libbpf makes them (pure: the config text and the kernel's facts are
values given to `values`).

An object's undefined variables that its BTF puts in the `.kconfig` DATASEC become one array
map of one element, `.kconfig`, read-only to programs and frozen: libbpf lays the externs out
sorted by alignment (largest first), then size (smallest first), then name, each at its
alignment. Values: `LINUX_KERNEL_VERSION`, `LINUX_HAS_BPF_COOKIE`, `LINUX_HAS_SYSCALL_WRAPPER`
(given by the kernel layer) and `CONFIG_*` from the kernel's config text; a `__weak` extern
the config lacks is 0, any other is an error naming it.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.btf import Btf, BtfError, BtfType, Kind

KCONFIG_SECTION = ".kconfig"
KSYMS_SECTION = ".ksyms"
BTF_INT_SIGNED = 1
BTF_INT_BOOL = 4
TRISTATE = {"n": 0, "y": 1, "m": 2}  # enum libbpf_tristate
KERNEL_VERSION = "LINUX_KERNEL_VERSION"
VIRTUAL_PREFIX = "LINUX_"
CONFIG_PREFIX = "CONFIG_"
# What strtoull(value, &end, 0) reads whole: hex, octal (a leading 0) or decimal, signed.
C_INTEGER = re.compile(r"([-+]?)(?:0[xX]([0-9a-fA-F]+)|0([0-7]*)|([1-9][0-9]*))")


class KcfgType(Enum):
    BOOL = "bool"
    CHAR = "char"
    TRISTATE = "tristate"
    INT = "int"
    CHAR_ARRAY = "char array"


@dataclass(frozen=True)
class KconfigExtern:
    name: str
    type: KcfgType
    size: int
    align: int
    signed: bool
    weak: bool
    offset: int = 0


@dataclass(frozen=True)
class Kconfig:
    """The `.kconfig` map's layout: its externs, in libbpf's order, and its value's size."""

    externs: tuple[KconfigExtern, ...]
    size: int
    datasec_id: int
    var_ids: tuple[int, ...]  # the BTF VARs, whose linkage the kernel gets as allocated

    @property
    def needs_config(self) -> bool:
        """Whether the kernel's config must be read (only `CONFIG_*` externs come from it)."""
        return any(e.name.startswith(CONFIG_PREFIX) for e in self.externs)

    def offsets(self) -> dict[str, int]:
        return {e.name: e.offset for e in self.externs}


@dataclass(frozen=True)
class KernelFacts:
    """What the virtual `LINUX_*` externs say about the running kernel."""

    version: int  # LINUX_VERSION_CODE as libbpf computes it (patch level capped at 255)
    bpf_cookie: bool
    syscall_wrapper: bool


def _error(name: str, reason: str) -> ObjectFormatError:
    return ObjectFormatError(f"extern '{name}' ({KCONFIG_SECTION}): {reason}", section=".BTF")


def _kcfg_type(btf: Btf, type_id: int) -> tuple[KcfgType, bool] | None:
    """libbpf's kcfg type of a variable's type, and whether it is signed; None: unsupported."""
    t = btf.resolve(type_id)
    if t.kind is Kind.INT:
        encoding = btf.int_encoding(t)[0]
        signed = bool(encoding & BTF_INT_SIGNED)
        if encoding & BTF_INT_BOOL:
            return (KcfgType.BOOL, False) if t.size_or_type == 1 else None
        if t.size_or_type == 1:
            return KcfgType.CHAR, signed
        if t.size_or_type in (2, 4, 8):
            return KcfgType.INT, signed
        return None
    if t.kind in (Kind.ENUM, Kind.ENUM64):
        if t.name != "libbpf_tristate" or t.size_or_type != (4 if t.kind is Kind.ENUM else 8):
            return None
        return KcfgType.TRISTATE, False
    if t.kind is Kind.ARRAY and t.array is not None and t.array[1]:
        element = _kcfg_type(btf, t.array[0])
        return (KcfgType.CHAR_ARRAY, False) if element and element[0] is KcfgType.CHAR else None
    return None


def read_kconfig(btf: Btf, weak: Mapping[str, bool]) -> Kconfig | None:
    """The `.kconfig` layout of an object whose undefined symbols are `weak` (name ->
    whether `__weak`), or None where its BTF has no `.kconfig` DATASEC."""
    datasec = btf.datasec(KCONFIG_SECTION)
    if datasec is None:
        return None
    externs, var_ids = [], []
    try:
        for var in datasec.sec_vars:
            v: BtfType = btf.type(var.type)
            if v.name not in weak:
                raise _error(v.name, "not an undefined symbol of the object")
            found = _kcfg_type(btf, v.size_or_type)
            if found is None:
                raise _error(
                    v.name, "type is not one libbpf supports (bool, tristate, integer, char array)"
                )
            kind, signed = found
            size = btf.size_of(v.size_or_type)
            align = 1 if kind is KcfgType.CHAR_ARRAY else size
            externs.append(KconfigExtern(v.name, kind, size, align, signed, weak[v.name]))
            var_ids.append(v.id)
    except BtfError as e:
        raise ObjectFormatError(f"{KCONFIG_SECTION}: {e}", section=".BTF") from e
    externs.sort(key=lambda x: (-x.align, x.size, x.name.encode()))
    placed, at = [], 0
    for x in externs:
        offset = -(-at // x.align) * x.align
        placed.append(KconfigExtern(x.name, x.type, x.size, x.align, x.signed, x.weak, offset))
        at = offset + x.size
    return Kconfig(tuple(placed), at, datasec.id, tuple(var_ids))


def parse_config(text: str) -> dict[str, str]:
    """A kernel config's `CONFIG_NAME=value` lines, as libbpf reads them: other lines
    (comments, `# CONFIG_X is not set`) are skipped; the first of a name counts; a `CONFIG_`
    line without `=` or without a value is a ValueError."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if not line.startswith(CONFIG_PREFIX):
            continue
        name, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"config line '{line[:80]}' has no '='")
        if not value:
            raise ValueError(f"config line '{line[:80]}' has no value")
        found.setdefault(name, value)
    return found


def _number(e: KconfigExtern, value: int) -> bytes:
    if e.type is KcfgType.BOOL:
        if value not in (0, 1):
            raise _error(e.name, f"value {value} is not a bool")
        return bytes([value])
    if e.type not in (KcfgType.INT, KcfgType.CHAR):
        raise _error(e.name, f"value {value} implies an integer; its type is {e.type.value}")
    bits = e.size * 8
    value &= (1 << 64) - 1  # libbpf holds it as a u64 (strtoull: `-1` is 2**64 - 1)
    fits = (
        e.size == 8
        or (e.signed and (value + (1 << (bits - 1))) % (1 << 64) < (1 << bits))
        or (not e.signed and value >> bits == 0)
    )
    if not fits:
        raise _error(e.name, f"value {value} does not fit in {e.size} bytes")
    return (value & ((1 << bits) - 1)).to_bytes(e.size, "little")


def _from_config(e: KconfigExtern, value: str) -> bytes:
    first = value[0]
    if first in TRISTATE:
        if e.type is KcfgType.BOOL:
            if first == "m":
                raise _error(e.name, "value 'm' implies a tristate or char; its type is bool")
            return bytes([first == "y"])
        if e.type is KcfgType.TRISTATE:
            return struct.pack("<I", TRISTATE[first])
        if e.type is KcfgType.CHAR:
            return first.encode()
        raise _error(
            e.name, f"value '{first}' implies a bool, tristate or char; its type is {e.type.value}"
        )
    if first == '"':
        if e.type is not KcfgType.CHAR_ARRAY:
            what = f"value {value[:40]} implies a char array"
            raise _error(e.name, f"{what}; its type is {e.type.value}")
        if len(value) < 2 or not value.endswith('"'):
            raise _error(e.name, f"value {value[:40]} is not a quoted string")
        # The config's bytes (read with surrogateescape), truncated as libbpf does, NUL kept.
        text = value[1:-1].encode(errors="surrogateescape")[: e.size - 1]
        return text + bytes(e.size - len(text))
    match = C_INTEGER.fullmatch(value)
    if match is None:
        raise _error(e.name, f"value '{value[:40]}' is not a valid integer")
    if e.type not in (KcfgType.INT, KcfgType.CHAR):  # a bool takes 0 and 1 from LINUX_ only
        raise _error(e.name, f"value {value} implies an integer; its type is {e.type.value}")
    sign, hexa, octal, decimal = match.groups()
    number = int(hexa, 16) if hexa else int(decimal) if decimal else int(octal or "0", 8)
    return _number(e, -number if sign == "-" else number)


def values(layout: Kconfig, config: Mapping[str, str] | None, facts: KernelFacts) -> bytes:
    """The `.kconfig` map's value: each extern's value at its offset. `config` is the parsed
    kernel config (None where the layout does not need it)."""
    data = bytearray(layout.size)
    for e in layout.externs:
        value: bytes | None
        if e.name == KERNEL_VERSION:
            value = _number(e, facts.version)
        elif e.name == "LINUX_HAS_BPF_COOKIE":
            value = _number(e, int(facts.bpf_cookie))
        elif e.name == "LINUX_HAS_SYSCALL_WRAPPER":
            value = _number(e, int(facts.syscall_wrapper))
        elif e.name.startswith(CONFIG_PREFIX):
            text = (config or {}).get(e.name)
            value = _from_config(e, text) if text is not None else None
            if value is None and not e.weak:
                raise _error(e.name, "not in this kernel's config and not __weak")
        elif e.name.startswith(VIRTUAL_PREFIX) and e.weak:
            value = None  # a virtual extern libbpf does not know: 0 when weak
        else:
            raise _error(e.name, "not a CONFIG_ or LINUX_ extern libbpf knows")
        if value is not None:
            data[e.offset : e.offset + e.size] = value
    return bytes(data)
