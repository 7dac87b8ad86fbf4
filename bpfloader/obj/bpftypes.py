"""The kernel's BPF enums (include/uapi/linux/bpf.h), as Python enums, and what the loader and
the client need to know of each map type (MAP_FACTS)."""

from dataclasses import dataclass
from enum import IntEnum, StrEnum


class MapType(IntEnum):
    UNSPEC = 0
    HASH = 1
    ARRAY = 2
    PROG_ARRAY = 3
    PERF_EVENT_ARRAY = 4
    PERCPU_HASH = 5
    PERCPU_ARRAY = 6
    STACK_TRACE = 7
    CGROUP_ARRAY = 8
    LRU_HASH = 9
    LRU_PERCPU_HASH = 10
    LPM_TRIE = 11
    ARRAY_OF_MAPS = 12
    HASH_OF_MAPS = 13
    DEVMAP = 14
    SOCKMAP = 15
    CPUMAP = 16
    XSKMAP = 17
    SOCKHASH = 18
    CGROUP_STORAGE = 19
    REUSEPORT_SOCKARRAY = 20
    PERCPU_CGROUP_STORAGE = 21
    QUEUE = 22
    STACK = 23
    SK_STORAGE = 24
    DEVMAP_HASH = 25
    STRUCT_OPS = 26
    RINGBUF = 27
    INODE_STORAGE = 28
    TASK_STORAGE = 29
    BLOOM_FILTER = 30
    USER_RINGBUF = 31
    CGRP_STORAGE = 32
    ARENA = 33


class ProgType(IntEnum):
    UNSPEC = 0
    SOCKET_FILTER = 1
    KPROBE = 2
    SCHED_CLS = 3
    SCHED_ACT = 4
    TRACEPOINT = 5
    XDP = 6
    PERF_EVENT = 7
    CGROUP_SKB = 8
    CGROUP_SOCK = 9
    LWT_IN = 10
    LWT_OUT = 11
    LWT_XMIT = 12
    SOCK_OPS = 13
    SK_SKB = 14
    CGROUP_DEVICE = 15
    SK_MSG = 16
    RAW_TRACEPOINT = 17
    CGROUP_SOCK_ADDR = 18
    LWT_SEG6LOCAL = 19
    LIRC_MODE2 = 20
    SK_REUSEPORT = 21
    FLOW_DISSECTOR = 22
    CGROUP_SYSCTL = 23
    RAW_TRACEPOINT_WRITABLE = 24
    CGROUP_SOCKOPT = 25
    TRACING = 26
    STRUCT_OPS = 27
    EXT = 28
    LSM = 29
    SK_LOOKUP = 30
    SYSCALL = 31
    NETFILTER = 32


class AttachType(IntEnum):
    CGROUP_INET_INGRESS = 0
    CGROUP_INET_EGRESS = 1
    CGROUP_INET_SOCK_CREATE = 2
    CGROUP_SOCK_OPS = 3
    SK_SKB_STREAM_PARSER = 4
    SK_SKB_STREAM_VERDICT = 5
    CGROUP_DEVICE = 6
    SK_MSG_VERDICT = 7
    CGROUP_INET4_BIND = 8
    CGROUP_INET6_BIND = 9
    CGROUP_INET4_CONNECT = 10
    CGROUP_INET6_CONNECT = 11
    CGROUP_INET4_POST_BIND = 12
    CGROUP_INET6_POST_BIND = 13
    CGROUP_UDP4_SENDMSG = 14
    CGROUP_UDP6_SENDMSG = 15
    LIRC_MODE2 = 16
    FLOW_DISSECTOR = 17
    CGROUP_SYSCTL = 18
    CGROUP_UDP4_RECVMSG = 19
    CGROUP_UDP6_RECVMSG = 20
    CGROUP_GETSOCKOPT = 21
    CGROUP_SETSOCKOPT = 22
    TRACE_RAW_TP = 23
    TRACE_FENTRY = 24
    TRACE_FEXIT = 25
    MODIFY_RETURN = 26
    LSM_MAC = 27
    TRACE_ITER = 28
    CGROUP_INET4_GETPEERNAME = 29
    CGROUP_INET6_GETPEERNAME = 30
    CGROUP_INET4_GETSOCKNAME = 31
    CGROUP_INET6_GETSOCKNAME = 32
    XDP_DEVMAP = 33
    CGROUP_INET_SOCK_RELEASE = 34
    XDP_CPUMAP = 35
    SK_LOOKUP = 36
    XDP = 37
    SK_SKB_VERDICT = 38
    SK_REUSEPORT_SELECT = 39
    SK_REUSEPORT_SELECT_OR_MIGRATE = 40
    PERF_EVENT = 41
    TRACE_KPROBE_MULTI = 42
    LSM_CGROUP = 43
    STRUCT_OPS = 44
    NETFILTER = 45
    TCX_INGRESS = 46
    TCX_EGRESS = 47


class PinKind(StrEnum):
    """What a pin (or a bpf fd) holds."""

    MAP = "map"
    PROGRAM = "program"
    LINK = "link"


# Instruction encoding (obj/insn.py reads and patches instructions) and ELF relocation types
# of BPF objects.
INSN_SIZE = 8
OPCODE_LD_IMM64 = 0x18
OPCODE_CALL = 0x85
BPF_PSEUDO_MAP_FD = 1  # an ld_imm64's src_reg: imm is a map's fd
BPF_PSEUDO_MAP_VALUE = 2  # ... imm a map's fd, the second half's imm an offset in its value
BPF_PSEUDO_CALL = 1  # a call's src_reg: bpf-to-bpf
BPF_PSEUDO_FUNC = 4  # an ld_imm64's src_reg: the address of a function (callbacks)
BPF_PSEUDO_BTF_ID = 3  # an ld_imm64's src_reg: imm is a kernel BTF id (a VAR or a FUNC)
BPF_PSEUDO_KFUNC_CALL = 2  # a call's src_reg: imm is a kernel FUNC's BTF id
R_BPF_64_64 = 1  # ld_imm64 of a symbol's address: a map reference
R_BPF_64_32 = 10  # call to a bpf-to-bpf function

