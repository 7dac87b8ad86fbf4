"""An independent client, bpftool (libbpf), recognizes every pin `bpfloader load` makes: the
kind, type, name, sizes and flags it expects, the kernel ids the loader printed, and the maps
each program was relocated against."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bpfloader.client import BpfMap
from tests.conftest import pins_in

pytestmark = pytest.mark.kernel

# pin -> (type, kernel name, key size, value size, max_entries, flags); written from the C.
MAPS: dict[str, tuple[str, str, int, int, int, int]] = {
    "map_myschedtp_cpu_pid_map": ("array", "cpu_pid_map", 4, 4, 1024, 0),
    "map_k_owners_m_plain": ("array", "m_plain", 4, 4, 4, 0),
    "map_k_owners_m_ro": ("hash", "m_ro", 4, 8, 16, 0),
    "map_k_owners_m_gwo": ("array", "m_gwo", 4, 2, 8, 0),
    "map_k_owners_m_gro": ("percpu_array", "m_gro", 4, 8, 2, 0),
    "map_k_owners_m_grw": ("hash", "m_grw", 8, 4, 32, 0),
    "map_k_owners_m_ugm": ("lru_hash", "m_ugm", 4, 4, 64, 0),
    "k_sub/deeper/map_k_owners_m_sub": ("hash", "m_sub", 4, 1, 10, 1),  # BPF_F_NO_PREALLOC
    "map__shared_counts": ("array", "shared_counts", 4, 8, 8, 0),
    "map_k_shared_a_own_map": ("array", "own_map", 4, 4, 1, 0),
    "map_k_shared_b_own_map": ("array", "own_map", 4, 4, 1, 0),
    "net_shared/map_k_location_loc_here": ("array", "loc_here", 4, 4, 2, 0),
    "k_elsewhere/map_k_location_loc_there": ("array", "loc_there", 4, 4, 3, 0),
}

# pin -> (kernel name, the map pins it uses); every program here is a tracepoint program.
PROGRAMS: dict[str, tuple[str, set[str]]] = {
    "prog_myschedtp_tracepoint_sched_sched_switch": (
        "tp_sched_switch",
        {"map_myschedtp_cpu_pid_map"},
    ),
    "prog_execsnoop_tracepoint_syscalls_sys_enter_execve": ("bpf_prog", set()),
    "prog_k_owners_tracepoint_sched_sched_switch": (
        "tp_owned_switch",
        {
            "map_k_owners_m_plain",
            "map_k_owners_m_ro",
            "map_k_owners_m_gwo",
            "map_k_owners_m_gro",
            "map_k_owners_m_grw",
            "map_k_owners_m_ugm",
        },
    ),
    "k_progsub/prog_k_owners_tracepoint_sched_sched_wakeup": (
        "tp_owned_wakeup",
        {"k_sub/deeper/map_k_owners_m_sub"},
    ),
    "prog_k_shared_a_tracepoint_sched_sched_switch": (
        "tp_shared_a",
        {"map__shared_counts", "map_k_shared_a_own_map"},
    ),
    "prog_k_shared_b_tracepoint_sched_sched_switch": (
        "tp_shared_b",
        {"map__shared_counts", "map_k_shared_b_own_map"},
    ),
    "net_shared/prog_k_location_tracepoint_sched_sched_switch": (
        "loc_prog",
        {"net_shared/map_k_location_loc_here", "k_elsewhere/map_k_location_loc_there"},
    ),
}


def bpftool(*args: str | Path) -> Any:
    done = subprocess.run(
        ["bpftool", "-j", *map(str, args)], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, f"bpftool {args}: {done.stdout} {done.stderr}"
    return json.loads(done.stdout)


def printed_ids(stdout: str, root: Path) -> dict[str, int]:
    """pin -> kernel id, from the loader's summary table (a shared map appears twice)."""
    ids: dict[str, int] = {}
    for line in stdout.splitlines():
        if line.startswith(f"{root}/"):
            path, _action, _owner, _mode, kernel_id, *_ = line.split()
            rel = os.path.relpath(path, root)
            assert ids.setdefault(rel, int(kernel_id)) == int(kernel_id), line
    return ids


