"""RingBuffer: the consumer of a BPF_MAP_TYPE_RINGBUF map (bpf_ringbuf_output/_submit)."""

from __future__ import annotations

import os

from bpfloader.client.pinned import open_pin
from bpfloader.client.streams import EventStream
from bpfloader.errors import LoaderError, MapError
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel.ringbuf import RingBufferMemory
from bpfloader.obj.bpftypes import MapType, PinKind


class RingBuffer(EventStream):
    """Records in the order the programs committed them, each the bytes a program wrote.

    The consumer position lives in the map and is shared: one consumer per ring buffer. It
    is advanced as records are read, which needs the pin opened read-write."""

    def __init__(self, map_fd: int, path: str | None = None):
        super().__init__(map_fd, path)
        try:
            info = kmaps.map_info(map_fd)
            if info.type != MapType.RINGBUF:
                raise MapError(f"not a RINGBUF map (map type {info.type})")
            self._memory = RingBufferMemory(map_fd, info.max_entries)
            self._watch(map_fd)
        except BaseException as e:
            self._epoll.close()
            os.close(map_fd)
            if isinstance(e, LoaderError):
                e.where(file=path)
                raise
            raise

    @classmethod
    def open(cls, path: str) -> RingBuffer:
        """Consume the ring buffer pinned at `path` (opened read-write: reading moves the
        consumer position, which lives in the map)."""
        return cls(open_pin(path, PinKind.MAP), path)

    def read(self) -> list[bytes]:
        """The records committed since the last read, in order; [] if none."""
        return self._memory.read()

    def close(self) -> None:
        """Unmap the ring and close the map's fd. Twice does nothing."""
        if self.fd >= 0:
            self._memory.close()
        super().close()

    def __enter__(self) -> RingBuffer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
