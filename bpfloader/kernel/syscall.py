"""Raw syscalls through libc: bpf(2), perf_event_open(2), ioctl(2), renameat2(2), mount(2)."""

from __future__ import annotations

import ctypes
import errno
import os
import threading
import time
from collections.abc import Iterator
from enum import IntEnum
from typing import TYPE_CHECKING

from bpfloader.errors import KernelError

if TYPE_CHECKING:
    from bpfloader.kernel.fd import Fd

# The interpreter's own libc (dlopen(NULL)): find_library would run ldconfig on every start.
_libc = ctypes.CDLL(None, use_errno=True)

# (bpf, perf_event_open) syscall numbers per architecture.
_SYSCALLS = {
    "x86_64": (321, 298),
    "aarch64": (280, 241),
    "riscv64": (280, 241),
    "armv7l": (386, 364),
    "i686": (357, 336),
}
try:
    SYS_BPF, SYS_PERF_EVENT_OPEN = _SYSCALLS[os.uname().machine]
except KeyError as e:
    raise ImportError(f"bpfloader does not know the syscall numbers of {os.uname().machine}") from e
# membarrier(2) per architecture: what the event consumers' memory barrier is, where one is
# needed (kernel/ordering.py).
_MEMBARRIER = {"x86_64": 324, "aarch64": 283, "riscv64": 283, "armv7l": 389, "i686": 375}


class Cmd(IntEnum):
    """bpf(2) commands used here."""

    MAP_CREATE = 0
    MAP_LOOKUP_ELEM = 1
    MAP_UPDATE_ELEM = 2
    MAP_DELETE_ELEM = 3
    MAP_GET_NEXT_KEY = 4
    PROG_LOAD = 5
    OBJ_PIN = 6
    OBJ_GET = 7
    PROG_ATTACH = 8
    PROG_DETACH = 9
    PROG_TEST_RUN = 10
    MAP_GET_NEXT_ID = 12
    PROG_GET_FD_BY_ID = 13
    MAP_GET_FD_BY_ID = 14
    OBJ_GET_INFO_BY_FD = 15
    RAW_TRACEPOINT_OPEN = 17
    BTF_LOAD = 18
    BTF_GET_FD_BY_ID = 19
    MAP_FREEZE = 22
    BTF_GET_NEXT_ID = 23
    MAP_LOOKUP_BATCH = 24
    LINK_CREATE = 28
    LINK_UPDATE = 29
    LINK_GET_FD_BY_ID = 30
    LINK_GET_NEXT_ID = 31
    LINK_DETACH = 34
    PROG_BIND_MAP = 35


# What the kernel answers for a command, map type or attachment it does not have.
UNSUPPORTED_ERRNOS = (errno.EINVAL, errno.EOPNOTSUPP, 524)  # 524: the kernel's own ENOTSUPP


# The commands that make kernel objects: the time inside them (the verifier runs inside
# BPF_PROG_LOAD) is the floor no loader can go below. Counted as the calling thread's CPU
# time, so that threads verifying side by side, or waiting for the GIL on the way back, do
# not count the time they were not running; on an idle CPU the two are the same.
_TIMED = frozenset({Cmd.MAP_CREATE, Cmd.PROG_LOAD, Cmd.BTF_LOAD})
_clock = threading.local()


def kernel_seconds() -> float:
    """CPU seconds this thread has spent inside BPF_MAP_CREATE, BPF_PROG_LOAD, BPF_BTF_LOAD."""
    seconds: float = getattr(_clock, "seconds", 0.0)
    return seconds


def bpf(cmd: Cmd, attr: ctypes.Structure, *, operation: str | None = None) -> int:
    """bpf(cmd, &attr, sizeof attr); the result, or KernelError with errno."""
    started = time.thread_time() if cmd in _TIMED else None
    result: int = _libc.syscall(
        ctypes.c_long(SYS_BPF),
        ctypes.c_int(cmd),
        ctypes.byref(attr),
        ctypes.c_uint(ctypes.sizeof(attr)),
    )
    if started is not None:
        _clock.seconds = kernel_seconds() + time.thread_time() - started
    if result < 0:
        raise KernelError(operation or f"BPF_{cmd.name}", ctypes.get_errno())
    return result


