"""BPF links (BPF_LINK_CREATE) and the attachments that came before them (BPF_PROG_ATTACH).

A link is a kernel object that holds one attachment: it lasts while an fd or a pin refers to
it, so pinning a link makes an attachment outlive the process that made it.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum

from bpfloader.errors import KernelError
from bpfloader.kernel.attrs import (
    InfoAttr,
    LinkCreateAttr,
    LinkDetachAttr,
    LinkInfoStruct,
    LinkUpdateAttr,
    ProgAttachAttr,
    RawTracepointAttr,
)
from bpfloader.kernel.fd import Fd
from bpfloader.kernel.syscall import UNSUPPORTED_ERRNOS, Cmd, bpf, objects_by_id

BPF_F_ALLOW_MULTI = 1 << 1
BPF_F_REPLACE = 1 << 2


class LinkType(IntEnum):
    """enum bpf_link_type (include/uapi/linux/bpf.h)."""

    UNSPEC = 0
    RAW_TRACEPOINT = 1
    TRACING = 2
    CGROUP = 3
    ITER = 4
    NETNS = 5
    XDP = 6
    PERF_EVENT = 7
    KPROBE_MULTI = 8
    STRUCT_OPS = 9
    NETFILTER = 10
    TCX = 11
    UPROBE_MULTI = 12
    NETKIT = 13
    SOCKMAP = 14


# Links whose program the kernel can swap in place (BPF_LINK_UPDATE: the link stays, with its
# id; no packet or event between the two programs goes unhandled). The others (perf events:
# tracepoints, kprobes, uprobes; raw tracepoints; fentry and the like) answer EOPNOTSUPP.
UPDATABLE = frozenset(
    {LinkType.CGROUP, LinkType.NETNS, LinkType.XDP, LinkType.TCX, LinkType.NETKIT}
)
BPF_STRUCT_OPS = 44  # the attach type of a struct_ops map's link (its "program" is the map)


# What struct bpf_link_info holds after its head, per kind of link: each field's name and its
# struct format (native order); an attach type is named by its AttachType, a perf event's kind
# by PERF_EVENT_TYPES. Kinds whose details are names behind pointers (raw tracepoints,
# iterators, kprobe and uprobe multi) have none here.
DETAILS: dict[LinkType, tuple[tuple[str, str], ...]] = {
    LinkType.TRACING: (("attach_type", "I"), ("target_obj_id", "I"), ("target_btf_id", "I")),
    LinkType.CGROUP: (("cgroup_id", "Q"), ("attach_type", "I")),
    LinkType.NETNS: (("netns_ino", "I"), ("attach_type", "I")),
    LinkType.XDP: (("ifindex", "I"),),
    LinkType.PERF_EVENT: (("perf_event_type", "I"),),
    LinkType.STRUCT_OPS: (("map_id", "I"),),
    LinkType.NETFILTER: (("pf", "I"), ("hooknum", "I"), ("priority", "i"), ("flags", "I")),
    LinkType.TCX: (("ifindex", "I"), ("attach_type", "I")),
    LinkType.NETKIT: (("ifindex", "I"), ("attach_type", "I")),
    LinkType.SOCKMAP: (("map_id", "I"), ("attach_type", "I")),
}
# enum bpf_perf_event_type
PERF_EVENT_TYPES = ("unspec", "uprobe", "uretprobe", "kprobe", "kretprobe", "tracepoint", "event")


@dataclass(frozen=True)
class LinkInfo:
    id: int
    type: int
    prog_id: int
    map_id: int = 0  # a struct_ops link's: the map it registers
    # What the kernel says of where it is attached (DETAILS: attach_type, cgroup_id, ifindex ...)
    details: tuple[tuple[str, int], ...] = ()

    @property
    def type_name(self) -> str:
        try:
            return LinkType(self.type).name.lower()
        except ValueError:
            return f"type {self.type}"


def create_link(prog_fd: int, target: int, attach_type: int, flags: int = 0) -> int:
    """A new link fd attaching `prog_fd` to `target` (an fd, or an ifindex for XDP)."""
    attr = LinkCreateAttr(prog_fd=prog_fd, target=target, attach_type=attach_type, flags=flags)
    return bpf(Cmd.LINK_CREATE, attr)


def open_raw_tracepoint(name: str, prog_fd: int) -> int:
    """A link fd attaching `prog_fd` to raw tracepoint `name` (BPF_RAW_TRACEPOINT_OPEN: a BPF
    link since 5.7; before, an fd that cannot be pinned)."""
    buffer = ctypes.create_string_buffer(name.encode())
    attr = RawTracepointAttr(name=ctypes.addressof(buffer), prog_fd=prog_fd)
    return bpf(Cmd.RAW_TRACEPOINT_OPEN, attr, operation="BPF_RAW_TRACEPOINT_OPEN")


def update_link(link_fd: int, new_prog_fd: int, old_prog_fd: int | None = None) -> None:
    """Make the link run `new_prog_fd` (instead of `old_prog_fd`, where given: refused where it
    runs another by then). Refused for a kind of link that cannot be updated: see UPDATABLE. A
    struct_ops link takes map fds in the same places: it registers the new map instead."""
    attr = LinkUpdateAttr(
        link_fd=link_fd,
        new_prog_fd=new_prog_fd,
        flags=BPF_F_REPLACE if old_prog_fd is not None else 0,
        old_prog_fd=old_prog_fd or 0,
    )
    bpf(Cmd.LINK_UPDATE, attr, operation="BPF_LINK_UPDATE")


def detach_link(link_fd: int) -> None:
    """Detach now, whoever else holds the link (BPF_LINK_DETACH), where the kernel can for
    this kind of link; perf links cannot: they detach when their last holder lets go."""
    try:
        bpf(Cmd.LINK_DETACH, LinkDetachAttr(link_fd=link_fd))
    except KernelError as e:
        if e.errno not in UNSUPPORTED_ERRNOS:
            raise


def every_link() -> Iterator[tuple[Fd, LinkInfo]]:
    """Each BPF link in the kernel (an fd of it, and what it is), by id: the ones made by
    others too. The caller closes each fd."""
    for fd in objects_by_id(Cmd.LINK_GET_NEXT_ID, Cmd.LINK_GET_FD_BY_ID):
        try:
            info = link_info(fd.number)
        except BaseException:
            fd.close()
            raise
        yield fd, info


def link_info(fd: int) -> LinkInfo:
    info = LinkInfoStruct()
    attr = InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr, operation="BPF_OBJ_GET_INFO_BY_FD (link)")
    map_id = 0
    if info.type == LinkType.STRUCT_OPS:
        map_id = int.from_bytes(bytes(info.details[:4]), "little")
    try:
        fields = DETAILS.get(LinkType(info.type))
    except ValueError:  # a kind of link newer than this table
        fields = None
    details: tuple[tuple[str, int], ...] = ()
    if fields:
        layout = struct.Struct("=" + "".join(code for _, code in fields))
        values = layout.unpack_from(bytes(info.details))
        details = tuple((name, value) for (name, _), value in zip(fields, values, strict=True))
    return LinkInfo(
        id=info.id, type=info.type, prog_id=info.prog_id, map_id=map_id, details=details
    )


@functools.cache
def links_supported() -> bool:
    """Whether this kernel knows BPF_LINK_CREATE (5.7+). With an fd that cannot be a program
    it answers EBADF; a kernel without the command answers EINVAL."""
    try:
        bpf(Cmd.LINK_CREATE, LinkCreateAttr(prog_fd=0xFFFFFFFF))
    except KernelError as e:
        return e.errno != errno.EINVAL
    raise AssertionError("BPF_LINK_CREATE accepted an invalid program fd")


def attach_program(target_fd: int, prog_fd: int, attach_type: int) -> None:
    """BPF_PROG_ATTACH with BPF_F_ALLOW_MULTI: stays until detach_program, no fd holds it."""
    attr = ProgAttachAttr(
        target_fd=target_fd,
        attach_bpf_fd=prog_fd,
        attach_type=attach_type,
        attach_flags=BPF_F_ALLOW_MULTI,
    )
    bpf(Cmd.PROG_ATTACH, attr)


def detach_program(target_fd: int, prog_fd: int, attach_type: int) -> None:
    attr = ProgAttachAttr(target_fd=target_fd, attach_bpf_fd=prog_fd, attach_type=attach_type)
    bpf(Cmd.PROG_DETACH, attr)
