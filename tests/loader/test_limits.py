"""Resource limits: the per-map memory ceiling (refused at plan time, by name, before any
syscall) and RLIMIT_MEMLOCK, which the loader raises only on kernels that charge BPF memory
to it (before 5.11).

The memlock tests run the real setrlimit in child processes started with a lowered limit
(prlimit); the running kernel (6.x) needs no raise, so the old-kernel branch is exercised by
telling the function the kernel is older here, and for real in the boot test's 5.10 guest.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest

from bpfloader.loader.limits import MapMemoryCeiling, map_memory, parse_size
from bpfloader.loader.plan import Planner, SourceObject
from bpfloader.obj.bpftypes import MapType
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.reader import read_object
from bpfloader.obj.spec import MapSpec, ObjectSpec
from tests.conftest import REPO, pins_in
from tests.loader.test_plan import env, nothing_pinned

MiB = 1 << 20
BIG = """
#include <bpf_helpers.h>
DEFINE_BPF_MAP(big, ARRAY, int, uint64_t, 131072); /* 131072 x (8 + 8) bytes: 2 MiB */
DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, touch)(void *ctx) {
    int key = 0;
    uint64_t *v = bpf_big_lookup_elem(&key);
    if (v) *v += 1;
    return 0;
}
LICENSE("GPL");
"""
HUGE = BIG.replace("131072);", "0xffffffff);")


SAMPLE = MapSpec(
    name="m",
    type=MapType.ARRAY,
    key_size=4,
    value_size=4,
    max_entries=1,
    flags=0,
    owner=Ownership(0, 0, 0o600),
)


def spec_of(map_type: MapType, key: int, value: int, entries: int) -> MapSpec:
    return replace(SAMPLE, type=map_type, key_size=key, value_size=value, max_entries=entries)


@pytest.fixture(scope="module")
def big_object(compile_bpf) -> ObjectSpec:
    return read_object(compile_bpf(BIG, "big.o").read_bytes(), "/etc/bpf/big.o")


@pytest.mark.parametrize(
    ("map_type", "key", "value", "entries", "expected"),
    [
        (MapType.ARRAY, 4, 8, 1000, 1000 * (8 + 8)),  # sizes rounded up to 8
        (MapType.HASH, 6, 13, 10, 10 * (8 + 16)),
        (MapType.PERCPU_ARRAY, 4, 8, 100, 100 * (8 + 8 * 3)),  # a value per possible CPU (3)
        (MapType.LRU_PERCPU_HASH, 8, 4, 10, 10 * (8 + 8 * 3)),
        (MapType.RINGBUF, 0, 0, 1 << 24, 1 << 24),  # max_entries is the ring's bytes
        (MapType.ARENA, 0, 0, 100, 100 * 4096),  # max_entries counts pages
        (MapType.SK_STORAGE, 4, 64, 0, 0),  # one value per socket, made on use
    ],
)
def test_map_memory(map_type, key, value, entries, expected):
    assert map_memory(spec_of(map_type, key, value, entries), possible_cpus=3) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("4096", 4096),
        ("512K", 512 << 10),
        ("2G", 2 << 30),
        ("1GiB", 1 << 30),
        ("64mb", 64 * MiB),
        ("25%", 250),
        ("100%", 1000),
        ("0.5%", 5),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text, physical_memory=1000) == expected


@pytest.mark.parametrize("text", ["", "12X", "-1", "101%", "1.5G", "M"])
def test_parse_size_refuses(text):
    with pytest.raises(ValueError):
        parse_size(text, physical_memory=1000)


def plan_with(spec: ObjectSpec, limit: int):
    planner = Planner(env(), "/sys/fs/bpf", nothing_pinned, map_ceiling=MapMemoryCeiling(limit, 2))
    return planner.plan(SourceObject(spec.path, ""), spec)


def test_a_map_above_the_ceiling_fails_its_object_at_plan_time(big_object):
    plan = plan_with(big_object, MiB)
    assert plan.error is not None
    assert str(plan.error) == (
        "/etc/bpf/big.o: maps: map 'big': max_entries 131072 of key_size 4 and value_size 8 "
        "need at least 2.0 MiB, above the map memory ceiling of 1.0 MiB (--max-map-memory)"
    )
    assert plan_with(big_object, 2 * MiB).error is None  # exactly at the ceiling: allowed
    assert plan_with(big_object, 0).error is None  # 0: no ceiling


def test_the_template_of_a_map_of_maps_counts_too(big_object):
    outer = replace(
        SAMPLE, name="outer", type=MapType.ARRAY_OF_MAPS, inner=replace(big_object.maps[0])
    )
    plan = plan_with(replace(big_object, maps=(outer,)), MiB)
    assert plan.error is not None and "map 'big': max_entries 131072 of" in str(plan.error)


# -- kernel: the CLI ---------------------------------------------------------------------------


@pytest.mark.kernel
def test_the_ceiling_refuses_by_name_and_the_rest_loads(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    shutil.copy(compile_bpf(BIG, "big.o"), source_dir)
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, "--max-map-memory", "1M")
    assert run.returncode == 0, run.stderr
    errors = [line for line in run.stderr.splitlines() if "err" in line.split(":")[1]]
    assert errors == [
        f"bpfloader: err: {source_dir}/big.o: maps: map 'big': max_entries 131072 of key_size 4 "
        "and value_size 8 need at least 2.0 MiB, above the map memory ceiling of 1.0 MiB "
        "(--max-map-memory)"
    ], run.stderr
    assert pins_in(bpffs) == {
        "map_myschedtp_cpu_pid_map",
        "prog_myschedtp_tracepoint_sched_sched_switch",
    }
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, "--max-map-memory", "2M")
    assert run.returncode == 0 and "map_big_big" in " ".join(pins_in(bpffs)), run.stderr


@pytest.mark.kernel
def test_the_default_ceiling_refuses_four_billion_entries(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    shutil.copy(compile_bpf(HUGE, "huge.o"), source_dir)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    assert (
        "map 'big': max_entries 4294967295 of key_size 4 and value_size 8 need at least "
        "64.0 GiB, above the map memory ceiling of" in run.stderr
    )
    assert pins_in(bpffs) == set()


# -- memlock -----------------------------------------------------------------------------------

RAISE = """
import resource, sys
from bpfloader.loader.limits import raise_memlock_if_needed
class Print:
    def emit(self, event):
        print(event.message_id.name, event.priority.name, event.message)
