"""Program: a pinned program, and attaching it to a tracepoint."""

from __future__ import annotations

import os

from bpfloader.kernel import perf
from bpfloader.kernel import pins as kpins
from bpfloader.kernel import programs as kprogs


class TracepointAttachment:
    """The program runs on the tracepoint while this is open; close() detaches it."""

    def __init__(self, perf_fd: int, tracepoint: str):
        self.perf_fd = perf_fd
        self.tracepoint = tracepoint

    def close(self) -> None:
        if self.perf_fd >= 0:
            os.close(self.perf_fd)
            self.perf_fd = -1

    def __enter__(self) -> TracepointAttachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Program:
    def __init__(self, fd: int):
        self.fd = fd
        try:
            self.info = kprogs.program_info(fd)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def open(cls, path: str, *, readonly: bool = False) -> Program:
        """Open a pinned program. A member of the pin's group (mode 0440) needs
        `readonly=True`; a read-only program fd attaches all the same."""
        return cls(kpins.open_pinned(path, readonly=readonly))

    def attach_tracepoint(self, category: str, name: str) -> TracepointAttachment:
        return TracepointAttachment(
            perf.attach_tracepoint(self.fd, category, name), f"{category}:{name}"
        )

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Program:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
