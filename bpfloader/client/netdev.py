"""Attaching to network interfaces: XDP (a BPF link, or netlink on kernels before 5.9) and tc
programs in a clsact qdisc (netlink, through pyroute2, imported only here and only when used).

Interfaces are named in the calling thread's network namespace. A netlink attachment keeps
its netlink socket, opened in that namespace, to undo itself there.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from bpfloader.client.attachment import AttachableProgram, Attachment
from bpfloader.errors import AttachError, KernelError
from bpfloader.kernel import links as klinks
from bpfloader.kernel.syscall import UNSUPPORTED_ERRNOS
from bpfloader.obj.bpftypes import AttachType, ProgType

XDP_MODES = {"generic": 1 << 1, "driver": 1 << 2}  # XDP_FLAGS_SKB_MODE, XDP_FLAGS_DRV_MODE
CLSACT_PARENTS = {"ingress": 0xFFFFFFF2, "egress": 0xFFFFFFF3}  # TC_H_MIN_INGRESS / _EGRESS
FILTER_HANDLE = 1
_made_qdiscs: set[tuple[int, int]] = set()  # (netns, ifindex): clsact qdiscs this process made
NO_TC_ACTIONS = (
    "this kernel cannot run a SCHED_ACT program: it needs the matchall classifier and the bpf"
    " action (CONFIG_NET_CLS_MATCHALL, CONFIG_NET_ACT_BPF)"
)


def interface_index(interface: str) -> int:
    try:
        return socket.if_nametoindex(interface)
    except OSError as e:
        raise AttachError(f"no network interface {interface!r} in this network namespace") from e


def attach_xdp(prog: AttachableProgram, interface: str, mode: str = "generic") -> Attachment:
    prog.require_type("an interface's XDP hook", ProgType.XDP)
    if mode not in XDP_MODES:
        raise AttachError(f"XDP mode {mode!r}: expected {' or '.join(XDP_MODES)}")
    index = interface_index(interface)
    target = f"xdp:{interface}:{mode}"
    try:
        link = klinks.create_link(prog.fd, index, AttachType.XDP, XDP_MODES[mode])
    except KernelError as e:
        if e.errno not in UNSUPPORTED_ERRNOS:
            e.where(file=target)
            raise
        return _attach_xdp_netlink(prog, target, index, XDP_MODES[mode])
    return Attachment(target, links=[("", link)])


def _attach_xdp_netlink(prog: AttachableProgram, target: str, index: int, flags: int) -> Attachment:
    netlink = _netlink()

    def set_program(fd: int) -> None:
        xdp = {"attrs": [("IFLA_XDP_FD", fd), ("IFLA_XDP_FLAGS", flags)]}
        _call(netlink.link, target, "set", index=index, xdp=xdp)

    try:
        set_program(prog.fd)
    except BaseException:
        netlink.close()
        raise
    return _netlink_attachment(target, netlink, lambda: set_program(-1), "XDP by netlink")


TCX = {"ingress": AttachType.TCX_INGRESS, "egress": AttachType.TCX_EGRESS}


def attach_tcx(prog: AttachableProgram, interface: str, direction: str) -> Attachment | None:
    """A SCHED_CLS program on the interface's ingress or egress through a tcx link (Linux
    6.6+: a BPF link, no qdisc, which can be pinned and updated in place); None for another
    type (a SCHED_ACT program runs as a filter's action) or on a kernel without them."""
    if prog.info.type != ProgType.SCHED_CLS:
        return None
    if direction not in TCX:
        raise AttachError(f"tc direction {direction!r}: expected ingress or egress")
    try:
        link = klinks.create_link(prog.fd, interface_index(interface), TCX[direction])
    except KernelError as e:
        if e.errno in UNSUPPORTED_ERRNOS:
            return None
        raise
    return Attachment(f"tc:{interface}:{direction}", links=[("", link)])


def attach_tc(
    prog: AttachableProgram, interface: str, direction: str = "ingress", priority: int | None = None
) -> Attachment:
    """A direct-action cls_bpf filter (SCHED_CLS), or a matchall filter running the program
    as its action (SCHED_ACT), at `priority` (default: the lowest free one) in the
    interface's clsact qdisc. A qdisc this process made, where there was none, is removed by
    the close() that leaves no filter in it. (attach_tcx makes a BPF link instead.)"""
    prog.require_type("a tc hook", ProgType.SCHED_CLS, ProgType.SCHED_ACT)
    if direction not in CLSACT_PARENTS:
        raise AttachError(f"tc direction {direction!r}: expected ingress or egress")
    index = interface_index(interface)
    parent = CLSACT_PARENTS[direction]
    netlink = _netlink()
    qdisc = (_netns_id(), index)
    made_qdisc = False
    try:
        made_qdisc = _ensure_clsact(netlink, interface, index)
        if made_qdisc:
            _made_qdiscs.add(qdisc)
        if priority is None:
            taken = {f["info"] >> 16 for f in netlink.get_filters(index=index, parent=parent)}
            priority = min(set(range(1, len(taken) + 2)) - taken)
        target = f"tc:{interface}:{direction}:{priority}"
        filter_kind, options = _filter(prog)
        try:
            _call(
                netlink.tc,
                target,
                "add-filter",
                filter_kind,
                index,
                FILTER_HANDLE,
                parent=parent,
                prio=priority,
                **options,
            )
        except KernelError as e:
            if filter_kind == "matchall" and e.errno == errno.ENOENT:
                raise AttachError(NO_TC_ACTIONS, file=prog.path) from e
            raise
    except BaseException:
        if made_qdisc:
            _made_qdiscs.discard(qdisc)
            _call(netlink.tc, interface, "del", "clsact", index)
        netlink.close()
        raise

    def remove() -> None:
        _call(netlink.tc, target, "del-filter", filter_kind, index, parent=parent, prio=priority)
        if qdisc in _made_qdiscs and not any(
            netlink.get_filters(index=index, parent=p) for p in CLSACT_PARENTS.values()
        ):
            _made_qdiscs.discard(qdisc)
            _call(netlink.tc, interface, "del", "clsact", index)

    return _netlink_attachment(target, netlink, remove, "a tc filter")


def _netns_id() -> int:
    """The calling thread's network namespace, by its inode."""
    return os.stat("/proc/thread-self/ns/net").st_ino


def _filter(prog: AttachableProgram) -> tuple[str, dict[str, Any]]:
    name = prog.info.name or f"prog_{prog.info.id}"
    if prog.info.type == ProgType.SCHED_CLS:
        return "bpf", {"fd": prog.fd, "name": name, "direct_action": True}
    action = {"kind": "bpf", "fd": prog.fd, "name": name, "action": "pipe"}
    return "matchall", {"action": action}


def _ensure_clsact(netlink: Any, interface: str, index: int) -> bool:
    """Add a clsact qdisc unless the interface has one; whether it was added."""
    for qdisc in netlink.get_qdiscs(index=index):
        if qdisc.get_attr("TCA_KIND") == "clsact":
            return False
    _call(netlink.tc, interface, "add", "clsact", index)
    return True


def _netlink_attachment(target: str, netlink: Any, undo: Any, what: str) -> Attachment:
    def undo_and_close() -> None:
        try:
            undo()
        finally:
            netlink.close()

    return Attachment(
        target,
        undo=undo_and_close,
        unpinnable=f"{what} is a netlink object, not a BPF link; it stays until close()",
    )


def _netlink() -> Any:
    try:
        from pyroute2 import IPRoute
    except ImportError as e:
        raise AttachError(
            "attaching to a network interface needs pyroute2 (pip install 'bpfloader[net]')"
        ) from e
    return IPRoute()


def _call(method: Any, target: str, *args: Any, **kwargs: Any) -> Any:
    """A pyroute2 request; its NetlinkError becomes a KernelError naming the target."""
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        return method(*args, **kwargs)
    except NetlinkError as e:
        raise KernelError(f"netlink {args[0]}", e.code, file=target) from e
