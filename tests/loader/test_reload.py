"""`bpfloader reload` on a private bpffs: an unchanged object is left alone (not one bpf(2)
call, proved with strace), a changed one gets its programs swapped in atomically under a
reader that keeps opening the pin, its maps and their contents kept; a removed object's pins
go and nothing else does; a map whose definition changed fails its object (exit 3) and leaves
the old one whole, unless --recreate-incompatible-maps; a reused map takes the owner and mode
now declared.

Objects are built from tests/bpf/r_swap.c in versions (-DVERSION=N changes only the programs'
code and their kernel names sw_vN / wk_vN) under the names the pins are made from.
"""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import shutil
import stat
import struct
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bpfloader.errors import KernelError
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import pins as kpins
from bpfloader.kernel import programs as kprogs
from tests.conftest import child_result, fork_child, pins_in
from tests.reload_support import (
    MYSCHEDTP,
    SWITCH,
    WAKEUP,
    ids_of,
    install,
    kernel_id,
    log_lines,
    map_info,
    map_items,
    map_put,
    pin_foreign_map,
    prog_info,
    status_json,
    summary,
    swap_pins,
    traced,
    where,
)

pytestmark = pytest.mark.kernel

ALPHA, BETA, GAMMA = swap_pins("alpha"), swap_pins("beta"), swap_pins("gamma")
A_VALUES, A_COUNTS = "map_alpha_values", "map_alpha_counts"
A_SWITCH, A_WAKEUP = f"prog_alpha_{SWITCH}", f"prog_alpha_{WAKEUP}"
RECREATE_HINT = " (--recreate-incompatible-maps replaces it, losing its contents)"


@pytest.fixture
def swap(compile_bpf):
    """swap(name, version, *flags): r_swap.c built as NAME.o."""

    def build(name: str, version: int, *flags: str) -> Path:
        return compile_bpf("r_swap.c", f"{name}.o", f"-DVERSION={version}", *flags)

    return build


def test_unchanged_reload_makes_no_bpf_call_and_a_changed_one_exactly_those_needed(
    swap, compile_bpf, source_dir, bpffs, state_dir, bpfloader_cli, tmp_path
):
    install(swap("alpha", 1), source_dir)
    install(swap("beta", 1), source_dir)
    install(compile_bpf("myschedtp.c"), source_dir)
    run, calls = traced(tmp_path / "load.trace", state_dir, "load", *where(source_dir, bpffs))
    assert run.returncode == 0, run.stderr
    loaded = ALPHA | BETA | MYSCHEDTP
    assert pins_in(bpffs) == loaded
    # Into an empty pin root: each pin made once, none looked for (the plan saw none there).
    assert calls["BPF_OBJ_PIN"] == len(loaded)
    assert calls["BPF_OBJ_GET"] == 0
    before = ids_of(bpffs, loaded)

    run, calls = traced(
        tmp_path / "unchanged.trace", state_dir, "reload", *where(source_dir, bpffs)
    )
    assert run.returncode == 0, run.stderr
    # Not one bpf(2) call: no BPF_PROG_LOAD, no BPF_MAP_CREATE, not even a BPF_OBJ_GET.
    assert calls == Counter()
    assert calls["BPF_PROG_LOAD"] == 0 and calls["BPF_MAP_CREATE"] == 0
    rows = summary(run.stdout, bpffs)
    assert {rel: (action, kid) for rel, (action, _, _, kid) in rows.items()} == {
        rel: ("keep", kid) for rel, kid in before.items()
    }
    assert "objects: 3 loaded, 0 skipped, 0 failed" in run.stdout.splitlines()
    assert ids_of(bpffs, loaded) == before
    for name in ("alpha", "beta", "myschedtp"):
        assert f"{source_dir}/{name}.o: unchanged, left alone" in run.stderr

    # alpha changes (two programs loaded anew, its two maps kept), gamma appears (two maps,
    # two programs); beta and myschedtp stay as they are.
    install(swap("alpha", 2), source_dir)
    install(swap("gamma", 1), source_dir)
    run, calls = traced(tmp_path / "changed.trace", state_dir, "reload", *where(source_dir, bpffs))
    assert run.returncode == 0, run.stderr
    assert calls["BPF_PROG_LOAD"] == 4
    assert calls["BPF_MAP_CREATE"] == 2
    assert calls["BPF_OBJ_PIN"] == 6  # 2 programs of alpha, 4 pins of gamma
    assert calls["BPF_OBJ_GET"] == 4  # the pins of alpha, which are reused or replaced
    rows = summary(run.stdout, bpffs)
    assert {rel: action for rel, (action, *_) in rows.items()} == {
        **{rel: "keep" for rel in BETA | MYSCHEDTP},
        A_VALUES: "reuse",
        A_COUNTS: "reuse",
        A_SWITCH: "replace",
        A_WAKEUP: "replace",
        "map_gamma_values": "create",
        "map_gamma_counts": "create",
        f"prog_gamma_{SWITCH}": "load",
        f"prog_gamma_{WAKEUP}": "load",
    }
    after = ids_of(bpffs, loaded | GAMMA)
    assert {rel: rows[rel][3] for rel in after} == after  # the summary names the live ids
    for rel in BETA | MYSCHEDTP | {A_VALUES, A_COUNTS}:
        assert after[rel] == before[rel], rel
    for rel in (A_SWITCH, A_WAKEUP):
        assert after[rel] != before[rel], rel
    assert prog_info(bpffs / A_SWITCH).name == "sw_v2"
    assert prog_info(bpffs / A_WAKEUP).name == "wk_v2"
    assert "programs loaded: 4, " in run.stdout
    assert pins_in(bpffs) == loaded | GAMMA


