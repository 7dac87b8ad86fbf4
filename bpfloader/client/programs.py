"""Program: a pinned program, what the kernel says about it, running it on given input, and
attaching it."""

from __future__ import annotations

import os
import socket

from bpfloader.client import cgroups, netdev, sockets, targets, tracing
from bpfloader.client.attachment import Attachment
from bpfloader.client.pinned import open_pin, program_pin_path
from bpfloader.errors import ENOTSUPP, AttachError, KernelError
from bpfloader.kernel import programs as kprogs
from bpfloader.kernel.programs import ProgramInfo, TestRun
from bpfloader.locations import DEFAULT_PIN_ROOT
from bpfloader.obj.bpftypes import PinKind, ProgType

__all__ = ["Program", "ProgramInfo", "TestRun"]


class Program:
    """A program opened from its pin: what the kernel says of it (`info`, a ProgramInfo: its
    ProgType, id, tag, name, verified instructions, translated and JIT sizes), running it on
    given input (test_run), and attaching it (each attach_* gives an Attachment, which
    detaches on close() unless pinned)."""

    def __init__(self, fd: int, path: str | None = None):
        """Take over `fd`, a program fd (closed here if this fails)."""
        self.fd = fd
        self.path = path
        try:
            self.info = kprogs.program_info(fd)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def open(cls, path: str, *, readonly: bool = False) -> Program:
        """Open a pinned program. A member of the pin's group (mode 0440) needs
        `readonly=True`; a read-only program fd attaches all the same."""
        return cls(open_pin(path, PinKind.PROGRAM, readonly=readonly), path)

    @classmethod
    def open_named(
        cls,
        obj: str,
        section: str,
        *,
        pin_root: str = DEFAULT_PIN_ROOT,
        subdir: str = "",
        readonly: bool = False,
    ) -> Program:
        """Open the program of section `section` of object `obj` where the loader pins it
        (README "Pin names"): `Program.open_named("myschedtp", "tracepoint/sched/sched_switch")`
        opens /sys/fs/bpf/prog_myschedtp_tracepoint_sched_sched_switch. `obj` is the object's
        FILENAME or its file's name (either format's rule); a `$variant` is dropped; a libbpf
        section that names nothing of its own takes the function after it (`socket/measure`
        for `SEC("socket") int measure`). `subdir` and the rest: as BpfMap.open_named."""
        path = program_pin_path(obj, section, pin_root=pin_root, subdir=subdir)
        return cls.open(path, readonly=readonly)

    @property
    def type_name(self) -> str:
        """The program type's name (TRACEPOINT, XDP, ...), or its number for one this
        package does not know."""
        kind = self.info.type
        return kind.name if isinstance(kind, ProgType) else f"type {kind}"

    def require_type(self, target: str, *allowed: ProgType) -> None:
        """AttachError unless this program is of one of the `allowed` types."""
        if self.info.type not in allowed:
            raise AttachError(
                f"a {self.type_name} program cannot attach to {target}, which takes"
                f" {' or '.join(t.name for t in allowed)} programs",
                file=self.path,
            )

    def test_run(self, data: bytes, repeat: int = 1, *, ctx: bytes | None = None) -> TestRun:
        """Run the program on the packet `data`, `repeat` times, without attaching it
        (BPF_PROG_TEST_RUN): its return value, the packet as it left it, the mean ns a run
        took, and the context as it left it when `ctx` was given (the first bytes of a
        struct __sk_buff or xdp_md). Nothing outside the program sees the packet: an XDP_TX
        is only a return value here. Repeated runs share one packet, each starting from the
        packet as the run before left it; `retval` is the last run's.

        Packet programs run so: socket filters, tc, cgroup skb, XDP, flow dissectors (the
        packet begins with an Ethernet header; a socket filter sees it from the IP header
        on, and the Ethernet header comes back zeroed). KernelError ENOTSUPP for a type the
        kernel cannot test-run (tracepoints, kprobes, perf events), EINVAL for input it
        refuses; ValueError for a repeat count out of 1..2**32-1."""
        try:
            return kprogs.test_run(self.fd, data, repeat=repeat, ctx=ctx)
        except KernelError as e:
            if e.errno != ENOTSUPP:
                raise
            raise KernelError(
                "BPF_PROG_TEST_RUN",
                e.errno,
                f"{self.type_name} programs cannot be test-run",
                file=self.path,
            ) from e

    # ---- attaching: each returns an Attachment; close() detaches, pin() keeps it ------------

    def attach(self, target: str) -> Attachment:
        """Attach by a target string: see bpfloader.client.targets.TARGET_SYNTAX."""
        return targets.attach(self, target)

    def attach_tracepoint(self, category: str, name: str) -> Attachment:
        """On tracepoint `category`:`name` (sched, sched_switch); a TRACEPOINT program."""
        return tracing.attach_tracepoint(self, category, name)

    def attach_kprobe(
        self, function: str, offset: int = 0, *, retprobe: bool = False
    ) -> Attachment:
        """On kernel function `function` plus `offset` (on its return: `retprobe`)."""
        return tracing.attach_kprobe(self, function, offset, retprobe=retprobe)

    def attach_uprobe(
        self,
        binary: str,
        symbol: str | None = None,
        offset: int = 0,
        *,
        retprobe: bool = False,
        pid: int = -1,
    ) -> Attachment:
        """On `symbol` (a function in the binary's symbol tables) plus `offset`, or on a
        file `offset` alone; every process running the binary, or only `pid`."""
        return tracing.attach_uprobe(self, binary, symbol, offset, retprobe=retprobe, pid=pid)

    def attach_perf_event(self, frequency: int = tracing.DEFAULT_FREQUENCY) -> Attachment:
        """On the software cpu-clock event of every online CPU, `frequency` times a second."""
        return tracing.attach_perf_event(self, frequency)

    def attach_cgroup(self, cgroup: str, attach_type: str | None = None) -> Attachment:
        """On a cgroup v2 directory; `attach_type` is one of cgroups.ATTACH_TYPES (needed for
        CGROUP_SKB programs: "ingress" or "egress"; the others find their own)."""
        return cgroups.attach_cgroup(self, cgroup, attach_type)

    def attach_socket(self, sock: socket.socket) -> Attachment:
        """As the filter of `sock`, one of this process's sockets (a SOCKET_FILTER program)."""
        return sockets.attach_socket(self, sock)

    def attach_xdp(self, interface: str, mode: str = "generic") -> Attachment:
        """On a network interface of this network namespace; `mode` "generic" or "driver"."""
        return netdev.attach_xdp(self, interface, mode)

    def attach_tc(
        self, interface: str, direction: str = "ingress", priority: int | None = None
    ) -> Attachment:
        """As a direct-action tc filter in the interface's clsact qdisc (made if missing)."""
        return netdev.attach_tc(self, interface, direction, priority)

    def close(self) -> None:
        """Close the program's fd (its pin and attachments stay). Twice does nothing."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Program:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
