"""BpfMap against the kernel: every common map type loaded by the real loader, used as a Python
mapping; batch reads; per-CPU values filled by a program on each CPU; iteration while keys
vanish under it; a group member reading through the client; and the errors for bad input."""

from __future__ import annotations

import errno
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_access import as_user

from bpfloader.client import BPF_EXIST, BPF_NOEXIST, BpfMap, Program, RingBuffer
from bpfloader.client import maps as client_maps
from bpfloader.errors import KernelError, MapError, PinError
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import system

pytestmark = pytest.mark.kernel

READER_UID, READER_GID = 1234, 4321  # client_maps.c: its maps are root:4321 0640
PREFIX = "map_client_maps_"
COUNT_PROG = "prog_client_maps_tracepoint_syscalls_sys_enter_getpgid"


@pytest.fixture
def pins(compile_bpf, source_dir, bpffs, bpfloader_cli) -> Path:
    shutil.copy(compile_bpf("client_maps.c"), source_dir)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    return bpffs


def open_map(pins: Path, name: str, key: Any = "I", value: Any = "Q", **kw: Any) -> BpfMap:
    return BpfMap.open(str(pins / (PREFIX + name)), key=key, value=value, **kw)


def test_sizes_are_checked_against_the_kernel(pins):
    path = str(pins / (PREFIX + "hash"))
    with pytest.raises(MapError) as e:
        BpfMap.open(path, key="I", value="I")
    assert str(e.value) == f"{path}: value type is 4 bytes, the map's value is 8 bytes"
    with pytest.raises(MapError, match="key type is 8 bytes, the map's key is 4 bytes"):
        BpfMap.open(path, key="Q", value="Q")
    with (
        open_map(pins, "hash", key=None, value=None) as raw,
        pytest.raises(MapError, match="2 bytes given where the map's key is 4"),
    ):
        raw[b"ab"] = bytes(8)


def test_hash_is_a_mutable_mapping(pins):
    with open_map(pins, "hash") as m:
        assert len(m) == 0 and list(m) == []
        m[1] = 10
        m.update({2: 20, 3: 30})
        m.update([(4, 40)])
        assert m[1] == 10 and m.get(2) == 20 and m.get(99) is None and m.get(99, -1) == -1
        assert 3 in m and 99 not in m
        assert sorted(m) == [1, 2, 3, 4] and len(m) == 4
        assert dict(m.items()) == {1: 10, 2: 20, 3: 30, 4: 40}
        assert sorted(m.values()) == [10, 20, 30, 40]
        with pytest.raises(KeyError):
            m[99]
        del m[4]
        with pytest.raises(KeyError):
            del m[4]
        assert m.pop(3) == 30 and m.setdefault(5, 50) == 50

        with pytest.raises(KernelError) as exists:
            m.update({1: 11, 6: 60}, flags=BPF_NOEXIST)
        assert exists.value.errno == errno.EEXIST and m[1] == 10
        with pytest.raises(KernelError) as missing:
            m.update_elem(7, 70, BPF_EXIST)
        assert missing.value.errno == errno.ENOENT and 7 not in m
        m.update({1: 11}, flags=BPF_EXIST)
        m.update_elem(7, 70, BPF_NOEXIST)
        assert dict(m.items()) == {1: 11, 2: 20, 5: 50, 7: 70}

        m.clear()
        assert len(m) == 0


def test_array_has_every_index_and_clears_to_zero(pins):
    with open_map(pins, "array") as m:
        assert m.info.max_entries == 16 and len(m) == 16 and set(m) == set(range(16))
        m[3] = 33
        m[15] = 150
        assert m[3] == 33 and m[0] == 0
        with pytest.raises(KeyError):
            m[16]
        with pytest.raises(KernelError) as exists:
            m.update_elem(4, 1, BPF_NOEXIST)
        assert exists.value.errno == errno.EEXIST
        with pytest.raises(MapError, match="elements of a ARRAY map cannot be deleted"):
            del m[3]
        m.clear()
        assert set(m.values()) == {0}


def test_per_cpu_values_one_per_possible_cpu(pins):
    cpus = len(system.possible_cpus())
    with open_map(pins, "percpu_hash", value="I") as m:  # 4-byte values, 8-byte kernel slots
        assert m.cpus == cpus
        m[1] = list(range(100, 100 + cpus))
        assert m[1] == list(range(100, 100 + cpus))
        assert m.lookup_batch() == [(1, list(range(100, 100 + cpus)))]
        with pytest.raises(MapError, match=f"a list of {cpus} values"):
            m[2] = 5
        with pytest.raises(MapError, match=f"a list of {cpus} values"):
            m[2] = [5] * (cpus + 1)


@pytest.fixture
def affinity() -> Iterator[None]:
    before = os.sched_getaffinity(0)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def getpgid_calls(count: int) -> None:
    for i in range(count):
        with pytest.raises(ProcessLookupError):
            os.getpgid(2_000_000_000 + i)


def test_per_cpu_counts_written_by_a_program_on_each_cpu(pins, affinity):
    """The program counts this process's getpgid calls in its CPU's own slot: running on
    CPU c for 10 + c calls shows up as exactly that, in slot c."""
    online = system.online_cpus()
    with open_map(pins, "watched_tgid", value="I") as watched:
        watched[0] = os.getpid()
    with (
        open_map(pins, "percpu_calls") as calls,
        Program.open(str(pins / COUNT_PROG)) as prog,
        prog.attach_tracepoint("syscalls", "sys_enter_getpgid"),
    ):
        for cpu in online:
            os.sched_setaffinity(0, {cpu})
            getpgid_calls(10 + cpu)
        counts = calls[0]
    assert len(counts) == len(system.possible_cpus())
    assert [counts[cpu] for cpu in online] == [10 + cpu for cpu in online]


