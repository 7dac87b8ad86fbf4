"""What each map type, program type and BTF feature needs of the kernel, to say so plainly.

When the kernel refuses a map, a program or BTF with the errno it gives for what it does not
know (EINVAL, EOPNOTSUPP, ENOTSUPP), the loader looks here: if the running kernel is older
than the first release that had the feature, the error says "map type RINGBUF needs Linux 5.8;
this kernel is 4.19" instead of an errno. Versions are those of the mainline release that
added each feature.
"""

from __future__ import annotations

from bpfloader.errors import KernelError, NotSupportedError
from bpfloader.kernel import system
from bpfloader.kernel.syscall import UNSUPPORTED_ERRNOS
from bpfloader.obj.bpftypes import MapType as M
from bpfloader.obj.bpftypes import ProgType as P

Version = tuple[int, int]

MAP_TYPES: dict[M, Version] = {
    M.HASH: (3, 19),
    M.ARRAY: (3, 19),
    M.PROG_ARRAY: (4, 2),
    M.PERF_EVENT_ARRAY: (4, 3),
    M.PERCPU_HASH: (4, 6),
    M.PERCPU_ARRAY: (4, 6),
    M.STACK_TRACE: (4, 6),
    M.CGROUP_ARRAY: (4, 8),
    M.LRU_HASH: (4, 10),
    M.LRU_PERCPU_HASH: (4, 10),
    M.LPM_TRIE: (4, 11),
    M.ARRAY_OF_MAPS: (4, 12),
    M.HASH_OF_MAPS: (4, 12),
    M.DEVMAP: (4, 14),
    M.SOCKMAP: (4, 14),
    M.CPUMAP: (4, 15),
    M.XSKMAP: (4, 18),
    M.SOCKHASH: (4, 18),
    M.CGROUP_STORAGE: (4, 19),
    M.REUSEPORT_SOCKARRAY: (4, 19),
    M.PERCPU_CGROUP_STORAGE: (4, 20),
    M.QUEUE: (4, 20),
    M.STACK: (4, 20),
    M.SK_STORAGE: (5, 2),
    M.DEVMAP_HASH: (5, 4),
    M.STRUCT_OPS: (5, 6),
    M.RINGBUF: (5, 8),
    M.INODE_STORAGE: (5, 10),
    M.TASK_STORAGE: (5, 11),
    M.BLOOM_FILTER: (5, 16),
    M.USER_RINGBUF: (6, 1),
    M.CGRP_STORAGE: (6, 2),
    M.ARENA: (6, 9),
}

PROG_TYPES: dict[P, Version] = {
    P.SOCKET_FILTER: (3, 19),
    P.KPROBE: (4, 1),
    P.SCHED_CLS: (4, 1),
    P.SCHED_ACT: (4, 1),
    P.TRACEPOINT: (4, 7),
    P.XDP: (4, 8),
    P.PERF_EVENT: (4, 9),
    P.CGROUP_SKB: (4, 10),
    P.CGROUP_SOCK: (4, 10),
    P.LWT_IN: (4, 10),
    P.LWT_OUT: (4, 10),
    P.LWT_XMIT: (4, 10),
    P.SOCK_OPS: (4, 13),
    P.SK_SKB: (4, 14),
    P.CGROUP_DEVICE: (4, 15),
    P.SK_MSG: (4, 17),
    P.RAW_TRACEPOINT: (4, 17),
    P.CGROUP_SOCK_ADDR: (4, 17),
    P.LWT_SEG6LOCAL: (4, 18),
    P.LIRC_MODE2: (4, 18),
    P.SK_REUSEPORT: (4, 19),
    P.FLOW_DISSECTOR: (4, 20),
    P.CGROUP_SYSCTL: (5, 2),
    P.RAW_TRACEPOINT_WRITABLE: (5, 2),
    P.CGROUP_SOCKOPT: (5, 3),
    P.TRACING: (5, 5),
    P.STRUCT_OPS: (5, 6),
    P.EXT: (5, 6),
    P.LSM: (5, 7),
    P.SK_LOOKUP: (5, 9),
    P.SYSCALL: (5, 14),
    P.NETFILTER: (6, 4),
}

BTF: Version = (4, 18)  # BPF_BTF_LOAD
BTF_FUNC_INFO: Version = (5, 0)  # func_info and line_info with BPF_PROG_LOAD
GLOBAL_DATA: Version = (5, 2)  # BPF_PSEUDO_MAP_VALUE, BPF_MAP_FREEZE
MMAPABLE_MAPS: Version = (5, 5)  # BPF_F_MMAPABLE, which global data maps carry
SUBPROGRAM_CALLS: Version = (4, 16)  # bpf-to-bpf calls
SLEEPABLE_PROGRAMS: Version = (5, 10)
STRUCT_OPS_LINKS: Version = (6, 4)  # BPF_F_LINK struct_ops maps (`.struct_ops.link`)
BPF_COOKIE: Version = (5, 15)  # bpf_get_attach_cookie: LINUX_HAS_BPF_COOKIE


def running_kernel() -> tuple[int, int, int]:
    return system.parse_kernel_release(system.kernel_release())


def unsupported(error: KernelError, *needs: tuple[str, Version]) -> NotSupportedError | None:
    """`error` said as what the kernel lacks, when it lacks one of the features `needs` names
    (as "what", first version) and refused with an errno that means so; None when the errno or
    the kernel's version says otherwise. Raise it `from` the error."""
    if error.errno not in UNSUPPORTED_ERRNOS:
        return None
    running = running_kernel()
    for what, version in needs:
        if running[:2] < version:
            need = (
                f"{what} needs Linux {version[0]}.{version[1]}; "
                f"this kernel is {running[0]}.{running[1]}"
            )
            found = NotSupportedError(
                error.operation,
                error.errno,
                reason=f"{need} ({error.reason})",
                file=error.file,
                section=error.section,
            )
            found.need = need
            return found
    return None


def map_type_need(map_type: int) -> list[tuple[str, Version]]:
    try:
        known = M(map_type)
    except ValueError:
        return []
    version = MAP_TYPES.get(known)
    return [(f"map type {known.name}", version)] if version else []


def prog_type_need(prog_type: int) -> list[tuple[str, Version]]:
    try:
        known = P(prog_type)
    except ValueError:
        return []
    version = PROG_TYPES.get(known)
    return [(f"program type {known.name}", version)] if version else []
