"""libbpf's program section names -> program type, expected attach type, and what else they say.

A section is either exactly a name of the table (`xdp`, `cgroup_skb/ingress`: the name carries
no name of its own, so the pin takes the function's), or, for the entries that take one, the
name followed by `/` and a name of the program's own (`tp/sched/sched_switch`,
`kprobe/do_unlinkat`, `fentry/do_unlinkat`). Programs of the tracing kinds (`fentry/`,
`fexit/`, `fmod_ret/`, `lsm/`, `tp_btf/`, `iter/`) name a kernel function or type that the
loader finds in the kernel's BTF (/sys/kernel/btf/vmlinux) for `attach_btf_id`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bpfloader.obj.bpftypes import BPF_F_SLEEPABLE
from bpfloader.obj.bpftypes import AttachType as A
from bpfloader.obj.bpftypes import ProgType as P

BPF_F_XDP_HAS_FRAGS = 1 << 5


class KernelTarget(StrEnum):
    """The kind of kernel BTF type a tracing program attaches to, and its name's prefix."""

    FUNC = ""  # fentry/fexit/fmod_ret: the function itself
    LSM_HOOK = "bpf_lsm_"  # lsm/file_open -> FUNC bpf_lsm_file_open
    ITER = "bpf_iter_"  # iter/task -> FUNC bpf_iter_task
    RAW_TP = "btf_trace_"  # tp_btf/sched_switch -> TYPEDEF btf_trace_sched_switch

    @property
    def btf_kind(self) -> str:
        return "TYPEDEF" if self is KernelTarget.RAW_TP else "FUNC"


@dataclass(frozen=True)
class SectionDef:
    name: str
    type: P
    attach: int = 0
    takes_name: bool = False  # may go on with "/NAME"
    target: KernelTarget | None = None  # the NAME is looked up in the kernel's BTF
    flags: int = 0  # prog_flags for BPF_PROG_LOAD


def _d(
    name: str,
    prog_type: P,
    attach: int = 0,
    *,
    named: bool = False,
    target: KernelTarget | None = None,
    flags: int = 0,
) -> SectionDef:
    return SectionDef(name, prog_type, int(attach), named or target is not None, target, flags)


