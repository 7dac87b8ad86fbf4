"""Code-section names -> (program type, expected attach type): Android's prefix table."""

from __future__ import annotations

from bpfloader.obj.bpftypes import AttachType as A
from bpfloader.obj.bpftypes import ProgType as P

# First match wins. The attach type is what BPF_PROG_LOAD gets as expected_attach_type.
SECTION_PREFIXES: tuple[tuple[str, P, A | int], ...] = (
    ("kprobe/", P.KPROBE, 0),
    ("kretprobe/", P.KPROBE, 0),
    ("uprobe/", P.KPROBE, 0),
    ("uretprobe/", P.KPROBE, 0),
    ("tracepoint/", P.TRACEPOINT, 0),
    ("perf_event/", P.PERF_EVENT, 0),
    ("skfilter/", P.SOCKET_FILTER, 0),
    ("schedcls/", P.SCHED_CLS, 0),
    ("schedact/", P.SCHED_ACT, 0),
    ("xdp/", P.XDP, 0),
    ("cgroupskb/", P.CGROUP_SKB, 0),
    ("ingress/", P.CGROUP_SKB, A.CGROUP_INET_INGRESS),
    ("egress/", P.CGROUP_SKB, A.CGROUP_INET_EGRESS),
    ("cgroupsock/", P.CGROUP_SOCK, 0),
    ("cgroupsockcreate/", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE),
    ("cgroupsockrelease/", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_RELEASE),
    ("postbind4/", P.CGROUP_SOCK, A.CGROUP_INET4_POST_BIND),
    ("postbind6/", P.CGROUP_SOCK, A.CGROUP_INET6_POST_BIND),
    ("bind4/", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_BIND),
    ("bind6/", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_BIND),
    ("connect4/", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT),
    ("connect6/", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_CONNECT),
    ("recvmsg4/", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_RECVMSG),
    ("recvmsg6/", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_RECVMSG),
    ("sendmsg4/", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_SENDMSG),
    ("sendmsg6/", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_SENDMSG),
    ("getsockopt/", P.CGROUP_SOCKOPT, A.CGROUP_GETSOCKOPT),
    ("setsockopt/", P.CGROUP_SOCKOPT, A.CGROUP_SETSOCKOPT),
    ("sockops/", P.SOCK_OPS, A.CGROUP_SOCK_OPS),
    ("sysctl", P.CGROUP_SYSCTL, A.CGROUP_SYSCTL),
)


def program_kind(section: str) -> tuple[P, int] | None:
    """The program type and expected attach type for a code section, or None if unknown."""
    for prefix, prog_type, attach in SECTION_PREFIXES:
        if section.startswith(prefix):
            return prog_type, int(attach)
    return None
