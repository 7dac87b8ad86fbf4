"""PerfBuffer: the consumer of a BPF_MAP_TYPE_PERF_EVENT_ARRAY map (bpf_perf_event_output)."""

from __future__ import annotations

import struct

from bpfloader.client.pinned import open_pin
from bpfloader.client.streams import EventStream
from bpfloader.errors import LoaderError, MapError
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import system
from bpfloader.kernel.perfbuf import PerfRing
from bpfloader.obj.bpftypes import MapType, PinKind

CPU_KEY = struct.Struct("=I")


class PerfBuffer(EventStream):
    """Samples from one ring per online CPU, which this consumer puts in the map (slot =
    CPU) for `bpf_perf_event_output(ctx, &map, BPF_F_CURRENT_CPU, ...)` to write to; close()
    takes them out. CPUs at or past the map's max_entries get no ring.

    Each sample is the bytes the program wrote followed by up to 7 bytes of padding (perf
    keeps records 8-byte aligned): decode a prefix. Samples of one CPU come in order, those
    of different CPUs in no defined order. `lost` counts samples dropped on full rings."""

    def __init__(self, map_fd: int, path: str | None = None, pages_per_cpu: int = 8):
        super().__init__(map_fd, path)
        self.lost = 0
        self._rings: list[PerfRing] = []
        try:
            info = kmaps.map_info(map_fd)
            if info.type != MapType.PERF_EVENT_ARRAY:
                raise MapError(f"not a PERF_EVENT_ARRAY map (map type {info.type})")
            for cpu in system.online_cpus():
                if cpu < info.max_entries:
                    ring = PerfRing(cpu, pages_per_cpu)
                    self._rings.append(ring)
                    kmaps.update(map_fd, CPU_KEY.pack(cpu), CPU_KEY.pack(ring.fd))
                    self._watch(ring.fd)
        except BaseException as e:
            self.close()
            if isinstance(e, LoaderError):
                e.where(file=path)
                raise
            raise

    @classmethod
    def open(cls, path: str, pages_per_cpu: int = 8) -> PerfBuffer:
        """Consume the perf event array pinned at `path`: a ring of `pages_per_cpu` pages (a
        power of two) for each online CPU, put in the map (which takes a read-write pin)."""
        return cls(open_pin(path, PinKind.MAP), path, pages_per_cpu)

    def read(self) -> list[bytes]:
        """The samples of every CPU's ring since the last read (CPU by CPU); `lost` grows
        by the samples the kernel dropped meanwhile."""
        samples = []
        for ring in self._rings:
            found, lost = ring.read()
            samples.extend(found)
            self.lost += lost
        return samples

    def close(self) -> None:
        """Take the rings out of the map, unmap them, close the fds. Twice does nothing."""
        if self.fd >= 0:
            for ring in self._rings:
                kmaps.delete(self.fd, CPU_KEY.pack(ring.cpu))
                ring.close()
            self._rings = []
        super().close()

    def __enter__(self) -> PerfBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
