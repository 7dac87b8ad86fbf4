"""One CPU's ring of a perf event array: the BPF output event of that CPU, mmapped.

Layout (include/uapi/linux/perf_event.h): a metadata page (struct perf_event_mmap_page) whose
data_head the kernel advances and whose data_tail the reader writes, then a power of two of
data pages holding records that wrap around its end. A record is a perf_event_header (type,
misc, size) and its body: PERF_RECORD_SAMPLE carries a u32 size and the raw bytes the program
wrote, padded by the kernel to keep records 8-byte aligned; PERF_RECORD_LOST counts samples
dropped because the ring was full.

Memory ordering, as perf_event.h asks (kernel/ordering.py says how a barrier is had from
Python): data_head is read, then a barrier (its `smp_rmb()`: acquire), then the records, then
a barrier (its `smp_mb()`: release), then data_tail is written.
"""

from __future__ import annotations

import mmap
import os
import struct

from bpfloader.errors import KernelError
from bpfloader.kernel import perf
from bpfloader.kernel.ordering import Barrier, barrier

RECORD_HEADER = struct.Struct("<IHH")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
DATA_HEAD, DATA_TAIL, DATA_OFFSET, DATA_SIZE = 1024, 1032, 1040, 1048
PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9


class PerfRing:
    """CPU `cpu`'s BPF output event, its ring of `pages` data pages mapped; `fence` is the
    memory barrier (this machine's by default)."""

    def __init__(self, cpu: int, pages: int, fence: Barrier | None = None):
        self._fence = fence or barrier()
        if pages < 1 or pages & (pages - 1):
            raise ValueError(f"a perf ring holds a power of two of pages, not {pages}")
        self.cpu = cpu
        self.fd = perf.open_bpf_output(cpu)
        page = mmap.PAGESIZE
        try:
            self._memory = mmap.mmap(
                self.fd, (pages + 1) * page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE
            )
        except OSError as e:
            os.close(self.fd)
            raise KernelError("mmap (perf ring)", e.errno or 0, f"cpu {cpu}") from e
        try:
            perf.enable(self.fd)
        except KernelError:
            self.close()
            raise
        (offset,) = U64.unpack_from(self._memory, DATA_OFFSET)
        (size,) = U64.unpack_from(self._memory, DATA_SIZE)
        # Kernels before 4.1 leave these 0: the data then starts at the second page.
        self._data_offset: int = offset if size else page
        self._data_size: int = size or pages * page

    def read(self) -> tuple[list[bytes], int]:
        """The samples written since the last read, and how many were lost meanwhile."""
        (head,) = U64.unpack_from(self._memory, DATA_HEAD)
        (tail,) = U64.unpack_from(self._memory, DATA_TAIL)  # only this reader writes it
        if tail >= head:
            return [], 0
        self._fence()  # acquire (perf_event.h's smp_rmb): the records after data_head
        samples, lost = [], 0
        while tail < head:
            kind, _, size = RECORD_HEADER.unpack(self._copy(tail, RECORD_HEADER.size))
            body = self._copy(tail + RECORD_HEADER.size, size - RECORD_HEADER.size)
            if kind == PERF_RECORD_SAMPLE:
                (raw_size,) = U32.unpack_from(body, 0)
                samples.append(body[U32.size : U32.size + raw_size])
            elif kind == PERF_RECORD_LOST:
                lost += U64.unpack_from(body, 8)[0]  # after the event id
            tail += size
        self._fence()  # release (perf_event.h's smp_mb): the records before data_tail
        U64.pack_into(self._memory, DATA_TAIL, tail)
        return samples, lost

    def _copy(self, position: int, length: int) -> bytes:
        start = position % self._data_size
        first = min(length, self._data_size - start)
        begin = self._data_offset + start
        data = self._memory[begin : begin + first]
        if first < length:
            data += self._memory[self._data_offset : self._data_offset + length - first]
        return data

    def close(self) -> None:
        self._memory.close()
        os.close(self.fd)
