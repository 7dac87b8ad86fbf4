"""Decoding `struct bpf_map_def` and `struct bpf_prog_def` in every historic size.

Objects carry the size they were built with (`size_of_bpf_map_def`, `size_of_bpf_prog_def`).
A field lying beyond that size was not in the object's layout and takes its default. Fields
past the newest layout (a newer header) are ignored, as Android's loader does.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.bpftypes import MapType
from bpfloader.obj.elf import STT_SECTION, Symbol
from bpfloader.obj.kver import KVER_INF
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.spec import (
    DEFAULT_LOADER_MAX,
    DEFAULT_LOADER_MIN,
    PROGRAM_PIN_MODE,
    Gates,
    MapSpec,
)

if TYPE_CHECKING:
    from bpfloader.obj.object_btf import ObjectBtf

MAP_DEF_SIZE = 120
MAP_DEF_MIN_SIZE = 28
PROG_DEF_SIZE = 92
PROG_DEF_MIN_SIZE = 20
# What an object without a size_of_* section was built with (Android's v0.0 layouts).
DEFAULT_MAP_DEF_SIZE = 32
DEFAULT_PROG_DEF_SIZE = 20
# Beyond this a "def" is not a def: refuse it rather than read a whole section as one record.
MAX_DEF_SIZE = 4096
LEGACY_MAP_UID_OFFSET = 20
MAP_UID_OFFSET = 116
NAME_FIELD_LEN = 32


class DefError(ObjectFormatError):
    """A def's bytes say something impossible; the reader adds file and section."""


class _Fields:
    """Reads little-endian fields from one def record, with defaults past its end."""

    def __init__(self, raw: bytes):
        self.raw = raw

    def u32(self, offset: int, default: int) -> int:
        if offset + 4 > len(self.raw):
            return default
        value: int = struct.unpack_from("<I", self.raw, offset)[0]
        return value

    def u8(self, offset: int, default: int) -> int:
        return self.raw[offset] if offset < len(self.raw) else default

    def text(self, offset: int, what: str) -> str:
        if offset + NAME_FIELD_LEN > len(self.raw):
            return ""
        chunk = self.raw[offset : offset + NAME_FIELD_LEN].split(b"\0", 1)[0]
        try:
            return chunk.decode("ascii")
        except UnicodeDecodeError as e:
            raise DefError(f"{what} is not ASCII: {chunk!r}") from e


def check_def_size(size: int, minimum: int, what: str) -> None:
    if size < minimum or size > MAX_DEF_SIZE or size % 4:
        raise DefError(
            f"{what} size {size} is impossible "
            f"(must be a multiple of 4 in {minimum}..{MAX_DEF_SIZE})"
        )


def decode_map_def(raw: bytes) -> dict[str, object]:
    """Fields of one map def as MapSpec keyword arguments (all but `name`)."""
    f = _Fields(raw)
    if len(raw) >= MAP_UID_OFFSET + 4:
        legacy_uid = f.u32(LEGACY_MAP_UID_OFFSET, 0)
        if legacy_uid != 0:
            raise DefError(f"legacy uid slot (offset 20) must be 0, found {legacy_uid}")
        uid = f.u32(MAP_UID_OFFSET, 0)
    else:
        uid = f.u32(LEGACY_MAP_UID_OFFSET, 0)
    mode = f.u32(28, 0o600)
    if mode & ~0o777:
        raise DefError(f"mode {mode:#o} has bits beyond 0777")
    return {
        **_first_fields(f),
        "owner": Ownership(uid=uid, gid=f.u32(24, 0), mode=mode),
        "gates": Gates(
            min_loader=f.u32(32, DEFAULT_LOADER_MIN),
            max_loader=f.u32(36, DEFAULT_LOADER_MAX),
            min_kver=f.u32(40, 0),
            max_kver=f.u32(44, KVER_INF),
            ignore_on=f.u8(113, 0),
        ),
        "selinux_context": f.text(48, "selinux_context"),
        "pin_subdir": f.text(80, "pin_subdir"),
        "shared": bool(f.u8(112, 0)),
    }


# libbpf before 1.0 read `struct bpf_map_def` {type, key_size, value_size, max_entries,
# map_flags} from a `maps` section (bpf_object__init_user_maps); libbpf 1.0 dropped them.
LEGACY_MAP_DEF_SIZE = 20


def legacy_def_size(section_size: int, count: int) -> int | None:
    """The size of each of `count` defs filling a `maps` section of `section_size` bytes, as
    libbpf 0.x took it (all of one size: the section's size over the number of its symbols);
    None where no such size exists."""
    if count == 0 or section_size == 0 or section_size % count:
        return None
    return section_size // count


LEGACY_MAPS_SECTION = "maps"


