"""What other processes import to use the pins: maps typed by their BTF (or by the caller),
ring buffer and perf event array consumers, pinned programs and their attachments (pinnable
as links). Importing it needs neither root nor pyroute2 (only attaching to a network
interface imports pyroute2).

    from bpfloader.client import BpfMap, Program

    with BpfMap.open_named("myschedtp", "cpu_pid_map") as m:  # /sys/fs/bpf/map_myschedtp_...
        print(m[0])                 # keys and values typed by the map's BTF
    with BpfMap.open("/sys/fs/bpf/map_myschedtp_cpu_pid_map", key="i", value="I",
                     readonly=True) as m:   # a group member: types given, read-only
        print(dict(m.items()))
    with Program.open_named("myschedtp", "tracepoint/sched/sched_switch") as prog:
        attachment = prog.attach_tracepoint("sched", "sched_switch")

Errors are LoaderErrors (bpfloader.errors), each one line naming the pin: KernelError and
PinOpenError are OSErrors with the kernel's errno (a refused pin says what its owner, group
and mode allow you), MapError a ValueError (a key or value that does not fit the map),
MapTypeError a TypeError (one of a Python type the map does not take), PinError a pin of
another kind, AttachError a target a program cannot go to.
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bpfloader.client.attachment import Attachment, detach_pinned
    from bpfloader.client.maps import BPF_ANY, BPF_EXIST, BPF_NOEXIST, BpfMap
    from bpfloader.client.perfbuf import PerfBuffer
    from bpfloader.client.programs import Program, ProgramInfo, TestRun
    from bpfloader.client.ready import wait_for_loaded
    from bpfloader.client.ringbuf import RingBuffer

# Imported on first use: a process that needs one of these (the loader's command line, a
# consumer waiting for the loaded marker) does not pay for all the others.
_HOMES = {
    "Attachment": "attachment",
    "detach_pinned": "attachment",
    "BPF_ANY": "maps",
    "BPF_EXIST": "maps",
    "BPF_NOEXIST": "maps",
    "BpfMap": "maps",
    "PerfBuffer": "perfbuf",
    "Program": "programs",
    "ProgramInfo": "programs",
    "wait_for_loaded": "ready",
    "RingBuffer": "ringbuf",
    "TestRun": "programs",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'bpfloader.client' has no attribute {name!r}")
    return getattr(import_module(f"bpfloader.client.{home}"), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])


__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "Attachment",
    "BpfMap",
    "PerfBuffer",
    "Program",
    "ProgramInfo",
    "RingBuffer",
    "TestRun",
    "detach_pinned",
    "wait_for_loaded",
]
