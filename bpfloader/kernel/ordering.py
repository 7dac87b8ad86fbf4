"""The memory ordering the event consumers need against the kernel's producers, from Python.

A ring buffer (kernel/bpf/ringbuf.c) and a perf ring (kernel/events/ring_buffer.c) are shared
memory that the kernel writes on another CPU while this process reads. The kernel publishes
with release semantics: a record's bytes are written before the position that covers them
(ringbuf: `smp_store_release` of producer_pos, and of a record's header when its busy bit is
cleared; perf: `smp_wmb()` before data_head), and it reuses space only past the position the
reader gives back (`smp_load_acquire` of consumer_pos; perf's data_tail). The reader must pair
them, as libbpf's consumers and the contract quoted in tools/include/linux/ring_buffer.h do:
load the producer's position (and a record's header) with acquire semantics before loading
what it covers, and store its own position with release semantics after loading all of it
(perf_event.h: `smp_rmb()` after reading data_head, `smp_mb()` before writing data_tail).

Python has no atomics: every load and store of those words is a plain one, made by C code
(struct.unpack_from, mmap slicing) that the interpreter calls through function pointers, so
no compiler can move one across another. What the processor may do decides the rest:

- x86-64 and i686 keep loads in order with loads and with later stores, and stores in order
  with stores (TSO): a plain load is already an acquire and a plain store a release. Nothing
  needs to run: `barrier()` does nothing there.
- arm64, riscv64 and armv7 may reorder loads: a real barrier must run between the position's
  load and the loads it covers, and between those and the position's store. It is
  membarrier(2) MEMBARRIER_CMD_GLOBAL_EXPEDITED, once this process registered for it
  (MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, Linux 4.16): its contract is that every running
  registered thread, the caller among them, passes through a state where all its memory
  accesses to user-space addresses match program order between entry to and return from the
  call, which is a full barrier for the caller (the kernel runs smp_mb(), `dmb ish` on arm64,
  on entry and on exit). MEMBARRIER_CMD_PRIVATE_EXPEDITED would not do: it returns at once,
  with no barrier, in a process of one thread. One call costs a syscall; the consumers make
  at most three per read() that finds records, none for one that finds nothing.
"""

from __future__ import annotations

import os

from bpfloader.errors import KernelError
from bpfloader.kernel.syscall import membarrier

MEMBARRIER_CMD_GLOBAL_EXPEDITED = 1 << 1
MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED = 1 << 2
# Machines whose loads and stores keep the order acquire and release need (TSO).
ORDERED_MACHINES = frozenset({"x86_64", "i686"})


class Barrier:
    """A full memory barrier for `machine` when called: nothing where the machine orders
    loads and stores as acquire and release need, membarrier(2) where it does not."""

    def __init__(self, machine: str):
        self.machine = machine
        self.needed = machine not in ORDERED_MACHINES
        if self.needed:
            try:
                membarrier(MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, "membarrier (register)")
            except KernelError as e:
                raise e.explained(
                    f"membarrier(2) refused ({e.strerror}): reading a ring on {machine} needs"
                    " a memory barrier, which it gives (Linux 4.16 and later; a seccomp filter"
                    " must allow it)"
                ) from e

    def __call__(self) -> None:
        if self.needed:
            membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED, "membarrier")


_made: dict[int, Barrier] = {}  # by pid: a forked child registers for itself


def barrier() -> Barrier:
    """This machine's barrier, made (and registered for) once per process."""
    made = _made.get(os.getpid())
    if made is None:
        made = _made[os.getpid()] = Barrier(os.uname().machine)
    return made
