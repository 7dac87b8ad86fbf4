"""Decoding `struct bpf_map_def` and `struct bpf_prog_def` in every historic size.

Objects carry the size they were built with (`size_of_bpf_map_def`, `size_of_bpf_prog_def`).
A field lying beyond that size was not in the object's layout and takes its default. Fields
past the newest layout (a newer header) are ignored, as Android's loader does.
"""

from __future__ import annotations

import contextlib
import struct

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.bpftypes import MapType
from bpfloader.obj.kver import KVER_INF
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.spec import (
    DEFAULT_LOADER_MAX,
    DEFAULT_LOADER_MIN,
    PROGRAM_PIN_MODE,
    Gates,
)

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
    map_type: MapType | int = f.u32(0, 0)
    with contextlib.suppress(ValueError):  # a type newer than this table: the kernel decides
        map_type = MapType(map_type)
    return {
        "type": map_type,
        "key_size": f.u32(4, 0),
        "value_size": f.u32(8, 0),
        "max_entries": f.u32(12, 0),
        "flags": f.u32(16, 0),
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
