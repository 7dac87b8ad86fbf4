"""Maps in the kernel: create, describe, and read or write elements."""

from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass

from bpfloader.errors import KernelError
from bpfloader.kernel.attrs import OBJ_NAME_LEN, InfoAttr, MapCreateAttr, MapElemAttr, MapInfoStruct
from bpfloader.kernel.syscall import Cmd, bpf


@dataclass(frozen=True)
class MapInfo:
    id: int
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    name: str


def kernel_name(name: str) -> bytes:
    """The name the kernel keeps: at most 15 bytes of [A-Za-z0-9_.]."""
    kept = "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "_" for c in name)
    return kept.encode()[: OBJ_NAME_LEN - 1]


def create_map(
    name: str, map_type: int, key_size: int, value_size: int, max_entries: int, flags: int
) -> int:
    attr = MapCreateAttr(
        map_type=map_type,
        key_size=key_size,
        value_size=value_size,
        max_entries=max_entries,
        map_flags=flags,
        map_name=kernel_name(name),
    )
    return bpf(Cmd.MAP_CREATE, attr)


def map_info(fd: int) -> MapInfo:
    info = MapInfoStruct()
    attr = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr, operation="BPF_OBJ_GET_INFO_BY_FD (map)")
    return MapInfo(
        id=info.id,
        type=info.type,
        key_size=info.key_size,
        value_size=info.value_size,
        max_entries=info.max_entries,
        flags=info.map_flags,
        name=info.name.decode(errors="replace"),
    )


def lookup(fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value stored under `key`, or None where there is none."""
    key_buf = ctypes.create_string_buffer(key, len(key))
    value_buf = ctypes.create_string_buffer(value_size)
    attr = MapElemAttr(map_fd=fd, key=ctypes.addressof(key_buf), value=ctypes.addressof(value_buf))
    try:
        bpf(Cmd.MAP_LOOKUP_ELEM, attr)
    except KernelError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    return value_buf.raw


def update(fd: int, key: bytes, value: bytes, flags: int = 0) -> None:
    key_buf = ctypes.create_string_buffer(key, len(key))
    value_buf = ctypes.create_string_buffer(value, len(value))
    attr = MapElemAttr(
        map_fd=fd, key=ctypes.addressof(key_buf), value=ctypes.addressof(value_buf), flags=flags
    )
    bpf(Cmd.MAP_UPDATE_ELEM, attr)


def delete(fd: int, key: bytes) -> bool:
    """Delete `key`; False where it was not there."""
    key_buf = ctypes.create_string_buffer(key, len(key))
    try:
        bpf(Cmd.MAP_DELETE_ELEM, MapElemAttr(map_fd=fd, key=ctypes.addressof(key_buf)))
    except KernelError as e:
        if e.errno == errno.ENOENT:
            return False
        raise
    return True


def next_key(fd: int, key: bytes | None, key_size: int) -> bytes | None:
    """The key after `key` (the first key for None), or None at the end."""
    next_buf = ctypes.create_string_buffer(key_size)
    key_buf = ctypes.create_string_buffer(key, key_size) if key is not None else None
    attr = MapElemAttr(
        map_fd=fd,
        key=ctypes.addressof(key_buf) if key_buf is not None else 0,
        value=ctypes.addressof(next_buf),
    )
    try:
        bpf(Cmd.MAP_GET_NEXT_KEY, attr)
    except KernelError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    return next_buf.raw
