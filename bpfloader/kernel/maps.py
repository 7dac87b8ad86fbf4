"""Maps in the kernel: create, describe, and read or write elements."""

from __future__ import annotations

import ctypes
import errno
from dataclasses import dataclass

from bpfloader.errors import KernelError
from bpfloader.kernel.attrs import (
    OBJ_NAME_LEN,
    BatchAttr,
    InfoAttr,
    MapCreateAttr,
    MapElemAttr,
    MapInfoStruct,
)
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
    btf_id: int = 0  # the BTF object its types are in; 0: created without BTF types
    btf_key_type_id: int = 0
    btf_value_type_id: int = 0


def kernel_name(name: str) -> bytes:
    """The name the kernel keeps: at most 15 bytes of [A-Za-z0-9_.]."""
    kept = "".join(c if c.isascii() and (c.isalnum() or c in "_.") else "_" for c in name)
    return kept.encode()[: OBJ_NAME_LEN - 1]


def create_map(
    name: str,
    map_type: int,
    key_size: int,
    value_size: int,
    max_entries: int,
    flags: int,
    *,
    inner_map_fd: int = 0,
    numa_node: int = 0,
    btf_fd: int = 0,
    btf_key_type_id: int = 0,
    btf_value_type_id: int = 0,
    btf_vmlinux_value_type_id: int = 0,
    map_extra: int = 0,
) -> int:
    """A new map; `inner_map_fd` is a map of maps' template, `btf_*` its types' BTF (a
    struct_ops map's value type is the kernel's: `btf_vmlinux_value_type_id`, with `btf_fd`
    the object's BTF all the same)."""
    attr = MapCreateAttr(
        map_type=map_type,
        key_size=key_size,
        value_size=value_size,
        max_entries=max_entries,
        map_flags=flags,
        inner_map_fd=inner_map_fd,
        numa_node=numa_node,
        map_name=kernel_name(name),
        btf_fd=btf_fd,
        btf_key_type_id=btf_key_type_id,
        btf_value_type_id=btf_value_type_id,
        btf_vmlinux_value_type_id=btf_vmlinux_value_type_id,
        map_extra=map_extra,
    )
    return bpf(Cmd.MAP_CREATE, attr)


def freeze(fd: int) -> None:
    """Make the map read-only for user space from now on (BPF_MAP_FREEZE)."""
    bpf(Cmd.MAP_FREEZE, MapElemAttr(map_fd=fd))


def map_fd_by_id(map_id: int) -> int:
    """An fd of the map with id `map_id` (BPF_MAP_GET_FD_BY_ID; root's)."""
    from bpfloader.kernel.attrs import GetIdAttr

    return bpf(Cmd.MAP_GET_FD_BY_ID, GetIdAttr(id=map_id), operation="BPF_MAP_GET_FD_BY_ID")


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
        btf_id=info.btf_id,
        btf_key_type_id=info.btf_key_type_id,
        btf_value_type_id=info.btf_value_type_id,
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


def lookup_batch(
    fd: int, token: bytes | None, count: int, key_size: int, value_size: int
) -> tuple[list[tuple[bytes, bytes]], bytes | None]:
    """Up to `count` elements from where `token` says (None: the start), and the token to go
    on with (None: that was the last batch). BPF_MAP_LOOKUP_BATCH; KernelError where the map
    type or kernel does not have it, ENOSPC where one hash bucket holds more than `count`."""
    token_size = max(key_size, 8)  # a hash map's token is a u32 bucket, an array's a key
    in_token = ctypes.create_string_buffer(token, token_size) if token is not None else None
    out_token = ctypes.create_string_buffer(token_size)
    keys = ctypes.create_string_buffer(key_size * count)
    values = ctypes.create_string_buffer(value_size * count)
    attr = BatchAttr(
        in_batch=ctypes.addressof(in_token) if in_token is not None else 0,
        out_batch=ctypes.addressof(out_token),
        keys=ctypes.addressof(keys),
        values=ctypes.addressof(values),
        count=count,
        map_fd=fd,
    )
    done = False
    try:
        bpf(Cmd.MAP_LOOKUP_BATCH, attr)
    except KernelError as e:
        if e.errno != errno.ENOENT:
            raise
        done = True  # the last batch: attr.count says how many it still holds
    key_bytes, value_bytes = keys.raw, values.raw
    elements = [
        (
            key_bytes[i * key_size : (i + 1) * key_size],
            value_bytes[i * value_size : (i + 1) * value_size],
        )
        for i in range(attr.count)
    ]
    return elements, None if done else out_token.raw
