"""Attach targets written as one string, for operators (`bpfloader attach PIN TARGET`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bpfloader.client import cgroups, netdev, tracing
from bpfloader.client.attachment import Attachment
from bpfloader.client.syntax import TARGET_SYNTAX
from bpfloader.errors import AttachError

if TYPE_CHECKING:
    from bpfloader.client.programs import Program


def attach(prog: Program, target: str) -> Attachment:
    kind, _, spec = target.partition(":")
    if kind == "tracepoint":
        category, _, name = spec.partition(":")
        return tracing.attach_tracepoint(prog, category, name)
    if kind in ("kprobe", "kretprobe"):
        function, offset = _with_offset(spec, target)
        return tracing.attach_kprobe(prog, function, offset, retprobe=kind == "kretprobe")
    if kind in ("uprobe", "uretprobe"):
        binary, _, where = spec.rpartition(":")
        if not binary or not where:
            raise AttachError(
                f"{target!r}: expected {kind}:BINARY:SYMBOL or {kind}:BINARY:0xOFFSET"
            )
        symbol, offset = _with_offset(where, target)
        if symbol.startswith("0x"):
            symbol, offset = "", _number(symbol, target)
        return tracing.attach_uprobe(
            prog, binary, symbol or None, offset, retprobe=kind == "uretprobe"
        )
    if kind == "perf_event":
        frequency = _number(spec, target) if spec else tracing.DEFAULT_FREQUENCY
        return tracing.attach_perf_event(prog, frequency)
    if kind == "cgroup":
        path, _, attach_type = spec.rpartition(":")
        if attach_type not in cgroups.ATTACH_TYPES:
            path, attach_type = spec, ""
        return cgroups.attach_cgroup(prog, path, attach_type or None)
    if kind == "xdp":
        interface, _, mode = spec.partition(":")
        return netdev.attach_xdp(prog, interface, mode or "generic")
    if kind == "tc":
        interface, _, rest = spec.partition(":")
        direction, _, priority = rest.partition(":")
        return netdev.attach_tc(
            prog, interface, direction, _number(priority, target) if priority else None
        )
    if kind == "socket":
        raise AttachError(
            "a socket filter attaches to a socket of its own process: use Program.attach_socket"
        )
    raise AttachError(f"{target!r}: unknown kind of target; expected one of\n{TARGET_SYNTAX}")


def _with_offset(text: str, target: str) -> tuple[str, int]:
    name, plus, offset = text.partition("+")
    if not name:
        raise AttachError(f"{target!r}: nothing to attach to")
    return name, _number(offset, target) if plus else 0


def _number(text: str, target: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise AttachError(f"{target!r}: {text!r} is not a number") from None
