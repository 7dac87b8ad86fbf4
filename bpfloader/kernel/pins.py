"""Pins on bpffs: pin, open, and the file operations that publish a pin safely."""

from __future__ import annotations

import ctypes
import errno
import os
import stat

from bpfloader.errors import KernelError
from bpfloader.kernel.attrs import InfoAttr, ObjAttr
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


def fd_path(fd: int, name: str = "") -> str:
    """A path to what `fd` holds (or to `name` in the directory it holds) that the kernel
    resolves through the fd itself, never by looking a path up again: what BPF_OBJ_PIN and
    BPF_OBJ_GET are given for an object the loader found by directory fds."""
    return f"/proc/self/fd/{fd}/{name}" if name else f"/proc/self/fd/{fd}"


def pin_at(fd: int, directory: int, name: str) -> None:
    """Pin `fd` as `name` in the directory open at `directory`."""
    pin(fd, fd_path(directory, name))


def open_pinned_at(directory: int, name: str, *, readonly: bool = False) -> int:
    """A new fd for the object pinned as `name` in the directory open at `directory`, never
    through a link: the entry is opened with O_PATH|O_NOFOLLOW and the kernel is given that
    very inode. A link there is ELOOP, a directory EISDIR."""
    where = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
    try:
        kind = stat.S_IFMT(os.fstat(where).st_mode)
        if kind == stat.S_IFLNK:
            raise KernelError("BPF_OBJ_GET", errno.ELOOP, f"{name} is a symbolic link")
        if kind == stat.S_IFDIR:
            raise KernelError("BPF_OBJ_GET", errno.EISDIR, f"{name} is a directory")
        return open_pinned(fd_path(where), readonly=readonly)
    finally:
        os.close(where)


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


def object_id(fd: int) -> int:
    """The kernel id of the map, program or link `fd` holds: every kind's info struct starts
    with its type and its id (two u32), and the kernel fills no more than it is given room for."""
    info = (ctypes.c_uint32 * 2)()
    attr = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr, operation="BPF_OBJ_GET_INFO_BY_FD")
    return int(info[1])


def set_owner_at(directory: int, name: str, uid: int, gid: int, mode: int) -> None:
    """Owner and mode of the pin `name` in `directory`, a directory only root can write (the
    staging directory): nothing there can be a link. Mode first, then owner: without
    CAP_FOWNER a chmod after chown would be refused."""
    os.chmod(name, mode, dir_fd=directory)
    os.chown(name, uid, gid, dir_fd=directory, follow_symlinks=False)


def publish(staged_dir: int, staged: str, final_dir: int, final: str) -> None:
    """Move a finished pin into place, never over an existing one (RENAME_NOREPLACE)."""
    renameat2(staged_dir, staged, final_dir, final, RENAME_NOREPLACE)


def exchange(staged_dir: int, staged: str, final_dir: int, final: str) -> None:
    """Swap a new pin with the one in place, atomically (RENAME_EXCHANGE): a process opening
    `final` gets the old object or the new one, never nothing. The old one ends at `staged`."""
    renameat2(staged_dir, staged, final_dir, final, RENAME_EXCHANGE)


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