def test_lru_hash_evicts_the_oldest(pins):
    with open_map(pins, "lru", value="I") as m:
        for key in range(200):
            m[key] = key
        assert len(m) <= 64
        assert all(m[key] == key for key in range(190, 200))
        assert 0 not in m


def test_lpm_trie_finds_the_longest_prefix(pins):
    def key(prefix_len: int, address: str) -> tuple[int, bytes]:
        return prefix_len, socket.inet_aton(address)

    with open_map(pins, "lpm", key="I4s", value="I") as m:
        m[key(8, "10.0.0.0")] = 1
        m[key(16, "10.1.0.0")] = 2
        assert m[key(32, "10.1.2.3")] == 2
        assert m[key(32, "10.200.0.1")] == 1
        assert key(32, "11.0.0.1") not in m
        expected = {key(8, "10.0.0.0"): 1, key(16, "10.1.0.0"): 2}
        assert dict(m.items()) == expected
        assert dict(m.lookup_batch()) == expected  # no batch op for tries: key by key
        del m[key(16, "10.1.0.0")]
        assert m[key(32, "10.1.2.3")] == 1


def test_lookup_batch_reads_in_batches(pins, monkeypatch):
    with open_map(pins, "hash") as m:
        m.update({k: k * 3 for k in range(1000)})
        with monkeypatch.context() as patched:

            def no_walk(*args: object) -> None:
                raise AssertionError("lookup_batch walked the map key by key")

            patched.setattr(kmaps, "next_key", no_walk)
            assert sorted(m.lookup_batch(batch_size=64)) == [(k, k * 3) for k in range(1000)]
    with open_map(pins, "array") as array:
        array[7] = 70
        assert array.lookup_batch(batch_size=5) == [(k, 70 if k == 7 else 0) for k in range(16)]


def test_iteration_survives_deleting_the_current_key(pins, monkeypatch):
    """Deleting the key the walk stands on makes the kernel restart from the first key: the
    iteration still gives every key exactly once."""
    steps = 0
    next_key = kmaps.next_key

    def counted(*args: Any) -> bytes | None:
        nonlocal steps
        steps += 1
        return next_key(*args)

    monkeypatch.setattr(kmaps, "next_key", counted)
    with open_map(pins, "hash") as m:
        m.update({k: k for k in range(100)})
        seen = []
        for key in m:
            seen.append(key)
            if len(seen) % 10 == 0:
                del m[key]
        assert sorted(seen) == list(range(100))
        assert steps > 101  # the walk did restart
        assert len(m) == 90


def test_iteration_gives_up_on_a_map_that_keeps_restarting(pins, monkeypatch):
    first, second = (1).to_bytes(4, "little"), (2).to_bytes(4, "little")

    def restarting(fd: int, key: bytes | None, size: int) -> bytes:
        return second if key == first else first  # every step from `second` restarts

    monkeypatch.setattr(kmaps, "next_key", restarting)
    with (
        open_map(pins, "hash") as m,
        pytest.raises(MapError, match="changed under iteration: restarted 101 times"),
    ):
        list(m)
    assert client_maps.MAX_RESTARTS == 100


def test_group_member_reads_through_the_client_read_only(pins):
    with open_map(pins, "hash") as m:
        m.update({1: 100, 2: 200})

    def work() -> dict[str, Any]:
        with BpfMap.open(PREFIX + "hash", key="I", value="Q", readonly=True) as m:
            items = sorted(m.items())
            batch = sorted(m.lookup_batch())
            try:
                m[3] = 300
                write = "ok"
            except KernelError as e:
                write = errno.errorcode[e.errno]
        try:
            BpfMap.open(PREFIX + "hash", key="I", value="Q")
            read_write = "ok"
        except KernelError as e:
            read_write = errno.errorcode[e.errno]
        return {"items": items, "batch": batch, "write": write, "read_write": read_write}

    result = as_user(pins, READER_UID, READER_GID, [], work)
    assert result == {
        "items": [[1, 100], [2, 200]],
        "batch": [[1, 100], [2, 200]],
        "write": "EPERM",
        "read_write": "EACCES",
    }


def test_bad_paths_and_kinds_are_named(pins, tmp_path):
    regular = tmp_path / "plain-file"
    regular.write_text("x")
    (pins / "subdir").mkdir()
    cases = {
        str(regular): "not a pin: it is not on a bpf filesystem",
        str(pins / "no_such_pin"): "no such pin",
        str(pins / "subdir"): "a directory, not a pin",
        str(pins / COUNT_PROG): "a program pin, not a map pin",
    }
    for path, reason in cases.items():
        with pytest.raises(PinError) as e:
            BpfMap.open(path)
        assert str(e.value) == f"{path}: {reason}"
    map_path = str(pins / (PREFIX + "hash"))
    with pytest.raises(PinError, match="a map pin, not a program pin"):
        Program.open(map_path)
    with pytest.raises(MapError, match="not a RINGBUF map"):
        RingBuffer.open(map_path)