def perf_event_open(attr: ctypes.Structure, pid: int, cpu: int, group_fd: int, flags: int) -> int:
    fd: int = _libc.syscall(
        ctypes.c_long(SYS_PERF_EVENT_OPEN),
        ctypes.byref(attr),
        ctypes.c_int(pid),
        ctypes.c_int(cpu),
        ctypes.c_int(group_fd),
        ctypes.c_ulong(flags),
    )
    if fd < 0:
        raise KernelError("perf_event_open", ctypes.get_errno())
    return fd


def ioctl(fd: int, request: int, arg: int, operation: str) -> None:
    if _libc.ioctl(ctypes.c_int(fd), ctypes.c_ulong(request), ctypes.c_long(arg)) < 0:
        raise KernelError(operation, ctypes.get_errno())


def membarrier(cmd: int, operation: str) -> None:
    """membarrier(cmd, 0, 0); KernelError where it fails."""
    number = ctypes.c_long(_MEMBARRIER[os.uname().machine])
    if _libc.syscall(number, ctypes.c_int(cmd), ctypes.c_uint(0), ctypes.c_int(0)) < 0:
        raise KernelError(operation, ctypes.get_errno())


RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2


def renameat2(old_dir: int, old: str, new_dir: int, new: str, flags: int) -> None:
    """renameat2(2) between two directory fds (names within them, never through a link)."""
    if (
        _libc.renameat2(old_dir, os.fsencode(old), new_dir, os.fsencode(new), ctypes.c_uint(flags))
        < 0
    ):
        raise KernelError("rename", ctypes.get_errno(), f"{old} -> {new}")


def mount(source: str, target: str, fstype: str, flags: int = 0, options: str = "") -> None:
    data = options.encode() if options else None
    if (
        _libc.mount(
            source.encode(), os.fsencode(target), fstype.encode(), ctypes.c_ulong(flags), data
        )
        < 0
    ):
        raise KernelError("mount", ctypes.get_errno(), f"{fstype} on {target}")


def umount(target: str) -> None:
    if _libc.umount2(os.fsencode(target), 0) < 0:
        raise KernelError("umount", ctypes.get_errno(), target)


class _StatFs(ctypes.Structure):
    # struct statfs on 64-bit Linux: f_type first, then fields this code does not read.
    _fields_ = [("f_type", ctypes.c_long), ("rest", ctypes.c_byte * 112)]


def statfs_type(path: str) -> int:
    """The filesystem magic number of `path` (statfs f_type)."""
    buf = _StatFs()
    if _libc.statfs(os.fsencode(path), ctypes.byref(buf)) < 0:
        raise KernelError("statfs", ctypes.get_errno(), path)
    return int(buf.f_type) & 0xFFFFFFFF


def objects_by_id(next_id: Cmd, fd_by_id: Cmd) -> Iterator[Fd]:
    """An fd of each kernel object of one kind, by id (BPF_*_GET_NEXT_ID, BPF_*_GET_FD_BY_ID):
    BTF objects, links. One that goes away meanwhile is passed over. The caller closes each."""
    from bpfloader.kernel.attrs import GetIdAttr
    from bpfloader.kernel.fd import Fd

    attr = GetIdAttr()
    while True:
        try:
            bpf(next_id, attr, operation=f"BPF_{next_id.name}")
        except KernelError as e:
            if e.errno == errno.ENOENT:
                return  # the last one
            raise
        attr.id = attr.next_id
        try:
            yield Fd(bpf(fd_by_id, GetIdAttr(id=attr.id), operation=f"BPF_{fd_by_id.name}"))
        except KernelError as e:
            if e.errno != errno.ENOENT:
                raise
