"""The event consumers against the kernel: a program on sys_enter_getpgid writes a record per
call of this process to a ring buffer (discarding every third), one on sys_enter_getsid to a
perf event array; the consumers read exactly those records, in order, across wrap-arounds."""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bpfloader.client import BpfMap, PerfBuffer, Program, RingBuffer
from bpfloader.errors import MapError
from bpfloader.kernel import ordering, system

pytestmark = pytest.mark.kernel

RECORD = struct.Struct("=QII")  # client_events.c: struct record {value, tgid, cpu}
BASE = 1_800_000_000  # no such process (ESRCH at once); a multiple of 3, as the discard rule is
PROG = "prog_client_events_tracepoint_syscalls_sys_enter_"


@pytest.fixture
def pins(compile_bpf, source_dir, bpffs, bpfloader_cli) -> Path:
    shutil.copy(compile_bpf("client_events.c"), source_dir)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    with BpfMap.open(str(bpffs / "map_client_events_watched_tgid"), key="I", value="I") as m:
        m[0] = os.getpid()
    return bpffs


@pytest.fixture
def attached(pins) -> Iterator[Path]:
    with (
        Program.open(str(pins / (PROG + "getpgid"))) as ring_prog,
        Program.open(str(pins / (PROG + "getsid"))) as perf_prog,
        ring_prog.attach_tracepoint("syscalls", "sys_enter_getpgid"),
        perf_prog.attach_tracepoint("syscalls", "sys_enter_getsid"),
    ):
        yield pins


def call(syscall: Callable[[int], int], values: range) -> None:
    for value in values:
        with pytest.raises(ProcessLookupError):
            syscall(BASE + value)


def decode(record: bytes) -> int:
    value, tgid, cpu = RECORD.unpack_from(record)
    assert tgid == os.getpid() and cpu in system.online_cpus()
    return value - BASE


def test_ring_buffer_reads_exactly_the_submitted_records(attached):
    """16 KiB ring, 24 bytes a record (header included, discarded ones too): 5 rounds of 300
    calls wrap around it; each round is read before the next."""
    with RingBuffer.open(str(attached / "map_client_events_records")) as ring:
        assert ring.poll(timeout=0.01) == []
        seen: list[int] = []
        for start in range(0, 1500, 300):
            call(os.getpgid, range(start, start + 300))
            seen += [decode(r) for r in ring.poll(timeout=1)]
        assert seen == [v for v in range(1500) if v % 3]
        assert ring.read() == []


def test_ring_buffer_callback_and_iterator(attached):
    with RingBuffer.open(str(attached / "map_client_events_records")) as ring:
        call(os.getpgid, range(1, 5))
        got: list[int] = []
        assert ring.consume(lambda r: got.append(decode(r)), timeout=1) == 3
        assert got == [1, 2, 4]
        call(os.getpgid, range(5, 9))
        assert [decode(r) for r in ring.records(idle_timeout=0.05)] == [5, 7, 8]


def test_perf_buffer_reads_exactly_the_output_samples(attached):
    with PerfBuffer.open(str(attached / "map_client_events_samples")) as perf:
        with BpfMap.open(str(attached / "map_client_events_samples"), key="I", value="I") as m:
            assert m.info.max_entries == 64
        assert perf.poll(timeout=0.01) == []
        call(os.getsid, range(100))
        samples = []
        while len(samples) < 100 and (batch := perf.poll(timeout=1)):
            samples += batch
        # 16 bytes written, raw data padded to keep records 8-byte aligned (4 + 20 = 24).
        assert {len(s) for s in samples} == {20}
        assert sorted(decode(s) for s in samples) == list(range(100))
        assert perf.lost == 0


def test_perf_buffer_counts_lost_samples(attached, monkeypatch):
    """One page per CPU on one CPU: 2000 samples overflow it; the kernel reports the drop
    with the next sample that fits, and read + lost account for every one."""
    cpu = system.online_cpus()[0]
    monkeypatch.setattr(system, "online_cpus", lambda: [cpu])
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        with PerfBuffer.open(str(attached / "map_client_events_samples"), 1) as perf:
            call(os.getsid, range(2000))
            read = len(perf.read())
            call(os.getsid, range(2000, 2001))
            read += len(perf.poll(timeout=1))
            assert perf.lost > 0
            assert read + perf.lost == 2001
    finally:
        os.sched_setaffinity(0, before)


def test_consumers_refuse_other_map_types(attached):
    with pytest.raises(MapError, match="not a PERF_EVENT_ARRAY map"):
        PerfBuffer.open(str(attached / "map_client_events_records"))
    ring_path = str(attached / "map_client_events_records")
    with pytest.raises(MapError, match=r"a RINGBUF map has no keys: .*RingBuffer reads it"):
        BpfMap.open(ring_path)


class CountedBarrier(ordering.Barrier):
    """arm64's barrier (membarrier(2), which runs on this kernel as it would there), counted:
    the consumers read through it as they would on arm64."""

    def __init__(self) -> None:
        super().__init__("aarch64")
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        super().__call__()


def test_consumers_read_through_the_barrier_a_weakly_ordered_machine_needs(attached, monkeypatch):
    """With arm64's barrier: the same records, three barriers per read that finds some (after
    the producer position, after the headers, before the consumer position), none for a read
    that finds nothing; the perf ring, two (after data_head, before data_tail)."""
    fence = CountedBarrier()
    monkeypatch.setitem(ordering._made, os.getpid(), fence)
    with RingBuffer.open(str(attached / "map_client_events_records")) as ring:
        assert ring.read() == [] and fence.calls == 0
        call(os.getpgid, range(1, 31))
        records = ring.read()
        assert [decode(r) for r in records] == [v for v in range(1, 31) if v % 3]
        assert fence.calls == 3
    cpu = system.online_cpus()[0]
    monkeypatch.setattr(system, "online_cpus", lambda: [cpu])
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        with PerfBuffer.open(str(attached / "map_client_events_samples")) as perf:
            fence.calls = 0
            assert perf.read() == [] and fence.calls == 0
            call(os.getsid, range(10))
            assert sorted(decode(s) for s in perf.read()) == list(range(10))
            assert fence.calls == 2
    finally:
        os.sched_setaffinity(0, before)


def test_event_consumers_read_with_a_real_barrier_where_the_machine_needs_one():
    """On x86-64 loads and stores already order as acquire and release: no barrier runs. On
    arm64 membarrier(2) is the barrier: made here for "aarch64", it registers and runs on this
    kernel as it would there (the call is the same on every architecture)."""
    here = ordering.Barrier(os.uname().machine)
    assert here.needed is (os.uname().machine not in ("x86_64", "i686"))
    arm64 = ordering.Barrier("aarch64")
    assert arm64.needed
    arm64()  # MEMBARRIER_CMD_GLOBAL_EXPEDITED, registered for: no error
    assert ordering.barrier() is ordering.barrier()
