"""Facts about the running system that gates depend on, and this process's resource limits."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import resource

from bpfloader.errors import KernelError

RLIM_INFINITY = resource.RLIM_INFINITY


def kernel_release() -> str:
    return os.uname().release


def parse_kernel_release(release: str) -> tuple[int, int, int]:
    """'6.18.44-fc-v769' -> (6, 18, 44); missing parts are 0."""
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", release)
    if not match:
        raise ValueError(f"cannot read a kernel version from {release!r}")
    major, minor, patch = (int(g) if g else 0 for g in match.groups())
    return major, minor, patch


def linux_version_code(release: str) -> int:
    """LINUX_VERSION_CODE, what BPF_PROG_LOAD's kern_version expects (kprobes on old kernels)."""
    major, minor, patch = parse_kernel_release(release)
    return (major << 16) + (minor << 8) + min(patch, 255)


def machine() -> str:
    return os.uname().machine


def parse_cpu_list(text: str) -> list[int]:
    """'0-3,8,10-11' (the kernel's cpu list format) -> [0, 1, 2, 3, 8, 10, 11]."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if part:
            first, _, last = part.partition("-")
            cpus.extend(range(int(first), int(last or first) + 1))
    return cpus


def possible_cpus() -> list[int]:
    """The CPUs the kernel allots per-CPU map slots to, in the order it copies them out."""
    with open("/sys/devices/system/cpu/possible") as f:
        return parse_cpu_list(f.read())


def online_cpus() -> list[int]:
    with open("/sys/devices/system/cpu/online") as f:
        return parse_cpu_list(f.read())


def physical_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def memlock_limit() -> tuple[int, int]:
    """RLIMIT_MEMLOCK of this process: (soft, hard)."""
    return resource.getrlimit(resource.RLIMIT_MEMLOCK)


def set_memlock_limit(soft: int, hard: int) -> None:
    """Raising the hard limit needs CAP_SYS_RESOURCE; the soft one may go up to the hard one."""
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (soft, hard))
    except ValueError as e:  # how Python reports EPERM here
        raise KernelError("setrlimit(RLIMIT_MEMLOCK)", errno.EPERM) from e
    except OSError as e:
        raise KernelError("setrlimit(RLIMIT_MEMLOCK)", e.errno or errno.EINVAL) from e


def open_files_limit() -> tuple[int, int]:
    """RLIMIT_NOFILE of this process: (soft, hard)."""
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def raise_open_files_limit() -> None:
    """Lift the soft RLIMIT_NOFILE of this process to the hard one.

    A loaded object holds an fd for each of its maps and programs until its pins are in place,
    so an object of a thousand maps meets the usual soft limit of 1024 while the hard one
    (524288 under systemd) would do. No capability is needed to go up to the hard limit; where
    setrlimit is refused even so (a seccomp filter: bpfloader.service sets LimitNOFILE= for
    that), the limit stays as it is, and an object that needs more fails naming it
    (loader/limits.py, open_files_error)."""
    soft, hard = open_files_limit()
    if soft < hard:
        # Refused: the limit in force stays, and is what an object's error names.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
