"""Perf events that programs attach to: tracepoints, kprobes and uprobes (through their PMUs),
software events per CPU; and the two ways to put a program on one (a BPF link, or the older
PERF_EVENT_IOC_SET_BPF)."""

from __future__ import annotations

import ctypes
import os

from bpfloader.errors import AttachError, KernelError
from bpfloader.kernel import links
from bpfloader.kernel.attrs import PerfEventAttr
from bpfloader.kernel.syscall import UNSUPPORTED_ERRNOS, ioctl, mount, perf_event_open
from bpfloader.obj.bpftypes import AttachType

PERF_TYPE_SOFTWARE = 1
PERF_TYPE_TRACEPOINT = 2
PERF_COUNT_SW_CPU_CLOCK = 0
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_FLAG_FD_CLOEXEC = 1 << 3
ATTR_DISABLED = 1 << 0  # perf_event_attr bitfield: start disabled
ATTR_FREQ = 1 << 10  # perf_event_attr bitfield: sample_freq (Hz) instead of sample_period
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_SET_BPF = 0x40042408
TRACEFS_MOUNTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
PMU_DIR = "/sys/bus/event_source/devices"


def tracefs_root() -> str:
    """Where tracefs is; mounts it on /sys/kernel/tracing when no one has."""
    for root in TRACEFS_MOUNTS:
        if os.path.isdir(os.path.join(root, "events")):
            return root
    mount("tracefs", TRACEFS_MOUNTS[0], "tracefs")
    return TRACEFS_MOUNTS[0]


def tracepoint_id(category: str, name: str) -> int:
    for part in (category, name):
        if not part or "/" in part or part.startswith("."):
            raise AttachError(
                f"invalid tracepoint {category!r}, {name!r}: expected a CATEGORY and a NAME, "
                "such as 'sched' and 'sched_switch' (a directory CATEGORY/NAME of the tracefs' "
                "events)"
            )
    path = os.path.join(tracefs_root(), "events", category, name, "id")
    try:
        with open(path) as f:
            return int(f.read())
    except FileNotFoundError as e:
        raise AttachError(f"no tracepoint {category}:{name} (no {path})") from e


def _open(attr: PerfEventAttr, pid: int = -1, cpu: int = 0) -> int:
    """perf_event_open. A tracing event opened for one CPU (pid -1, cpu 0) still runs its
    program on every CPU: the program hangs on the traced point, not on the event."""
    attr.size = ctypes.sizeof(PerfEventAttr)
    return perf_event_open(attr, pid, cpu, -1, PERF_FLAG_FD_CLOEXEC)


def open_tracepoint(category: str, name: str) -> int:
    attr = PerfEventAttr(
        type=PERF_TYPE_TRACEPOINT,
        config=tracepoint_id(category, name),
        sample_period=1,
        wakeup_events=1,
        flags=ATTR_DISABLED,
    )
    return _open(attr)


def pmu_type(pmu: str) -> int | None:
    """The perf type number of a dynamic PMU ("kprobe", "uprobe"), or None without it."""
    try:
        with open(os.path.join(PMU_DIR, pmu, "type")) as f:
            return int(f.read())
    except FileNotFoundError:
        return None


def _retprobe_bit(pmu: str) -> int:
    """Which config bit makes a return probe, as the PMU describes it ("config:0")."""
    with open(os.path.join(PMU_DIR, pmu, "format", "retprobe")) as f:
        field, _, bit = f.read().strip().partition(":")
    if field != "config" or not (bit.isascii() and bit.isdigit()):
        raise AttachError(f"cannot read {PMU_DIR}/{pmu}/format/retprobe: {field}:{bit}")
    return int(bit)


def open_probe(pmu: str, target: str, offset: int, retprobe: bool, pid: int = -1) -> int:
    """A kprobe (target: a kernel function) or uprobe (target: a binary's path, offset in the
    file) event through the PMU of that name; `pid` limits a uprobe to one process."""
    kind = pmu_type(pmu)
    if kind is None:
        raise AttachError(f"{pmu}s not supported by this kernel (no {PMU_DIR}/{pmu})")
    target_buf = ctypes.create_string_buffer(os.fsencode(target))
    attr = PerfEventAttr(
        type=kind,
        config=(1 << _retprobe_bit(pmu)) if retprobe else 0,
        config1=ctypes.addressof(target_buf),
        config2=offset,
        sample_period=1,
        wakeup_events=1,
        flags=ATTR_DISABLED,
    )
    return _open(attr, pid, -1 if pid > 0 else 0)


def open_cpu_clock(cpu: int, frequency: int) -> int:
    """The software cpu-clock event of one CPU, sampling `frequency` times a second."""
    attr = PerfEventAttr(
        type=PERF_TYPE_SOFTWARE,
        config=PERF_COUNT_SW_CPU_CLOCK,
        sample_period=frequency,  # sample_freq shares this field
        flags=ATTR_DISABLED | ATTR_FREQ,
    )
    return _open(attr, -1, cpu)


def open_bpf_output(cpu: int) -> int:
    """The event a perf event array's programs write samples into, for one CPU."""
    attr = PerfEventAttr(
        type=PERF_TYPE_SOFTWARE,
        config=PERF_COUNT_SW_BPF_OUTPUT,
        sample_type=PERF_SAMPLE_RAW,
        sample_period=1,
        wakeup_events=1,
        flags=ATTR_DISABLED,
    )
    return _open(attr, -1, cpu)


def enable(perf_fd: int) -> None:
    ioctl(perf_fd, PERF_EVENT_IOC_ENABLE, 0, "PERF_EVENT_IOC_ENABLE")


def link_program(perf_fd: int, prog_fd: int) -> int | None:
    """Put the program on the event through a BPF link (kernels 5.15+) and enable the event;
    the link fd, or None where the kernel has no perf links and PERF_EVENT_IOC_SET_BPF did it
    (then the perf fd alone holds the attachment)."""
    try:
        link = links.create_link(prog_fd, perf_fd, AttachType.PERF_EVENT)
    except KernelError as e:
        if e.errno not in UNSUPPORTED_ERRNOS:
            raise
        set_program(perf_fd, prog_fd)
        link = None
    enable(perf_fd)
    return link


def set_program(perf_fd: int, prog_fd: int) -> None:
    ioctl(perf_fd, PERF_EVENT_IOC_SET_BPF, prog_fd, "PERF_EVENT_IOC_SET_BPF")
