"""Pins on bpffs: pin, open, and the file operations that publish a pin safely."""

from __future__ import annotations

import ctypes
import os

from bpfloader.errors import KernelError
from bpfloader.kernel.attrs import ObjAttr
from bpfloader.kernel.syscall import (
    RENAME_EXCHANGE,
    RENAME_NOREPLACE,
    Cmd,
    bpf,
    mount,
    renameat2,
    statfs_type,
    umount,
)
from bpfloader.obj.bpftypes import PinKind

BPF_F_RDONLY = 1 << 3
BPF_F_WRONLY = 1 << 4
BPF_FS_MAGIC = 0xCAFE4A11


def pin(fd: int, path: str) -> None:
    path_buf = ctypes.create_string_buffer(os.fsencode(path))
    bpf(
        Cmd.OBJ_PIN,
        ObjAttr(pathname=ctypes.addressof(path_buf), bpf_fd=fd),
        operation="BPF_OBJ_PIN",
    )


def open_pinned(path: str, *, readonly: bool = False) -> int:
    """A new fd for the object pinned at `path` (BPF_OBJ_GET)."""
    path_buf = ctypes.create_string_buffer(os.fsencode(path))
    attr = ObjAttr(pathname=ctypes.addressof(path_buf), file_flags=BPF_F_RDONLY if readonly else 0)
    return bpf(Cmd.OBJ_GET, attr, operation="BPF_OBJ_GET")


_ANON_INODES = {
    "anon_inode:bpf-map": PinKind.MAP,
    "anon_inode:bpf-prog": PinKind.PROGRAM,
    "anon_inode:bpf-link": PinKind.LINK,  # a link opened from its pin
    "anon_inode:bpf_link": PinKind.LINK,  # a link as it is made
}


def pinned_kind(fd: int) -> PinKind | None:
    """What a bpf fd holds (from its anon inode's name, as bpftool reads it); None for a kind
    the loader does not pin. BPF_OBJ_GET_INFO_BY_FD answers for any kind, in that kind's
    struct: it cannot tell."""
    return _ANON_INODES.get(os.readlink(f"/proc/self/fd/{fd}"))


def set_owner(path: str, uid: int, gid: int, mode: int) -> None:
    """Mode first, then owner: without CAP_FOWNER a chmod after chown would be refused."""
    os.chmod(path, mode, follow_symlinks=False)
    os.chown(path, uid, gid, follow_symlinks=False)


def publish(staged: str, final: str) -> None:
    """Move a finished pin into place, never over an existing one (RENAME_NOREPLACE)."""
    renameat2(staged, final, RENAME_NOREPLACE)


def exchange(staged: str, final: str) -> None:
    """Swap a new pin with the one in place, atomically (RENAME_EXCHANGE): a process opening
    `final` gets the old object or the new one, never nothing. The old one ends at `staged`."""
    renameat2(staged, final, RENAME_EXCHANGE)


def is_bpffs(path: str) -> bool:
    """Whether `path` is on a bpf filesystem."""
    try:
        return statfs_type(path) == BPF_FS_MAGIC
    except KernelError:
        return False


def mount_bpffs(path: str) -> None:
    """Mount a new bpffs instance on `path` (a directory)."""
    mount("bpf", path, "bpf", options="mode=0700")


def unmount(path: str) -> None:
    umount(path)