# Flags the loader derives itself: from a section name (sleepable), for global data (mmapable).
BPF_F_SLEEPABLE = 1 << 4
BPF_F_MMAPABLE = 1 << 10
BPF_F_LINK = 1 << 13  # a struct_ops map registered by a link, not by its update

# Map flags the kernel itself changes, which a pinned map's info then shows differently from
# the flags it was created with.
# What the pins of a struct_ops map record as their target: `struct_ops:tcp_congestion_ops`.
STRUCT_OPS_TARGET = "struct_ops:"

BPF_F_RDONLY = 1 << 3  # of the fd only: the kernel does not keep these two in the map
BPF_F_WRONLY = 1 << 4
BPF_F_RDONLY_PROG = 1 << 7  # added to every DEVMAP and DEVMAP_HASH (kernel/bpf/devmap.c)
FD_ONLY_MAP_FLAGS = BPF_F_RDONLY | BPF_F_WRONLY


@dataclass(frozen=True)
class MapFacts:
    """What the loader and the client need to know of a map type; one row of MAP_FACTS each.
    (When the kernel gained the type is in kernel/features.py.)"""

    takes_btf: bool = True  # the kernel takes BTF key and value types for it
    needs_btf: bool = False  # ... and makes the map only with them
    per_cpu: bool = False  # one value per possible CPU
    local_storage: bool = False  # one value per socket, inode, task or cgroup, made when used
    every_index: bool = False  # an array: every index exists, none can be deleted
    keyless: str = ""  # no keys to look up: what to use instead
    added_flags: int = 0  # flags the kernel adds to every map of the type
    capacity: str = "elements"  # what max_entries counts: "elements", "bytes" or "pages"


_NO_BTF = MapFacts(takes_btf=False)
_STORAGE = MapFacts(needs_btf=True, local_storage=True)
MAP_FACTS: dict[MapType, MapFacts] = {
    MapType.UNSPEC: _NO_BTF,
    MapType.HASH: MapFacts(),
    MapType.ARRAY: MapFacts(every_index=True),
    MapType.PROG_ARRAY: _NO_BTF,
    MapType.PERF_EVENT_ARRAY: _NO_BTF,
    MapType.PERCPU_HASH: MapFacts(per_cpu=True),
    MapType.PERCPU_ARRAY: MapFacts(per_cpu=True, every_index=True),
    MapType.STACK_TRACE: _NO_BTF,
    MapType.CGROUP_ARRAY: _NO_BTF,
    MapType.LRU_HASH: MapFacts(),
    MapType.LRU_PERCPU_HASH: MapFacts(per_cpu=True),
    MapType.LPM_TRIE: MapFacts(),
    MapType.ARRAY_OF_MAPS: _NO_BTF,
    MapType.HASH_OF_MAPS: _NO_BTF,
    MapType.DEVMAP: MapFacts(takes_btf=False, added_flags=BPF_F_RDONLY_PROG),
    MapType.SOCKMAP: _NO_BTF,
    MapType.CPUMAP: _NO_BTF,
    MapType.XSKMAP: _NO_BTF,
    MapType.SOCKHASH: _NO_BTF,
    MapType.CGROUP_STORAGE: MapFacts(local_storage=True),
    MapType.REUSEPORT_SOCKARRAY: MapFacts(),
    MapType.PERCPU_CGROUP_STORAGE: MapFacts(per_cpu=True, local_storage=True),
    MapType.QUEUE: _NO_BTF,
    MapType.STACK: _NO_BTF,
    MapType.SK_STORAGE: _STORAGE,
    MapType.DEVMAP_HASH: MapFacts(takes_btf=False, added_flags=BPF_F_RDONLY_PROG),
    MapType.STRUCT_OPS: MapFacts(),
    MapType.RINGBUF: MapFacts(
        takes_btf=False, keyless="bpfloader.client.RingBuffer reads it", capacity="bytes"
    ),
    MapType.INODE_STORAGE: _STORAGE,
    MapType.TASK_STORAGE: _STORAGE,
    MapType.BLOOM_FILTER: MapFacts(),
    MapType.USER_RINGBUF: MapFacts(
        takes_btf=False,
        keyless="programs read it; user space writes it with mmap",
        capacity="bytes",
    ),
    MapType.CGRP_STORAGE: _STORAGE,
    MapType.ARENA: MapFacts(capacity="pages"),
}
UNKNOWN_MAP = MapFacts()  # a type newer than this table: the kernel decides


def map_facts(map_type: int) -> MapFacts:
    """The facts of a map type, by number (an object may name a type newer than this table)."""
    try:
        return MAP_FACTS[MapType(map_type)]
    except ValueError:
        return UNKNOWN_MAP


def kernel_map_flags(map_type: int, flags: int) -> int:
    """The flags the kernel reports for a map created with `flags`: what a pinned map's flags
    are compared with. The kernel keeps no fd-only flag (BPF_F_RDONLY, BPF_F_WRONLY) in the map
    and adds BPF_F_RDONLY_PROG to device maps; Android's loader (mapMatchesExpectations) and
    libbpf account for the device maps the same way when they reuse a pinned map."""
    return (flags & ~FD_ONLY_MAP_FLAGS) | map_facts(map_type).added_flags
