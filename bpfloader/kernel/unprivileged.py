"""kernel.unprivileged_bpf_disabled, and whether it shuts processes without CAP_BPF out of pins.

Kernels before 5.19 check the sysctl on entry to every bpf() command: while it is non-zero a
process without CAP_BPF (or CAP_SYS_ADMIN) gets EPERM even for BPF_OBJ_GET, so the owner, group
and mode of a pin decide nothing. From 5.19 on ("bpf: refine calls to unprivileged_bpf_disabled")
the kernel checks it only when creating maps and loading programs (as the boot test measures on
Debian 11's 5.10 and Debian 12's 6.1). The values: 0 allows unprivileged bpf(); 2 refuses it and
may be lowered again by CAP_SYS_ADMIN; 1 refuses it until the next boot.
"""

from __future__ import annotations

import ctypes
import errno
import os

from bpfloader.errors import KernelError, LoaderError
from bpfloader.kernel import pins

SYSCTL_PATH = "/proc/sys/kernel/unprivileged_bpf_disabled"
ENABLED, DISABLED_LOCKED, DISABLED = 0, 1, 2
# A path whose lookup fails whatever the machine holds: BPF_OBJ_GET answers ENOTDIR for it,
# unless the kernel refused the command before looking (EPERM).
_PROBE_PATH = "/dev/null/bpfloader-probe"
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
_PROBE_REFUSED, _PROBE_LOOKED_UP = 10, 11
_libc = ctypes.CDLL(None, use_errno=True)  # the interpreter's libc, without running ldconfig


def read_setting(path: str = SYSCTL_PATH) -> int | None:
    """The sysctl's value; None on a kernel without it (no bpf(2) at all)."""
    try:
        with open(path) as f:
            return int(f.read())
    except FileNotFoundError:
        return None


def write_setting(value: int, path: str = SYSCTL_PATH) -> None:
    try:
        with open(path, "w") as f:
            f.write(f"{value}\n")
    except OSError as e:
        raise LoaderError(f"cannot write {value} to {path}: {e.strerror}") from e


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _drop_effective_capabilities() -> None:
    """Empty this thread's effective capability set (the permitted set stays)."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    if _libc.capget(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capget")
    for half in data:
        half.effective = 0
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def refuses_unprivileged_obj_get() -> bool:
    """Whether this kernel, as it is set now, refuses BPF_OBJ_GET to a process without CAP_BPF.

    Asked, not guessed from the version (distributions backport): a child process drops its
    effective capabilities and opens a path that cannot exist. EPERM means bpf() itself was
    refused; ENOTDIR means the kernel got as far as the path, so pin modes decide."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller's code
        code = 1
        try:
            _drop_effective_capabilities()
            pins.open_pinned(_PROBE_PATH, readonly=True)
        except KernelError as e:
            code = _PROBE_REFUSED if e.errno == errno.EPERM else _PROBE_LOOKED_UP
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code not in (_PROBE_REFUSED, _PROBE_LOOKED_UP):
        raise LoaderError(f"the unprivileged BPF_OBJ_GET probe failed (child exit {code})")
    return code == _PROBE_REFUSED