_S = BPF_F_SLEEPABLE
_F = KernelTarget.FUNC
SECTION_DEFS: tuple[SectionDef, ...] = (
    _d("socket", P.SOCKET_FILTER),
    _d("sk_reuseport/migrate", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT_OR_MIGRATE),
    _d("sk_reuseport", P.SK_REUSEPORT, A.SK_REUSEPORT_SELECT),
    _d("kprobe", P.KPROBE, named=True),
    _d("uprobe", P.KPROBE, named=True),
    _d("uprobe.s", P.KPROBE, named=True, flags=_S),
    _d("kretprobe", P.KPROBE, named=True),
    _d("uretprobe", P.KPROBE, named=True),
    _d("uretprobe.s", P.KPROBE, named=True, flags=_S),
    _d("kprobe.multi", P.KPROBE, A.TRACE_KPROBE_MULTI, named=True),
    _d("kretprobe.multi", P.KPROBE, A.TRACE_KPROBE_MULTI, named=True),
    _d("usdt", P.KPROBE, named=True),
    _d("tc", P.SCHED_CLS),
    _d("classifier", P.SCHED_CLS),
    _d("action", P.SCHED_ACT),
    _d("tracepoint", P.TRACEPOINT, named=True),
    _d("tp", P.TRACEPOINT, named=True),
    _d("raw_tracepoint", P.RAW_TRACEPOINT, named=True),
    _d("raw_tp", P.RAW_TRACEPOINT, named=True),
    _d("raw_tracepoint.w", P.RAW_TRACEPOINT_WRITABLE, named=True),
    _d("raw_tp.w", P.RAW_TRACEPOINT_WRITABLE, named=True),
    _d("tp_btf", P.TRACING, A.TRACE_RAW_TP, target=KernelTarget.RAW_TP),
    _d("fentry", P.TRACING, A.TRACE_FENTRY, target=_F),
    _d("fmod_ret", P.TRACING, A.MODIFY_RETURN, target=_F),
    _d("fexit", P.TRACING, A.TRACE_FEXIT, target=_F),
    _d("fentry.s", P.TRACING, A.TRACE_FENTRY, target=_F, flags=_S),
    _d("fmod_ret.s", P.TRACING, A.MODIFY_RETURN, target=_F, flags=_S),
    _d("fexit.s", P.TRACING, A.TRACE_FEXIT, target=_F, flags=_S),
    _d("lsm", P.LSM, A.LSM_MAC, target=KernelTarget.LSM_HOOK),
    _d("lsm.s", P.LSM, A.LSM_MAC, target=KernelTarget.LSM_HOOK, flags=_S),
    _d("lsm_cgroup", P.LSM, A.LSM_CGROUP, target=KernelTarget.LSM_HOOK),
    _d("iter", P.TRACING, A.TRACE_ITER, target=KernelTarget.ITER),
    _d("iter.s", P.TRACING, A.TRACE_ITER, target=KernelTarget.ITER, flags=_S),
    # attach_btf_id and the expected attach type come from the struct_ops map that holds the
    # program (obj/struct_ops.py), found in the kernel's BTF at load.
    _d("struct_ops", P.STRUCT_OPS, named=True),
    _d("struct_ops.s", P.STRUCT_OPS, named=True, flags=_S),
    _d("syscall", P.SYSCALL, flags=_S),
    _d("xdp.frags/devmap", P.XDP, A.XDP_DEVMAP, flags=BPF_F_XDP_HAS_FRAGS),
    _d("xdp/devmap", P.XDP, A.XDP_DEVMAP),
    _d("xdp.frags/cpumap", P.XDP, A.XDP_CPUMAP, flags=BPF_F_XDP_HAS_FRAGS),
    _d("xdp/cpumap", P.XDP, A.XDP_CPUMAP),
    _d("xdp.frags", P.XDP, A.XDP, flags=BPF_F_XDP_HAS_FRAGS),
    _d("xdp", P.XDP, A.XDP),
    _d("perf_event", P.PERF_EVENT),
    _d("lwt_in", P.LWT_IN),
    _d("lwt_out", P.LWT_OUT),
    _d("lwt_xmit", P.LWT_XMIT),
    _d("lwt_seg6local", P.LWT_SEG6LOCAL),
    _d("sockops", P.SOCK_OPS, A.CGROUP_SOCK_OPS),
    _d("sk_skb/stream_parser", P.SK_SKB, A.SK_SKB_STREAM_PARSER),
    _d("sk_skb/stream_verdict", P.SK_SKB, A.SK_SKB_STREAM_VERDICT),
    _d("sk_skb", P.SK_SKB),
    _d("sk_msg", P.SK_MSG, A.SK_MSG_VERDICT),
    _d("lirc_mode2", P.LIRC_MODE2, A.LIRC_MODE2),
    _d("flow_dissector", P.FLOW_DISSECTOR, A.FLOW_DISSECTOR),
    _d("cgroup_skb/ingress", P.CGROUP_SKB, A.CGROUP_INET_INGRESS),
    _d("cgroup_skb/egress", P.CGROUP_SKB, A.CGROUP_INET_EGRESS),
    _d("cgroup/skb", P.CGROUP_SKB),
    _d("cgroup/sock_create", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE),
    _d("cgroup/sock_release", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_RELEASE),
    _d("cgroup/sock", P.CGROUP_SOCK, A.CGROUP_INET_SOCK_CREATE),
    _d("cgroup/post_bind4", P.CGROUP_SOCK, A.CGROUP_INET4_POST_BIND),
    _d("cgroup/post_bind6", P.CGROUP_SOCK, A.CGROUP_INET6_POST_BIND),
    _d("cgroup/bind4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_BIND),
    _d("cgroup/bind6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_BIND),
    _d("cgroup/connect4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_CONNECT),
    _d("cgroup/connect6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_CONNECT),
    _d("cgroup/sendmsg4", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_SENDMSG),
    _d("cgroup/sendmsg6", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_SENDMSG),
    _d("cgroup/recvmsg4", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP4_RECVMSG),
    _d("cgroup/recvmsg6", P.CGROUP_SOCK_ADDR, A.CGROUP_UDP6_RECVMSG),
    _d("cgroup/getpeername4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETPEERNAME),
    _d("cgroup/getpeername6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_GETPEERNAME),
    _d("cgroup/getsockname4", P.CGROUP_SOCK_ADDR, A.CGROUP_INET4_GETSOCKNAME),
    _d("cgroup/getsockname6", P.CGROUP_SOCK_ADDR, A.CGROUP_INET6_GETSOCKNAME),
    _d("cgroup/sysctl", P.CGROUP_SYSCTL, A.CGROUP_SYSCTL),
    _d("cgroup/getsockopt", P.CGROUP_SOCKOPT, A.CGROUP_GETSOCKOPT),
    _d("cgroup/setsockopt", P.CGROUP_SOCKOPT, A.CGROUP_SETSOCKOPT),
    _d("cgroup/dev", P.CGROUP_DEVICE, A.CGROUP_DEVICE),
    _d("sk_lookup", P.SK_LOOKUP, A.SK_LOOKUP),
)


@dataclass(frozen=True)
class ProgramKind:
    """What a section name says about its programs."""

    definition: SectionDef
    own_name: str  # what follows "NAME/"; "" where the section is exactly a table name

    @property
    def target_name(self) -> str:
        """The kernel BTF type a tracing program attaches to ("" for other programs)."""
        target = self.definition.target
        return "" if target is None else f"{target.value}{self.own_name}"


def program_kind(section: str) -> ProgramKind | None:
    """The table entry a section name matches (the first that does), or None."""
    for definition in SECTION_DEFS:
        if section == definition.name:
            return ProgramKind(definition, "")
        if definition.takes_name and section.startswith(definition.name + "/"):
            return ProgramKind(definition, section[len(definition.name) + 1 :])
    return None


# Section names libbpf knows (its section_defs) whose programs this loader cannot load yet:
# (name, whether `/NAME` may follow). A program in one is refused in these words, not as a
# section libbpf does not know.
UNSUPPORTED: tuple[tuple[str, bool], ...] = (
    ("freplace", True),
    ("ksyscall", True),
    ("kretsyscall", True),
    ("uprobe.multi", True),
    ("uretprobe.multi", True),
    ("uprobe.multi.s", True),
    ("uretprobe.multi.s", True),
    ("usdt.s", True),
    ("kprobe.session", True),
    ("uprobe.session", True),
    ("uprobe.session.s", True),
    ("tc/ingress", False),
    ("tc/egress", False),
    ("tcx/ingress", False),
    ("tcx/egress", False),
    ("netkit/primary", False),
    ("netkit/peer", False),
    ("netfilter", False),
    ("sk_skb/verdict", False),
    ("cgroup/connect_unix", False),
    ("cgroup/sendmsg_unix", False),
    ("cgroup/recvmsg_unix", False),
    ("cgroup/getpeername_unix", False),
    ("cgroup/getsockname_unix", False),
)


def unknown_section(section: str) -> str:
    """Why a section program_kind does not know is refused, in one short line: a name of
    libbpf's that this loader does not support yet, or one libbpf does not know either."""
    for name, takes_name in UNSUPPORTED:
        if section == name or (takes_name and section.startswith(name + "/")):
            return f"{name} programs are not supported yet"
    return (
        "not a program section libbpf knows (README.md, libbpf-style objects, lists them; "
        "a policy file's `type` gives the type of programs in other sections)"
    )


def typing_names() -> dict[str, SectionDef]:
    """The program types a policy file may give (`type = "xdp"`), by name: libbpf's section
    names that need nothing more (as bpftool's `prog loadall ... type TYPE` takes them); not
    those that name a kernel function or type to attach to (`fentry`, `lsm`, ...)."""
    found: dict[str, SectionDef] = {}
    for d in SECTION_DEFS:
        if d.target is None:
            found.setdefault(d.name, d)
    return found
