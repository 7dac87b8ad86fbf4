"""Attach targets written as one string, for operators (`bpfloader attach PIN TARGET`).

TARGETS is the syntax: one row per line of `bpfloader attach --help`, each with the kinds it
parses (the text before the first colon) and the function that parses the rest and attaches.
The help text (TARGET_SYNTAX) and the dispatch are both made from it."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from bpfloader.client import cgroups, netdev, tracing
from bpfloader.client.attachment import AttachableProgram, Attachment
from bpfloader.errors import AttachError

# (program, kind, what follows "kind:", the whole target for errors) -> the attachment
Attacher = Callable[[AttachableProgram, str, str, str], Attachment]


class TargetSyntax(NamedTuple):
    kinds: tuple[str, ...]
    syntax: str  # as the help shows it
    description: str  # the help's second column: an example, or what the syntax leaves unsaid
    attach: Attacher


def attach(prog: AttachableProgram, target: str) -> Attachment:
    kind, _, spec = target.partition(":")
    if kind in UNNAMED:
        raise AttachError(UNNAMED[kind])
    row = _BY_KIND.get(kind)
    if row is None:
        raise AttachError(f"{target!r}: unknown kind of target; expected one of\n{TARGET_SYNTAX}")
    return row.attach(prog, kind, spec, target)


def _tracepoint(prog: AttachableProgram, kind: str, spec: str, target: str) -> Attachment:
    category, _, name = spec.partition(":")
    if not category or not name:
        raise AttachError(
            f"{target!r}: expected tracepoint:CATEGORY:NAME, such as tracepoint:sched:sched_switch"
            " (the tracepoints are the directories CATEGORY/NAME of /sys/kernel/tracing/events)"
        )
    return tracing.attach_tracepoint(prog, category, name)


def _raw_tracepoint(prog: AttachableProgram, kind: str, spec: str, target: str) -> Attachment:
    if not spec:
        raise AttachError(f"{target!r}: expected raw_tracepoint:NAME (raw_tracepoint:sched_switch)")
    return tracing.attach_raw_tracepoint(prog, spec)


def _tracing(prog: AttachableProgram, kind: str, spec: str, target: str) -> Attachment:
    if spec:
        raise AttachError(
            f"{target!r}: a {kind} program attaches where it was loaded for: write '{kind}'"
        )
    return tracing.attach_tracing(prog, kind)


def _kprobe(prog: AttachableProgram, kind: str, spec: str, target: str) -> Attachment:
    function, offset = _with_offset(spec, target)
    return tracing.attach_kprobe(prog, function, offset, retprobe=kind == "kretprobe")


def _uprobe(prog: AttachableProgram, kind: str, spec: str, target: str) -> Attachment:
    binary, _, where = spec.rpartition(":")
    if not binary or not where:
        raise AttachError(f"{target!r}: expected {kind}:BINARY:SYMBOL or {kind}:BINARY:0xOFFSET")
    symbol, offset = _with_offset(where, target)
    if symbol.startswith("0x"):
        symbol, offset = "", _number(symbol, target)
    return tracing.attach_uprobe(prog, binary, symbol or None, offset, retprobe=kind == "uretprobe")


def _perf_event(prog: AttachableProgram, kind: str, spec: str, target: str) -> Attachment:
    frequency = _number(spec, target) if spec else tracing.DEFAULT_FREQUENCY
    return tracing.attach_perf_event(prog, frequency)


def _cgroup(prog: AttachableProgram, kind: str, spec: str, target: str) -> Attachment:
    path, _, attach_type = spec.rpartition(":")
    if attach_type not in cgroups.ATTACH_TYPES:  # a colon of the path, not a type
        path, attach_type = spec, ""
    return cgroups.attach_cgroup(prog, path, attach_type or None)


def _xdp(prog: AttachableProgram, kind: str, spec: str, target: str) -> Attachment:
    interface, _, mode = spec.partition(":")
    return netdev.attach_xdp(prog, interface, mode or "generic")


def _tc(prog: AttachableProgram, kind: str, spec: str, target: str) -> Attachment:
    """A tcx link where the kernel has them (6.6+) for a SCHED_CLS program and no priority
    given; else a filter in the clsact qdisc, as Program.attach_tc makes it."""
    interface, _, rest = spec.partition(":")
    direction, _, priority = rest.partition(":")
    attached = netdev.attach_tcx(prog, interface, direction) if not priority else None
    if attached is not None:
        return attached
    return netdev.attach_tc(
        prog, interface, direction, _number(priority, target) if priority else None
    )


def _with_offset(text: str, target: str) -> tuple[str, int]:
    name, plus, offset = text.partition("+")
    if not name:
        raise AttachError(f"{target!r}: nothing to attach to")
    return name, _number(offset, target) if plus else 0


def _number(text: str, target: str) -> int:
    try:
        return int(text, 0)
    except ValueError as e:
        raise AttachError(f"{target!r}: {text!r} is not a number") from e


TARGETS = (
    TargetSyntax(
        ("tracepoint",), "tracepoint:CATEGORY:NAME", "tracepoint:sched:sched_switch", _tracepoint
    ),
    TargetSyntax(
        ("kprobe", "kretprobe"), "kprobe:FUNCTION[+OFFSET]", "kretprobe:FUNCTION", _kprobe
    ),
    TargetSyntax(
        ("uprobe",),
        "uprobe:BINARY:SYMBOL[+OFFSET]",
        "uprobe:/bin/bash:readline, uprobe:BINARY:0xOFFSET",
        _uprobe,
    ),
    TargetSyntax(("uretprobe",), "uretprobe:BINARY:SYMBOL", "(likewise)", _uprobe),
    TargetSyntax(
        ("raw_tracepoint",), "raw_tracepoint:NAME", "raw_tracepoint:sched_switch", _raw_tracepoint
    ),
    TargetSyntax(
        tuple(tracing.TRACING_KINDS),
        "fentry|fexit|fmod_ret|tp_btf|lsm",
        "where the program was loaded for (its section's target)",
        _tracing,
    ),
    TargetSyntax(
        ("perf_event",),
        "perf_event[:HZ]",
        f"the cpu-clock of every online CPU (default {tracing.DEFAULT_FREQUENCY} Hz)",
        _perf_event,
    ),
    TargetSyntax(
        ("cgroup",),
        "cgroup:DIR[:TYPE]",
        "a cgroup v2 directory; TYPE ingress|egress for cgroupskb,\n"
        "found for the others (connect4, sockops, sysctl, ...)",
        _cgroup,
    ),
    TargetSyntax(("xdp",), "xdp:INTERFACE[:generic|driver]", "(generic by default)", _xdp),
    TargetSyntax(
        ("tc",),
        "tc:INTERFACE:ingress|egress[:PRIORITY]",
        "a tcx link (6.6+; a clsact filter before,\nor where a PRIORITY is given)",
        _tc,
    ),
)
# Kinds that no target string can name, and what to do instead.
UNNAMED = {
    "socket": "a socket filter attaches to a socket of its own process: use Program.attach_socket"
}
_BY_KIND = {kind: row for row in TARGETS for kind in row.kinds}
_SYNTAX_WIDTH = 33  # the help's first column, between a two-space indent and a space


def _help_lines(row: TargetSyntax) -> list[str]:
    first, *more = row.description.split("\n")
    indent = " " * (2 + _SYNTAX_WIDTH + 1)
    return [f"  {row.syntax:<{_SYNTAX_WIDTH}} {first}".rstrip(), *(indent + m for m in more)]


TARGET_SYNTAX = "\n".join(line for row in TARGETS for line in _help_lines(row))
