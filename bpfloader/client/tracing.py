"""Attaching tracing programs: to perf events (tracepoints, kprobes, uprobes, the cpu clock),
to raw tracepoints, and to the kernel function or hook they were loaded for (fentry, fexit,
fmod_ret, tp_btf, lsm).

Each perf event gets the program through a BPF perf link where the kernel has them (5.15+),
which can be pinned; older kernels get PERF_EVENT_IOC_SET_BPF, held by this process's perf fd.
The others are BPF links (BPF_RAW_TRACEPOINT_OPEN, BPF_LINK_CREATE).
"""

from __future__ import annotations

import os

from bpfloader.client.attachment import AttachableProgram, Attachment
from bpfloader.client.symbols import function_offset
from bpfloader.kernel import links as klinks
from bpfloader.kernel import perf as kperf
from bpfloader.kernel import system
from bpfloader.obj.bpftypes import AttachType, ProgType

DEFAULT_FREQUENCY = 99  # Hz: off the beat of the timer tick, as profilers do
NO_PERF_LINK = (
    "this kernel has no BPF perf links (5.15+): PERF_EVENT_IOC_SET_BPF attached it, and only"
    " this process's perf event holds it"
)


def attach_tracepoint(prog: AttachableProgram, category: str, name: str) -> Attachment:
    prog.require_type("a tracepoint", ProgType.TRACEPOINT)
    event = kperf.open_tracepoint(category, name)
    return _on_events(prog, [("", event)], f"tracepoint:{category}:{name}")


def attach_kprobe(
    prog: AttachableProgram, function: str, offset: int = 0, *, retprobe: bool = False
) -> Attachment:
    kind = "kretprobe" if retprobe else "kprobe"
    prog.require_type(f"a {kind}", ProgType.KPROBE)
    event = kperf.open_probe("kprobe", function, offset, retprobe)
    where = f"{function}+{offset:#x}" if offset else function
    return _on_events(prog, [("", event)], f"{kind}:{where}")


def attach_uprobe(
    prog: AttachableProgram,
    binary: str,
    symbol: str | None = None,
    offset: int = 0,
    *,
    retprobe: bool = False,
    pid: int = -1,
) -> Attachment:
    kind = "uretprobe" if retprobe else "uprobe"
    prog.require_type(f"a {kind}", ProgType.KPROBE)
    path = os.path.realpath(binary)
    file_offset = offset + (function_offset(path, symbol) if symbol else 0)
    event = kperf.open_probe("uprobe", path, file_offset, retprobe, pid)
    where = symbol or f"{offset:#x}"
    if symbol and offset:
        where += f"+{offset:#x}"
    return _on_events(prog, [("", event)], f"{kind}:{path}:{where}")


# A program loaded for one kernel function or hook (its attach_btf_id) is attached by naming
# its kind: the attach type BPF_LINK_CREATE is given, and the program type it takes.
TRACING_KINDS: dict[str, tuple[ProgType, AttachType]] = {
    "fentry": (ProgType.TRACING, AttachType.TRACE_FENTRY),
    "fexit": (ProgType.TRACING, AttachType.TRACE_FEXIT),
    "fmod_ret": (ProgType.TRACING, AttachType.MODIFY_RETURN),
    "tp_btf": (ProgType.TRACING, AttachType.TRACE_RAW_TP),
    "lsm": (ProgType.LSM, AttachType.LSM_MAC),
}


def attach_tracing(prog: AttachableProgram, kind: str) -> Attachment:
    """Attach a program to the function or hook it was loaded for."""
    prog_type, attach_type = TRACING_KINDS[kind]
    prog.require_type(f"{kind} (the target it was loaded for)", prog_type)
    return Attachment(kind, links=[("", klinks.create_link(prog.fd, 0, attach_type))])


def attach_raw_tracepoint(prog: AttachableProgram, name: str) -> Attachment:
    prog.require_type("a raw tracepoint", ProgType.RAW_TRACEPOINT, ProgType.RAW_TRACEPOINT_WRITABLE)
    link = klinks.open_raw_tracepoint(name, prog.fd)
    return Attachment(f"raw_tracepoint:{name}", links=[("", link)])


def attach_perf_event(prog: AttachableProgram, frequency: int = DEFAULT_FREQUENCY) -> Attachment:
    """One cpu-clock event per online CPU: the attachment holds a link for each."""
    prog.require_type("a perf event", ProgType.PERF_EVENT)
    events: list[tuple[str, int]] = []
    try:
        for cpu in system.online_cpus():
            events.append((f"cpu{cpu}", kperf.open_cpu_clock(cpu, frequency)))
    except BaseException:
        for _, fd in events:
            os.close(fd)
        raise
    return _on_events(prog, events, f"perf_event:{frequency}")


def _on_events(prog: AttachableProgram, events: list[tuple[str, int]], target: str) -> Attachment:
    """Put the program on each event; the attachment owns the events and their links."""
    links: list[tuple[str, int]] = []
    try:
        for name, event in events:
            link = kperf.link_program(event, prog.fd)
            if link is not None:
                links.append((name, link))
    except BaseException:
        for fd in [fd for _, fd in links] + [fd for _, fd in events]:
            os.close(fd)
        raise
    return Attachment(target, links=links, owned=[fd for _, fd in events], unpinnable=NO_PERF_LINK)