raise_memlock_if_needed(tuple(map(int, sys.argv[1].split("."))), Print())
print("limit", *resource.getrlimit(resource.RLIMIT_MEMLOCK))
"""
INF = str(2**64 - 1)


def run_raise(kernel: str, limit: str, *, user: int | None = None) -> list[str]:
    def drop() -> None:
        if user is not None:
            os.setgid(user)
            os.setuid(user)

    done = subprocess.run(
        ["prlimit", f"--memlock={limit}", "--", sys.executable, "-c", RAISE, kernel],
        capture_output=True,
        text=True,
        cwd=REPO,
        preexec_fn=drop,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return done.stdout.splitlines()


def test_from_5_11_the_loader_leaves_memlock_alone():
    assert run_raise("5.11.0", "65536:65536") == ["limit 65536 65536"]


@pytest.mark.parametrize("user", [None, 65534])
def test_without_the_right_to_lift_it_the_loader_goes_as_far_as_it_may_and_warns(user):
    """Lifting the hard limit needs CAP_SYS_RESOURCE, which this machine's root lacks (as
    does any other uid); the boot test's 5.10 guest, where root has it, proves the lift."""
    lines = run_raise("4.19.0", "65536:1048576", user=user)
    assert lines == [
        "MEMLOCK_LOW WARNING kernel 4.19.0 charges BPF maps and programs to RLIMIT_MEMLOCK, "
        "and it could be raised only to 1.0 MiB (setrlimit(RLIMIT_MEMLOCK) failed: EPERM "
        "(Operation not permitted)): maps and programs beyond it fail with EPERM "
        "(run with LimitMEMLOCK=infinity)",
        "limit 1048576 1048576",
    ]


@pytest.mark.kernel
def test_this_kernel_loads_with_memlock_at_zero(compile_bpf, source_dir, bpffs, state_dir):
    """Measured, not assumed: memcg accounting makes RLIMIT_MEMLOCK irrelevant here."""
    shutil.copy(compile_bpf(BIG, "big.o"), source_dir)
    done = subprocess.run(
        [
            *("prlimit", "--memlock=0:0", "--", sys.executable, "-m", "bpfloader", "load"),
            *("--dir", str(source_dir), "--pin-root", str(bpffs), "--state-dir", str(state_dir)),
            *("--log-target", "console"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "RLIMIT_MEMLOCK" not in done.stderr
    assert pins_in(bpffs) == {"map_big_big", "prog_big_tracepoint_sched_sched_switch"}
