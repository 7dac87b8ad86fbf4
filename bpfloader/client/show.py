"""A pinned program or link as the kernel describes it, for people and scripts: what
`bpfloader prog show PIN` and `bpfloader link show PIN` print (bpftool's `prog show pinned`
and `link show pinned`), as JSON data and as text.

`prog show --json`:

    {"pin": str, "id": int, "type": str, "name": str, "tag": str,
     "verified_insns": int, "jited_size": int | null, "xlated_size": int,
     "maps": [{"id": int, "name": str | null, "type": str | null}],
     "links": [{"id": int, "type": str}] | null}

`link show --json`:

    {"pin": str, "id": int, "type": str, "prog_id": int, "prog_name": str | null,
     "details": {str: int | str}}

`type` is the kernel's name of the program type or link type, lower case as bpftool prints it
("tracepoint", "cgroup"). A program's `maps` are those it holds; `links`, the BPF links that
run it. Reading another object by its id takes CAP_SYS_ADMIN: without it, a map's `name` and
`type` are null, and so are `links` and `prog_name`. A link's `details` are what the kernel
says of where it is attached, by kind of link (kernel/links.DETAILS): `attach_type` (its name,
"cgroup_inet_egress"), `cgroup_id`, `ifindex` and `interface` (the interface's name in this
network namespace, where there is one), `netns_ino`, `target_obj_id`, `target_btf_id`,
`perf_event_type` ("tracepoint", "kprobe", ...), `map_id`, and netfilter's `pf`, `hooknum`,
`priority`, `flags`.
"""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any

from bpfloader.client.pinned import open_pin
from bpfloader.client.programs import Program
from bpfloader.errors import KernelError
from bpfloader.kernel import links as klinks
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import programs as kprogs
from bpfloader.obj.bpftypes import AttachType, MapType, PinKind, ProgType


def show_program(path: str) -> dict[str, Any]:
    """The program pinned at `path` (see the module's docstring)."""
    with Program.open(path, readonly=True) as prog:
        info = prog.info
        map_ids = kprogs.program_map_ids(prog.fd)
    return {
        "pin": path,
        "id": info.id,
        "type": _enum_name(ProgType, info.type),
        "name": info.name,
        "tag": info.tag,
        "verified_insns": info.verified_insns,
        "jited_size": info.jited_size,
        "xlated_size": info.xlated_size,
        "maps": [_map(map_id) for map_id in map_ids],
        "links": _links_running(info.id),
    }


def show_link(path: str) -> dict[str, Any]:
    """The link pinned at `path` (see the module's docstring)."""
    fd = open_pin(path, PinKind.LINK)
    try:
        info = klinks.link_info(fd)
    finally:
        os.close(fd)
    return {
        "pin": path,
        "id": info.id,
        "type": info.type_name,
        "prog_id": info.prog_id,
        "prog_name": _program_name(info.prog_id) if info.prog_id else None,
        "details": _details(info.details),
    }


def format_program(shown: dict[str, Any]) -> str:
    """bpftool's layout: the id, type and name first, then one line each of the rest."""
    maps = ", ".join(
        f"{m['id']}" + (f" ({m['name']}, {m['type']})" if m["name"] is not None else "")
        for m in shown["maps"]
    )
    if shown["links"] is None:
        links = "(not visible without CAP_SYS_ADMIN)"
    else:
        links = ", ".join(f"{k['id']} ({k['type']})" for k in shown["links"]) or "none"
    jited = "hidden" if shown["jited_size"] is None else f"{shown['jited_size']}B"
    return "\n".join(
        [
            f"{shown['id']}: {shown['type']}  name {shown['name']}  tag {shown['tag']}",
            f"    pinned {shown['pin']}",
            f"    xlated {shown['xlated_size']}B  jited {jited}  "
            f"verified_insns {shown['verified_insns']}",
            f"    maps {maps or 'none'}",
            f"    links {links}",
        ]
    )


def format_link(shown: dict[str, Any]) -> str:
    prog = f"prog {shown['prog_id']}" + (
        f" ({shown['prog_name']})" if shown["prog_name"] is not None else ""
    )
    details = "  ".join(f"{name} {value}" for name, value in shown["details"].items())
    lines = [f"{shown['id']}: {shown['type']}  {prog}", f"    pinned {shown['pin']}"]
    if details:
        lines.append(f"    {details}")
    return "\n".join(lines)


def _enum_name(kind: type[MapType] | type[ProgType] | type[AttachType], value: int) -> str:
    try:
        return kind(value).name.lower()
    except ValueError:
        return f"type {value}"


def _map(map_id: int) -> dict[str, Any]:
    entry: dict[str, Any] = {"id": map_id, "name": None, "type": None}
    with contextlib.suppress(KernelError):  # another map by id: CAP_SYS_ADMIN's
        fd = kmaps.map_fd_by_id(map_id)
        try:
            info = kmaps.map_info(fd)
        finally:
            os.close(fd)
        entry.update(name=info.name, type=_enum_name(MapType, info.type))
    return entry


def _links_running(prog_id: int) -> list[dict[str, Any]] | None:
    """The links in the kernel that run the program; None when this process may not list
    them (CAP_SYS_ADMIN)."""
    found = []
    try:
        for fd, info in klinks.every_link():
            fd.close()
            if info.prog_id == prog_id:
                found.append({"id": info.id, "type": info.type_name})
    except KernelError:
        return None
    return found


def _program_name(prog_id: int) -> str | None:
    try:
        fd = kprogs.program_fd_by_id(prog_id)
    except KernelError:
        return None
    try:
        return kprogs.program_info(fd).name
    finally:
        os.close(fd)


def _details(details: tuple[tuple[str, int], ...]) -> dict[str, int | str]:
    """The kernel's details of a link, with names for its numbers: an attach type's, a perf
    event's kind, and an interface's where this network namespace has it."""
    named: dict[str, int | str] = {}
    for name, value in details:
        if name == "attach_type":
            named[name] = _enum_name(AttachType, value)
        elif name == "perf_event_type":
            types = klinks.PERF_EVENT_TYPES
            named[name] = types[value] if value < len(types) else str(value)
        else:
            named[name] = value
        if name == "ifindex" and value:
            with contextlib.suppress(OSError):
                named["interface"] = socket.if_indextoname(value)
    return named