@pytest.fixture
def everything(compile_bpf, source_dir, bpffs, bpfloader_cli) -> tuple[Path, dict[str, int]]:
    for source in ("myschedtp.c", "execsnoop.c", "k_owners.c"):
        shutil.copy(compile_bpf(source), source_dir)
    shutil.copy(compile_bpf("k_shared.c", "k_shared_a.o"), source_dir)
    shutil.copy(compile_bpf("k_shared.c", "k_shared_b.o", "-DPROG_FN=tp_shared_b"), source_dir)
    (source_dir / "net_shared").mkdir()
    shutil.copy(compile_bpf("k_location.c"), source_dir / "net_shared")
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    ids = printed_ids(run.stdout, bpffs)
    assert set(ids) == pins_in(bpffs) == set(MAPS) | set(PROGRAMS)
    return bpffs, ids


def test_bpftool_recognizes_every_map_pin(everything):
    root, ids = everything
    for rel, (map_type, name, key, value, entries, flags) in MAPS.items():
        shown = bpftool("map", "show", "pinned", root / rel)
        assert {
            k: shown[k]
            for k in ("id", "type", "name", "bytes_key", "bytes_value", "max_entries", "flags")
        } == {
            "id": ids[rel],
            "type": map_type,
            "name": name,
            "bytes_key": key,
            "bytes_value": value,
            "max_entries": entries,
            "flags": flags,
        }, rel
    assert len({ids[rel] for rel in MAPS}) == len(MAPS)


def test_bpftool_recognizes_every_program_pin(everything):
    root, ids = everything
    for rel, (name, uses) in PROGRAMS.items():
        shown = bpftool("prog", "show", "pinned", root / rel)
        assert (shown["id"], shown["type"], shown["name"], shown["gpl_compatible"]) == (
            ids[rel],
            "tracepoint",
            name,
            True,
        ), rel
        assert sorted(shown.get("map_ids", [])) == sorted(ids[m] for m in uses), rel
    assert len({ids[rel] for rel in PROGRAMS}) == len(PROGRAMS)


def test_bpftool_tells_maps_from_programs(everything):
    root, _ = everything
    for kind, rel in (
        ("map", "prog_myschedtp_tracepoint_sched_sched_switch"),
        ("prog", "map_myschedtp_cpu_pid_map"),
    ):
        done = subprocess.run(
            ["bpftool", "-j", kind, "show", "pinned", str(root / rel)],
            capture_output=True,
            text=True,
        )
        assert done.returncode != 0
        assert "incorrect object type" in json.loads(done.stdout)["error"]


def test_bpftool_reads_what_the_client_wrote(everything):
    root, _ = everything
    with BpfMap.open(str(root / "map_k_owners_m_plain"), key="i", value="I") as m:
        m[2] = 0xDEADBEEF
    with BpfMap.open(str(root / "map__shared_counts"), key="i", value="Q") as m:
        m[7] = 0x0102030405060708
    plain = bpftool("map", "dump", "pinned", root / "map_k_owners_m_plain")
    assert [(e["key"], e["value"]) for e in plain] == [
        (["0x00", "0x00", "0x00", "0x00"], ["0x00", "0x00", "0x00", "0x00"]),
        (["0x01", "0x00", "0x00", "0x00"], ["0x00", "0x00", "0x00", "0x00"]),
        (["0x02", "0x00", "0x00", "0x00"], ["0xef", "0xbe", "0xad", "0xde"]),
        (["0x03", "0x00", "0x00", "0x00"], ["0x00", "0x00", "0x00", "0x00"]),
    ]
    shared = bpftool(
        "map", "lookup", "pinned", root / "map__shared_counts", "key", "7", "0", "0", "0"
    )
    assert shared["value"] == ["0x08", "0x07", "0x06", "0x05", "0x04", "0x03", "0x02", "0x01"]
