"""Tracepoint attachment through perf events: tracefs id, perf_event_open, SET_BPF, ENABLE."""

from __future__ import annotations

import ctypes
import os

from bpfloader.errors import KernelError, LoaderError
from bpfloader.kernel.attrs import PerfEventAttr
from bpfloader.kernel.syscall import ioctl, mount, perf_event_open

PERF_TYPE_TRACEPOINT = 2
PERF_FLAG_FD_CLOEXEC = 1 << 3
PERF_EVENT_IOC_ENABLE = 0x2400
PERF_EVENT_IOC_DISABLE = 0x2401
PERF_EVENT_IOC_SET_BPF = 0x40042408
TRACEFS_MOUNTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


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
            raise LoaderError(f"invalid tracepoint name {category}/{name}")
    path = os.path.join(tracefs_root(), "events", category, name, "id")
    try:
        with open(path) as f:
            return int(f.read())
    except FileNotFoundError:
        raise LoaderError(f"no tracepoint {category}:{name} (no {path})") from None


def attach_tracepoint(prog_fd: int, category: str, name: str) -> int:
    """Run `prog_fd` on every hit of the tracepoint; returns the perf event fd that holds it."""
    attr = PerfEventAttr(
        type=PERF_TYPE_TRACEPOINT,
        size=ctypes.sizeof(PerfEventAttr),
        config=tracepoint_id(category, name),
        sample_period=1,
        wakeup_events=1,
    )
    # The program runs on the tracepoint whichever CPU fires it; one event (cpu 0) carries it.
    fd = perf_event_open(attr, -1, 0, -1, PERF_FLAG_FD_CLOEXEC)
    try:
        ioctl(fd, PERF_EVENT_IOC_SET_BPF, prog_fd, "PERF_EVENT_IOC_SET_BPF")
        ioctl(fd, PERF_EVENT_IOC_ENABLE, 0, "PERF_EVENT_IOC_ENABLE")
    except KernelError:
        os.close(fd)
        raise
    return fd
