"""A ring buffer map's memory mapped into this process, read as the kernel commits records.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position, which the reader writes;
page 1 the producer position; then the data pages, mapped twice in a row so that a record
that wraps around the end reads as one piece. Each record starts with an 8-byte header: its
length, with a busy bit while the producer still writes it and a discard bit if it gave up.
"""

from __future__ import annotations

import mmap
import struct

from bpfloader.errors import KernelError

HEADER = struct.Struct("<II")  # length | busy | discard, page offset
BUSY = 1 << 31
DISCARD = 1 << 30
POSITION = struct.Struct("<Q")


class RingBufferMemory:
    def __init__(self, map_fd: int, size: int):
        self._page = mmap.PAGESIZE
        self._mask = size - 1
        try:
            self._consumer = mmap.mmap(
                map_fd, self._page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        except OSError as e:
            raise KernelError("mmap (ring buffer consumer page)", e.errno or 0) from e
        try:
            self._producer = mmap.mmap(
                map_fd, self._page + 2 * size, mmap.MAP_SHARED, mmap.PROT_READ, offset=self._page
            )
        except OSError as e:
            self._consumer.close()
            raise KernelError("mmap (ring buffer data pages)", e.errno or 0) from e

    def read(self) -> list[bytes]:
        """Every committed record from the consumer position on, in order; the position
        moves past each one so the producer can reuse its space. Stops at a busy record."""
        (consumer,) = POSITION.unpack_from(self._consumer, 0)
        (producer,) = POSITION.unpack_from(self._producer, 0)
        records = []
        while consumer < producer:
            start = self._page + (consumer & self._mask)
            length, _ = HEADER.unpack_from(self._producer, start)
            if length & BUSY:
                break
            size = length & ~(BUSY | DISCARD)
            if not length & DISCARD:
                begin = start + HEADER.size
                records.append(self._producer[begin : begin + size])
            consumer += (HEADER.size + size + 7) & ~7
            POSITION.pack_into(self._consumer, 0, consumer)
        return records

    def close(self) -> None:
        self._producer.close()
        self._consumer.close()
