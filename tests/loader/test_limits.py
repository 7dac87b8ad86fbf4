"""Resource limits: the per-map memory ceiling and the run's (refused at plan time, by name,
before any syscall) and RLIMIT_MEMLOCK, which the loader raises only on kernels that charge BPF
memory to it (before 5.11).

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

from bpfloader.loader.limits import MapMemoryCeiling, RunMapMemory, map_memory, parse_size
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


# -- the run's ceiling -------------------------------------------------------------------------


def test_the_object_that_takes_the_run_over_its_ceiling_fails_and_the_others_plan(big_object):
    """Three objects of a 2 MiB map each, a run ceiling of 5 MiB: the third fails, naming the
    total and the ceiling; a smaller one after it still fits, and what failed is not counted."""
    run = RunMapMemory(5 * MiB, possible_cpus=2)
    planner = Planner(env(), "/sys/fs/bpf", nothing_pinned, run_memory=run)
    small = replace(big_object.maps[0], max_entries=1024)  # 16 KiB
    objects = {
        "a": big_object.maps,
        "b": big_object.maps,
        "c": big_object.maps,
        "d": (small,),
    }
    plans = {
        name: planner.plan(
            SourceObject(f"/etc/bpf/{name}.o"),
            replace(big_object, path=f"/etc/bpf/{name}.o", maps=maps),
        )
        for name, maps in objects.items()
    }
    assert {name: plan.error is None for name, plan in plans.items()} == {
        "a": True,
        "b": True,
        "c": False,
        "d": True,
    }
    assert str(plans["c"].error) == (
        "/etc/bpf/c.o: maps: its maps need at least 2.0 MiB, which would take the run's maps to "
        "6.0 MiB, above the run's map memory ceiling of 5.0 MiB (--max-run-map-memory)"
    )
    assert run.total == 4 * MiB + 16 * 1024


def test_a_shared_map_counts_once_and_a_reused_one_counts(big_object):
    """Reused maps take their memory as new ones do: the run decides the same whatever pins an
    earlier run left. A map two objects share is one map."""
    shared = replace(big_object.maps[0], shared=True)
    for pinned in (nothing_pinned, lambda path: True):
        run = RunMapMemory(3 * MiB, possible_cpus=2)
        planner = Planner(env(), "/sys/fs/bpf", pinned, run_memory=run)
        errors = [
            planner.plan(
                SourceObject(f"/etc/bpf/{name}.o"),
                replace(big_object, path=f"/etc/bpf/{name}.o", maps=(shared,)),
            ).error
            for name in ("a", "b")
        ]
        assert errors == [None, None]
        assert run.total == 2 * MiB
        other = planner.plan(SourceObject("/etc/bpf/c.o"), replace(big_object, path="/etc/bpf/c.o"))
        assert other.error is not None and "take the run's maps to 4.0 MiB" in str(other.error)


def test_no_run_ceiling_with_0(big_object):
    run = RunMapMemory(0, possible_cpus=2)
    planner = Planner(env(), "/sys/fs/bpf", nothing_pinned, run_memory=run)
    for name in "abcdefgh":
        path = f"/etc/bpf/{name}.o"
        assert planner.plan(SourceObject(path), replace(big_object, path=path)).error is None
    assert run.total == 8 * 2 * MiB


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


@pytest.mark.kernel
def test_the_run_ceiling_fails_the_object_that_crosses_it_and_the_rest_loads(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    """Three objects whose 2 MiB maps each pass the per-map ceiling (3M): the third would take
    the run to 6 MiB, above its ceiling (5M). --dry-run says so."""
    for name in ("a.o", "b.o", "c.o"):
        shutil.copy(compile_bpf(BIG, "big.o"), source_dir / name)
    limits = ("--max-map-memory", "3M", "--max-run-map-memory", "5M")
    where = ("--dir", source_dir, "--pin-root", bpffs, *limits)
    refusal = (
        f"{source_dir}/c.o: maps: its maps need at least 2.0 MiB, which would take the run's maps "
        "to 6.0 MiB, above the run's map memory ceiling of 5.0 MiB (--max-run-map-memory)"
    )
    dry = bpfloader_cli("load", "--dry-run", *where)
    assert dry.returncode == 3, dry.stderr  # c.o would fail
    said = refusal.removeprefix(f"{source_dir}/c.o: ")  # the dry run names the object once
    assert dry.stdout.splitlines()[-1] == f"{source_dir}/c.o: FAIL: {said}", dry.stdout
    run = bpfloader_cli("load", *where)
    assert run.returncode == 0, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("bpfloader: err:")]
    assert errors == [f"bpfloader: err: {refusal}"], run.stderr
    assert pins_in(bpffs) == {
        f"{kind}_{name}_{what}"
        for name in ("a", "b")
        for kind, what in (("map", "big"), ("prog", "tracepoint_sched_sched_switch"))
    }
    assert bpfloader_cli("load", *where[:4], "--max-run-map-memory", "0").returncode == 0
    assert "map_c_big" in pins_in(bpffs)  # 0: no run ceiling


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
            *("--no-cache", "--log-target", "console"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "RLIMIT_MEMLOCK" not in done.stderr
    assert pins_in(bpffs) == {"map_big_big", "prog_big_tracepoint_sched_sched_switch"}