def start_reader(paths: list[Path]) -> tuple[int, int, mmap.mmap]:
    """A forked child that opens every path in turn (BPF_OBJ_GET), as fast as it can, until
    told to stop; it counts what it saw: the kernel ids per path and every error by errno."""
    shared = mmap.mmap(-1, 16)  # [0]: stop flag; [8:16]: rounds done so far

    def read_until_stopped() -> dict[str, Any]:
        ids: dict[str, Counter[int]] = {str(p): Counter() for p in paths}
        errors: Counter[str] = Counter()
        rounds = 0
        while shared[0] == 0:
            for path in paths:
                try:
                    fd = kpins.open_pinned(str(path))
                except KernelError as e:
                    errors[f"{path.name}: {errno.errorcode[e.errno]}"] += 1
                    continue
                try:
                    if path.name.startswith("map_"):
                        ids[str(path)][kmaps.map_info(fd).id] += 1
                    else:
                        ids[str(path)][kprogs.program_info(fd).id] += 1
                finally:
                    os.close(fd)
            rounds += 1
            struct.pack_into("Q", shared, 8, rounds)
        return {"rounds": rounds, "ids": ids, "errors": errors}

    pid, read_end = fork_child(read_until_stopped)
    return pid, read_end, shared


def rounds_done(shared: mmap.mmap) -> int:
    return int(struct.unpack_from("Q", shared, 8)[0])


def wait_rounds(shared: mmap.mmap, at_least: int) -> None:
    deadline = time.monotonic() + 10
    while rounds_done(shared) < at_least:
        assert time.monotonic() < deadline, "the reader does not get going"
        time.sleep(0.001)


def stop_reader(pid: int, read_end: int, shared: mmap.mmap) -> dict[str, Any]:
    shared[0] = 1
    result: dict[str, Any] = child_result(pid, read_end)
    return result