def legacy_map_symbols(symbols: Sequence[Symbol]) -> list[Symbol]:
    """The symbols that name a def in a libbpf-legacy `maps` section: every one defined there
    but the section's own symbol, as libbpf 0.x counted them."""
    return [s for s in symbols if s.type != STT_SECTION]


def read_legacy_maps(
    data: bytes, symbols: Sequence[Symbol], object_btf: ObjectBtf | None
) -> dict[int, MapSpec]:
    """A libbpf-legacy `maps` section: one def per symbol, named by it, all of one size (the
    section's over the number of symbols); by offset in the section, in offset order. Their
    BTF key and value types come from `____btf_map_NAME` (BPF_ANNOTATE_KV_PAIR), as libbpf 0.x
    found them; their pins are root 0600 as every libbpf-style map's."""
    named = legacy_map_symbols(symbols)
    size = legacy_def_size(len(data), len(named))
    if size is None:
        raise ObjectFormatError(
            f"{len(data)} bytes cannot hold {len(named)} legacy map defs of one size",
            section=LEGACY_MAPS_SECTION,
        )
    specs: dict[int, MapSpec] = {}
    for symbol in sorted(named, key=lambda s: s.value):
        name, offset = symbol.name, symbol.value
        if offset + size > len(data):
            raise ObjectFormatError(
                f"map '{name}' at offset {offset} runs past the section's {len(data)} bytes "
                f"(defs of {size} bytes)",
                section=LEGACY_MAPS_SECTION,
            )
        if offset in specs:
            raise ObjectFormatError(
                f"maps '{specs[offset].name}' and '{name}' share one def",
                section=LEGACY_MAPS_SECTION,
            )
        try:
            fields = decode_legacy_map_def(data[offset : offset + size])
        except DefError as e:
            raise ObjectFormatError(f"map '{name}': {e}", section=LEGACY_MAPS_SECTION) from e
        key_type = value_type = 0
        if object_btf is not None:
            key_size, value_size = fields["key_size"], fields["value_size"]
            assert isinstance(key_size, int) and isinstance(value_size, int)
            key_type, value_type = object_btf.map_types(name, key_size, value_size)
        specs[offset] = MapSpec(
            name=name,
            owner=Ownership(),
            btf_key_type_id=key_type,
            btf_value_type_id=value_type,
            **fields,  # type: ignore[arg-type]
        )
    return specs


def decode_legacy_map_def(raw: bytes) -> dict[str, object]:
    """Fields of one libbpf-legacy map def as MapSpec keyword arguments (all but `name`). A def
    shorter than libbpf's leaves the fields past its end 0; one longer (another header's
    struct, with more fields) is read only if the bytes past libbpf's fields are all 0, as
    libbpf 0.x read it: a non-zero field there asks for something this layout cannot say."""
    extra = raw[LEGACY_MAP_DEF_SIZE:]
    if extra.strip(b"\0"):
        first = LEGACY_MAP_DEF_SIZE + next(i for i, b in enumerate(extra) if b)
        raise DefError(
            f"its {len(raw)}-byte def has a non-zero byte at offset {first}, past the "
            f"{LEGACY_MAP_DEF_SIZE} bytes of libbpf's legacy struct bpf_map_def"
        )
    return _first_fields(_Fields(raw[:LEGACY_MAP_DEF_SIZE].ljust(LEGACY_MAP_DEF_SIZE, b"\0")))


def _first_fields(f: _Fields) -> dict[str, object]:
    """The first 20 bytes, which Android's def and libbpf's legacy one share: type, key size,
    value size, max_entries, flags."""
    map_type: MapType | int = f.u32(0, 0)
    with contextlib.suppress(ValueError):  # a type newer than this table: the kernel decides
        map_type = MapType(map_type)
    return {
        "type": map_type,
        "key_size": f.u32(4, 0),
        "value_size": f.u32(8, 0),
        "max_entries": f.u32(12, 0),
        "flags": f.u32(16, 0),
    }


def decode_prog_def(raw: bytes) -> dict[str, object]:
    """Fields of one program def as ProgramSpec keyword arguments."""
    f = _Fields(raw)
    return {
        "owner": Ownership(uid=f.u32(0, 0), gid=f.u32(4, 0), mode=PROGRAM_PIN_MODE),
        "gates": Gates(
            min_kver=f.u32(8, 0),
            max_kver=f.u32(12, KVER_INF),
            min_loader=f.u32(20, DEFAULT_LOADER_MIN),
            max_loader=f.u32(24, DEFAULT_LOADER_MAX),
            ignore_on=f.u8(17, 0),
        ),
        "optional": bool(f.u8(16, 0)),
        "selinux_context": f.text(28, "selinux_context"),
        "pin_subdir": f.text(60, "pin_subdir"),
    }
