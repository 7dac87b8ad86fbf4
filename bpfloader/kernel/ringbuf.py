"""A ring buffer map's memory mapped into this process, read as the kernel commits records.

Layout (kernel/bpf/ringbuf.c): page 0 holds the consumer position, which the reader writes;
page 1 the producer position; then the data pages, mapped twice in a row so that a record
that wraps around the end reads as one piece. Each record starts with an 8-byte header: its
length, with a busy bit while the producer still writes it and a discard bit if it gave up.

Memory ordering (kernel/ordering.py says how a barrier is had from Python): the producer
position is read, then a barrier (acquire), then the headers up to it, then a barrier (acquire:
a header that says committed is read before the record's bytes), then the records, then a
barrier (release: every byte is read before the space is given back), then the consumer
position is written, once per read().
"""

from __future__ import annotations

import mmap
import struct

from bpfloader.errors import KernelError
from bpfloader.kernel.ordering import Barrier, barrier

HEADER = struct.Struct("<II")  # length | busy | discard, page offset
BUSY = 1 << 31
DISCARD = 1 << 30
POSITION = struct.Struct("<Q")


class RingBufferMemory:
    """The consumer's view of a ring buffer of `size` bytes (a power of two); `fence` is the
    memory barrier (this machine's by default)."""

    def __init__(self, map_fd: int, size: int, fence: Barrier | None = None):
        self._fence = fence or barrier()
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
        """Every committed record from the consumer position on, in order; the position then
        moves past them so the producer can reuse their space. Stops at a busy record."""
        (consumer,) = POSITION.unpack_from(self._consumer, 0)  # only this reader writes it
        (producer,) = POSITION.unpack_from(self._producer, 0)
        if consumer >= producer:
            return []
        self._fence()  # acquire: the headers are read after the position that covers them
        spans = []
        position = consumer
        while position < producer:
            start = self._page + (position & self._mask)
            length, _ = HEADER.unpack_from(self._producer, start)
            if length & BUSY:
                break
            size = length & ~(BUSY | DISCARD)
            if not length & DISCARD:
                spans.append((start + HEADER.size, size))
            position += (HEADER.size + size + 7) & ~7
        if position == consumer:
            return []
        self._fence()  # acquire: each record is read after its header said it is committed
        records = [self._producer[begin : begin + size] for begin, size in spans]
        self._fence()  # release: every record is read before its space is given back
        POSITION.pack_into(self._consumer, 0, position)
        return records

    def close(self) -> None:
        self._producer.close()
        self._consumer.close()