def test_changed_program_is_swapped_while_a_reader_keeps_opening_it(
    swap, source_dir, bpffs, bpfloader_cli
):
    install(swap("alpha", 1), source_dir)
    install(swap("beta", 1), source_dir)
    assert bpfloader_cli("load", *where(source_dir, bpffs)).returncode == 0
    before = ids_of(bpffs, ALPHA | BETA)
    map_put(bpffs / A_VALUES, 1, 111)
    map_put(bpffs / A_VALUES, 9, 0xDEADBEEFCAFE)
    map_put(bpffs / A_COUNTS, 3, 33)
    map_put(bpffs / "map_beta_values", 2, 222)

    watched = [bpffs / A_SWITCH, bpffs / A_WAKEUP, bpffs / A_VALUES]
    pid, read_end, shared = start_reader(watched)
    try:
        wait_rounds(shared, 500)
        install(swap("alpha", 2), source_dir)
        start = rounds_done(shared)
        run = bpfloader_cli("reload", *where(source_dir, bpffs))
        during = rounds_done(shared) - start
        wait_rounds(shared, rounds_done(shared) + 500)
    finally:
        seen = stop_reader(pid, read_end, shared)
    assert run.returncode == 0, run.stderr
    after = ids_of(bpffs, ALPHA | BETA)

    # The reader never found the path empty (no ENOENT), nor failed in any other way, and it
    # kept going while the reload ran; it saw the old program, then the new one.
    assert seen["errors"] == {}
    assert during > 0
    assert seen["rounds"] >= 1000
    assert set(map(int, seen["ids"][str(bpffs / A_SWITCH)])) == {before[A_SWITCH], after[A_SWITCH]}
    assert set(map(int, seen["ids"][str(bpffs / A_WAKEUP)])) == {before[A_WAKEUP], after[A_WAKEUP]}
    assert set(map(int, seen["ids"][str(bpffs / A_VALUES)])) == {before[A_VALUES]}

    assert after[A_SWITCH] != before[A_SWITCH]
    assert after[A_WAKEUP] != before[A_WAKEUP]
    assert (prog_info(bpffs / A_SWITCH).name, prog_info(bpffs / A_WAKEUP).name) == (
        "sw_v2",
        "wk_v2",
    )
    # Maps: the same kernel objects, with what was written before the reload.
    assert after[A_VALUES] == before[A_VALUES]
    assert after[A_COUNTS] == before[A_COUNTS]
    assert map_items(bpffs / A_VALUES) == {1: 111, 9: 0xDEADBEEFCAFE}
    assert map_items(bpffs / A_COUNTS) == {0: 0, 1: 0, 2: 0, 3: 33}
    # The unchanged object: same ids, same contents.
    assert {rel: after[rel] for rel in BETA} == {rel: before[rel] for rel in BETA}
    assert map_items(bpffs / "map_beta_values") == {2: 222}
    assert pins_in(bpffs) == ALPHA | BETA
    # The new programs were relocated against the maps that were kept.
    for prog, uses in ((A_SWITCH, A_VALUES), (A_WAKEUP, A_COUNTS)):
        shown = subprocess.run(
            ["bpftool", "-j", "prog", "show", "pinned", bpffs / prog],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(shown.stdout)["map_ids"] == [before[uses]]
    assert f"replaced program sw_v2 (id {after[A_SWITCH]})" in run.stderr
    assert f"reused map values (id {before[A_VALUES]}) at {bpffs / A_VALUES}" in run.stderr


def test_removed_object_pins_vanish_and_nothing_else(
    swap, compile_bpf, source_dir, bpffs, bpfloader_cli
):
    install(swap("alpha", 1), source_dir)
    install(swap("beta", 1), source_dir)
    install(swap("gamma", 1), source_dir / "net")  # a location: pins under bpffs/net/
    install(compile_bpf("myschedtp.c"), source_dir)
    assert bpfloader_cli("load", *where(source_dir, bpffs)).returncode == 0
    net_gamma = swap_pins("gamma", "net")
    assert pins_in(bpffs) == ALPHA | BETA | net_gamma | MYSCHEDTP
    foreign_id = pin_foreign_map(bpffs / "map_beta_foreign")  # looks like beta's, is not
    kept = ALPHA | MYSCHEDTP
    before = ids_of(bpffs, kept)

    os.unlink(source_dir / "beta.o")
    shutil.rmtree(source_dir / "net")
    run = bpfloader_cli("reload", *where(source_dir, bpffs))
    assert run.returncode == 0, run.stderr
    assert pins_in(bpffs) == kept | {"map_beta_foreign"}
    assert not (bpffs / "net").exists()  # its directory went with its last pin
    assert kernel_id(bpffs / "map_beta_foreign") == foreign_id
    assert ids_of(bpffs, kept) == before
    removed = sorted(str(bpffs / rel) for rel in BETA | net_gamma)
    assert [line for line in log_lines(run.stderr, "info") if line.startswith("removed pin ")] == [
        f"removed pin {path}" for path in removed
    ]
    assert f"{source_dir}/beta.o: no longer loaded, its pins are removed" in run.stderr
    assert f"{source_dir}/net/gamma.o: no longer loaded, its pins are removed" in run.stderr
    assert "2 loaded, 0 skipped, 0 failed (0 critical), 8 pins removed" in run.stderr
    report = status_json(bpfloader_cli, source_dir, bpffs)
    assert [o["path"] for o in report["objects"]] == [
        f"{source_dir}/alpha.o",
        f"{source_dir}/myschedtp.o",
    ]
    assert report["foreign_pins"] == [str(bpffs / "map_beta_foreign")]


def test_pin_replaced_by_a_directory_is_not_removed(swap, source_dir, bpffs, bpfloader_cli):
    install(swap("alpha", 1), source_dir)
    install(swap("beta", 1), source_dir)
    assert bpfloader_cli("load", *where(source_dir, bpffs)).returncode == 0
    squatted = bpffs / "map_beta_values"
    os.unlink(squatted)
    squatted.mkdir()
    pin_foreign_map(squatted / "inside")

    os.unlink(source_dir / "beta.o")
    run = bpfloader_cli("reload", *where(source_dir, bpffs))
    assert run.returncode == 0, run.stderr
    assert pins_in(bpffs) == ALPHA | {"map_beta_values/inside"}
    assert squatted.is_dir()
    assert log_lines(run.stderr, "warning") == [
        f"not removing {squatted}: it is a directory now, not the pin recorded"
    ]
    assert "3 pins removed" in run.stderr


def test_unchanged_object_whose_pin_became_a_directory_fails_clearly(
    swap, source_dir, bpffs, bpfloader_cli
):
    install(swap("alpha", 1), source_dir)
    install(swap("beta", 1), source_dir)
    assert bpfloader_cli("load", *where(source_dir, bpffs)).returncode == 0
    before = ids_of(bpffs, ALPHA)
    squatted = bpffs / "map_beta_counts"
    os.unlink(squatted)
    squatted.mkdir()

    run = bpfloader_cli("reload", *where(source_dir, bpffs))
    assert run.returncode == 3, run.stderr  # not "unchanged": a directory is not the pin
    message = f"{source_dir}/beta.o: {squatted} is a directory, not a pinned map"
    assert log_lines(run.stderr, "err") == [message]
    assert f"failed: {message}" in run.stdout.splitlines()
    assert "objects: 1 loaded, 0 skipped, 1 failed" in run.stdout.splitlines()
    assert squatted.is_dir()
    assert pins_in(bpffs) == ALPHA | BETA - {"map_beta_counts"}
    assert ids_of(bpffs, ALPHA) == before
    (beta,) = [
        o for o in status_json(bpfloader_cli, source_dir, bpffs)["objects"] if "beta" in o["path"]
    ]
    assert (beta["status"], beta["reason"]) == ("failed", message)
    assert {m["name"]: (m["present"], m["id"], m["mode"]) for m in beta["maps"]} == {
        "values": (True, kernel_id(bpffs / "map_beta_values"), "0600"),
        "counts": (False, None, None),  # the directory in its place is not it
    }


@pytest.mark.parametrize(
    ("flag", "difference"),
    [
        ("-DVALUE_TYPE=uint32_t", "value_size 8, the object declares 4"),
        ("-DMAX_ENTRIES=32", "max_entries 16, the object declares 32"),
    ],
)
def test_incompatible_map_fails_the_object_and_keeps_the_old_one_whole(
    swap, source_dir, bpffs, bpfloader_cli, flag, difference
):
    installed = install(swap("alpha", 1), source_dir)
    old_sha = hashlib.sha256(installed.read_bytes()).hexdigest()
    install(swap("beta", 1), source_dir)
    assert bpfloader_cli("load", *where(source_dir, bpffs)).returncode == 0
    before = ids_of(bpffs, ALPHA | BETA)
    map_put(bpffs / A_VALUES, 4, 4444)
    map_put(bpffs / A_COUNTS, 1, 11)

    install(swap("alpha", 2, flag), source_dir)
    run = bpfloader_cli("reload", *where(source_dir, bpffs))
    assert run.returncode == 3, run.stderr
    message = (
        f"{source_dir}/alpha.o: maps: map 'values': pinned map {bpffs / A_VALUES} has "
        f"{difference}{RECREATE_HINT}"
    )
    assert log_lines(run.stderr, "err") == [message]
    assert run.stdout.splitlines()[0] == "objects: 1 loaded, 0 skipped, 1 failed"
    assert run.stdout.splitlines()[-1] == f"failed: {message}"
    # The old object is all there: same programs, same maps, same contents, no new pin.
    assert pins_in(bpffs) == ALPHA | BETA
    assert ids_of(bpffs, ALPHA | BETA) == before
    assert prog_info(bpffs / A_SWITCH).name == "sw_v1"
    assert map_items(bpffs / A_VALUES) == {4: 4444}
    assert map_items(bpffs / A_COUNTS) == {0: 0, 1: 11, 2: 0, 3: 0}
    (alpha,) = [
        o for o in status_json(bpfloader_cli, source_dir, bpffs)["objects"] if "alpha" in o["path"]
    ]
    assert (alpha["status"], alpha["reason"], alpha["sha256"]) == ("failed", message, old_sha)
    assert {p["pin"]: (p["present"], p["id"]) for p in alpha["maps"] + alpha["programs"]} == {
        str(bpffs / rel): (True, before[rel]) for rel in ALPHA
    }
    # Tried again on the next reload (still failing), not taken as unchanged.
    again = bpfloader_cli("reload", *where(source_dir, bpffs))
    assert again.returncode == 3
    assert log_lines(again.stderr, "err") == [message]

    run = bpfloader_cli("reload", "--recreate-incompatible-maps", *where(source_dir, bpffs))
    assert run.returncode == 0, run.stderr
    after = ids_of(bpffs, ALPHA | BETA)
    assert after[A_VALUES] != before[A_VALUES]
    assert map_items(bpffs / A_VALUES, value_fmt="I" if "uint32" in flag else "Q") == {}
    assert after[A_COUNTS] == before[A_COUNTS]  # compatible: kept, with its contents
    assert map_items(bpffs / A_COUNTS) == {0: 0, 1: 11, 2: 0, 3: 0}
    assert prog_info(bpffs / A_SWITCH).name == "sw_v2"
    assert {rel: after[rel] for rel in BETA} == {rel: before[rel] for rel in BETA}
    assert log_lines(run.stderr, "warning") == [
        f"recreated map values (id {after[A_VALUES]}), its contents are lost: map 'values': "
        f"pinned map {bpffs / A_VALUES} has {difference}"
    ]
    assert summary(run.stdout, bpffs)[A_VALUES] == ("replace", "0:0", "0600", after[A_VALUES])
    assert "programs loaded: 2, " in run.stdout  # the recreated map is not a program
    assert pins_in(bpffs) == ALPHA | BETA


def test_owner_and_mode_of_a_reused_map_follow_the_object_on_reload(
    swap, source_dir, bpffs, bpfloader_cli
):
    install(swap("alpha", 1), source_dir)
    assert bpfloader_cli("load", *where(source_dir, bpffs)).returncode == 0
    before = ids_of(bpffs, ALPHA)
    map_put(bpffs / A_VALUES, 7, 77)

    def owner(rel: str) -> tuple[int, int, int]:
        st = os.stat(bpffs / rel)
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)

    assert owner(A_VALUES) == (0, 0, 0o600)
    install(
        swap("alpha", 1, "-DVALUES_UID=1234", "-DVALUES_GID=4321", "-DVALUES_MODE=0640"),
        source_dir,
    )
    run = bpfloader_cli("reload", *where(source_dir, bpffs))
    assert run.returncode == 0, run.stderr
    assert owner(A_VALUES) == (1234, 4321, 0o640)
    assert owner(A_COUNTS) == (0, 0, 0o600)
    assert kernel_id(bpffs / A_VALUES) == before[A_VALUES]
    assert map_items(bpffs / A_VALUES) == {7: 77}
    assert summary(run.stdout, bpffs)[A_VALUES] == ("reuse", "1234:4321", "0640", before[A_VALUES])
    report = status_json(bpfloader_cli, source_dir, bpffs)
    (values,) = [m for m in report["objects"][0]["maps"] if m["name"] == "values"]
    assert (values["uid"], values["gid"], values["mode"]) == (1234, 4321, "0640")

    # And back: the same map again, root's only.
    install(swap("alpha", 1), source_dir)
    run = bpfloader_cli("reload", *where(source_dir, bpffs))
    assert run.returncode == 0, run.stderr
    assert owner(A_VALUES) == (0, 0, 0o600)
    assert kernel_id(bpffs / A_VALUES) == before[A_VALUES]


