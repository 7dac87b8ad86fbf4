"""Facts about the running system that gates depend on, and this process's resource limits."""

from __future__ import annotations

import contextlib
import errno
import functools
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


# The prefix of the kernel's syscall entry points where it wraps them (`__x64_sys_bpf`), as
# libbpf names them per architecture.
SYSCALL_PREFIXES = {
    "x86_64": "x64",
    "i686": "ia32",
    "aarch64": "arm64",
    "arm64": "arm64",
    "s390x": "s390x",
    "riscv64": "riscv",
    "ppc64le": "powerpc",
    "ppc64": "powerpc",
}


def kernel_config_paths() -> tuple[str, str]:
    """Where the running kernel's config is, in the order libbpf tries them."""
    return f"/boot/config-{kernel_release()}", "/proc/config.gz"


@functools.cache
def kernel_config() -> str:
    """The running kernel's config text, read once per run (the first of kernel_config_paths
    that exists; `.gz` ones gunzipped). An OSError names the paths where neither exists."""
    for path in kernel_config_paths():
        try:
            if path.endswith(".gz"):
                import gzip  # only for `__kconfig` externs: not on every boot's path

                with gzip.open(path, "rt", encoding="utf-8", errors="surrogateescape") as f:
                    return f.read()
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                return f.read()
        except FileNotFoundError:
            continue
    raise FileNotFoundError(errno.ENOENT, "no kernel config", " or ".join(kernel_config_paths()))


KALLSYMS = "/proc/kallsyms"


@functools.cache
def kallsyms() -> str:
    """/proc/kallsyms, read once per run (typeless `__ksym` externs take their addresses from
    it). Only root sees the addresses: to others, and with kernel.kptr_restrict=2, they are 0."""
    with open(KALLSYMS, encoding="latin-1") as f:
        return f.read()


KPROBE_SUPPORT = (
    "/sys/bus/event_source/devices/kprobe/type",  # the kprobe PMU
    "/sys/kernel/tracing/kprobe_events",  # legacy kprobes through tracefs
    "/sys/kernel/debug/tracing/kprobe_events",
)


@functools.cache
def has_syscall_wrapper() -> bool:
    """LINUX_HAS_SYSCALL_WRAPPER as libbpf 1.1+ decides it, without making a kprobe: libbpf
    answers whether a kprobe on `__<arch>_sys_bpf` can be made, so a kernel without kprobes
    answers no even where it wraps its syscalls; here: kprobes exist (their PMU or tracefs
    file) and the wrapped name is in /proc/kallsyms."""
    prefix = SYSCALL_PREFIXES.get(machine())
    if prefix is None or not any(os.path.exists(p) for p in KPROBE_SUPPORT):
        return False
    name = f"__{prefix}_sys_bpf"
    with open("/proc/kallsyms") as f:
        return any(line.split()[2:3] == [name] for line in f)


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