def test_reload_after_a_load_that_reused_older_pins_swaps_the_new_programs_in(
    swap, source_dir, bpffs, bpfloader_cli
):
    """`load` keeps the pins it finds (boot semantics); the file changed meanwhile, so the
    next reload must not take the object as unchanged."""
    install(swap("alpha", 1), source_dir)
    assert bpfloader_cli("load", *where(source_dir, bpffs)).returncode == 0
    install(swap("alpha", 2), source_dir)
    second = bpfloader_cli("load", *where(source_dir, bpffs))
    assert second.returncode == 0, second.stderr
    assert {action for action, *_ in summary(second.stdout, bpffs).values()} == {"reuse"}
    assert prog_info(bpffs / A_SWITCH).name == "sw_v1"

    run = bpfloader_cli("reload", *where(source_dir, bpffs))
    assert run.returncode == 0, run.stderr
    assert {rel: action for rel, (action, *_) in summary(run.stdout, bpffs).items()} == {
        A_VALUES: "reuse",
        A_COUNTS: "reuse",
        A_SWITCH: "replace",
        A_WAKEUP: "replace",
    }
    assert prog_info(bpffs / A_SWITCH).name == "sw_v2"
    assert map_info(bpffs / A_VALUES).value_size == 8
    # Now recorded from this file: the next reload leaves it alone.
    third = bpfloader_cli("reload", *where(source_dir, bpffs))
    assert {action for action, *_ in summary(third.stdout, bpffs).values()} == {"keep"}
