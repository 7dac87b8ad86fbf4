"""Reload under faults: the loader killed (SIGKILL) at random points of its run, two runs at
once, a lock held by someone else, a state file that cannot be used, a pin root that is not a
bpffs, a pin path taken by a directory. After each, the pins are exactly what the directory
says (plus whatever was not the tool's), and map contents that had to be kept were kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bpfloader import cli
from tests.conftest import REPO, Run, pins_in, with_cache_dir
from tests.reload_support import (
    MYSCHEDTP,
    SWITCH,
    ids_of,
    install,
    kernel_id,
    log_lines,
    map_items,
    map_put,
    pin_foreign_map,
    prog_info,
    status_json,
    summary,
    swap_pins,
    where,
)

pytestmark = pytest.mark.kernel

ALPHA, BETA = swap_pins("alpha"), swap_pins("beta")
STAGING = "bpfloader_staging"
FOREIGN = "map_foreign_keepme"
SEED = int(os.environ.get("BPFLOADER_FAULT_SEED", "20240604"))
KILLS = 50
CONSOLE = ("--log-target", "console")


@pytest.fixture
def swap(compile_bpf):
    def build(name: str, version: int, *flags: str) -> Path:
        return compile_bpf("r_swap.c", f"{name}.o", f"-DVERSION={version}", *flags)

    return build


def tree(root: Path) -> tuple[set[str], set[str]]:
    """(pins, directories) under `root`, relative, the kernel's own entries left out."""
    dirs = set()
    for directory, subdirs, _ in os.walk(root):
        dirs |= {os.path.relpath(os.path.join(directory, d), root) for d in subdirs}
    return pins_in(root), dirs


def loader(*args: str | Path, state_dir: Path) -> subprocess.Popen[str]:
    argv = with_cache_dir([str(a) for a in args], state_dir.parent / "cache-bpfloader")
    return subprocess.Popen(
        [sys.executable, "-m", "bpfloader", *argv, "--state-dir", str(state_dir), *CONSOLE],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill_after_first_object(proc: subprocess.Popen[str]) -> bool:
    """Kill a run right after its first object reports loaded, the others still to come: the
    moment random delays rarely hit now that a run spends most of its time before and after.
    False when the run ended without reporting one."""
    assert proc.stderr is not None
    seen = False
    for line in proc.stderr:
        if ": loaded (" in line:
            seen = True
            break
    proc.kill()
    return seen


def lock_holder(state_dir: Path) -> str:
    try:
        return (state_dir / "lock").read_text().strip()
    except FileNotFoundError:
        return ""


def wait_for_lock(proc: subprocess.Popen[str], state_dir: Path) -> float | None:
    """Spin until `proc` holds the run lock (its pid is in the lock file): the moment, or None
    if it finished first."""
    pid = str(proc.pid)
    while proc.poll() is None:
        if lock_holder(state_dir) == pid:
            return time.monotonic()
        time.sleep(0.0002)
    return None


def in_process(*args: str | Path) -> Run:
    """`bpfloader ARGS` run in this process: the same code as the command, without an
    interpreter to start (the fault test runs it a hundred times)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in args])
    return Run(code, out.getvalue(), err.getvalue())


def test_kill_9_at_random_points_of_reloads_always_converges(
    swap, compile_bpf, source_dir, bpffs, state_dir, bpfloader_cli
):
    """Two versions of the directory, A and B; each round switches to the other, so the
    reload that is killed (a `bpfloader reload` process, SIGKILL once it holds the run lock,
    after a random delay within the time such a run holds it) has real work: alpha and beta
    get their programs swapped, one object goes away and another appears (B's gamma in a
    location subdirectory). After the kill, a fresh reload must converge to exactly the
    directory, and the maps must still hold what was written before the first round."""
    versions = {
        "A": {
            "alpha.o": swap("alpha", 1),
            "beta.o": swap("beta", 1),
            "gone.o": swap("gone", 1),
            "myschedtp.o": compile_bpf("myschedtp.c"),
        },
        "B": {
            "alpha.o": swap("alpha", 2),
            "beta.o": swap("beta", 2),
            "new.o": swap("new", 1),
            "net/gamma.o": swap("gamma", 1),
            "myschedtp.o": compile_bpf("myschedtp.c"),
        },
    }
    expected = {
        "A": (ALPHA | BETA | swap_pins("gone") | MYSCHEDTP, set()),
        "B": (ALPHA | BETA | swap_pins("new") | swap_pins("gamma", "net") | MYSCHEDTP, {"net"}),
    }
    names = {"A": "sw_v1", "B": "sw_v2"}

    def switch_to(version: str) -> None:
        other = "B" if version == "A" else "A"
        for rel, obj in versions[version].items():
            install(obj, (source_dir / rel).parent)
        for rel in versions[other].keys() - versions[version].keys():
            (source_dir / rel).unlink(missing_ok=True)

    def reload() -> subprocess.Popen[str]:
        # One object at a time: its pins are published one object after another across the
        # run, so a kill can land between them. Side by side, every object publishes at the
        # end within a few milliseconds, and the kills would almost never land "half done".
        return loader("reload", *where(source_dir, bpffs), "--jobs", "1", state_dir=state_dir)

    def check_converged(version: str, context: str) -> None:
        state = ("--state-dir", state_dir)
        cache = ("--cache-dir", state_dir.parent / "cache-bpfloader")  # as loader()'s
        run = in_process("reload", *where(source_dir, bpffs), *state, *cache, *CONSOLE)
        assert run.returncode == 0, f"{context}: {run.stderr}"
        pins, dirs = expected[version]
        assert tree(bpffs) == (pins | {FOREIGN}, dirs), context  # no staging dir either
        status = in_process("status", "--json", *where(source_dir, bpffs), *state)
        assert status.returncode == 0, f"{context}: {status.stderr}"
        report = json.loads(status.stdout)
        assert report["state"] == "recorded", context
        assert report["foreign_pins"] == [str(bpffs / FOREIGN)], context
        assert sorted(o["path"] for o in report["objects"]) == sorted(
            str(source_dir / rel) for rel in versions[version]
        ), context
        for obj in report["objects"]:
            assert (obj["status"], obj["reason"]) == ("loaded", ""), context
            assert all(p["present"] for p in obj["maps"] + obj["programs"]), context
        assert {
            os.path.relpath(p["pin"], bpffs)
            for o in report["objects"]
            for p in o["maps"] + o["programs"]
        } == pins, context
        assert prog_info(bpffs / f"prog_alpha_{SWITCH}").name == names[version], context
        # The maps that had to be kept: the same kernel objects, with their contents.
        assert ids_of(bpffs, kept_maps) == kept_ids, context
        assert map_items(bpffs / "map_alpha_values") == {42: 0x5E471E1}, context
        assert map_items(bpffs / "map_beta_counts") == {0: 0, 1: 0, 2: 77, 3: 0}, context
        assert [n for n in os.listdir(state_dir) if n.startswith(".tmp")] == [], context

    switch_to("A")
    assert bpfloader_cli("load", *where(source_dir, bpffs)).returncode == 0
    pin_foreign_map(bpffs / FOREIGN)
    map_put(bpffs / "map_alpha_values", 42, 0x5E471E1)
    map_put(bpffs / "map_beta_counts", 2, 77)
    kept_maps = {
        "map_alpha_values",
        "map_alpha_counts",
        "map_beta_values",
        "map_beta_counts",
        "map_myschedtp_cpu_pid_map",
    }
    kept_ids = ids_of(bpffs, kept_maps)
    foreign_id = kernel_id(bpffs / FOREIGN)

    # How long a reload holds the lock, doing its work (A -> B, B -> A), unkilled.
    windows = []
    for version in "BABA":
        switch_to(version)
        proc = reload()
        locked = wait_for_lock(proc, state_dir)
        proc.communicate()
        assert locked is not None and proc.returncode == 0
        windows.append(time.monotonic() - locked)
        check_converged(version, f"calibration {version}")
    window = statistics.median(windows)

    rng = random.Random(SEED)
    kills, rounds, aftermath = 0, 0, {"untouched": 0, "half done": 0, "done": 0}
    mid_run = 0  # kills after one object was applied and before the others
    version = "A"
    started = time.monotonic()
    while kills < KILLS:
        rounds += 1
        assert rounds <= 3 * KILLS, f"only {kills} kills landed in {rounds} rounds (seed {SEED})"
        previous, version = version, "B" if version == "A" else "A"
        switch_to(version)
        delay = rng.uniform(0, window * 1.1)
        proc = reload()
        if wait_for_lock(proc, state_dir) is not None:
            if rounds % 3 == 0:
                mid_run += kill_after_first_object(proc)
            else:
                time.sleep(delay)
                proc.kill()
        proc.communicate()
        if proc.returncode != -9:
            assert proc.returncode == 0
            continue  # finished before the kill: no fault this round
        kills += 1
        pins, _ = tree(bpffs)
        if pins == expected[previous][0] | {FOREIGN}:
            aftermath["untouched"] += 1
        elif pins == expected[version][0] | {FOREIGN} and not (bpffs / STAGING).exists():
            aftermath["done"] += 1
        else:
            aftermath["half done"] += 1
        check_converged(version, f"kill {kills} (round {rounds}, delay {delay:.4f} s, seed {SEED})")
    elapsed = time.monotonic() - started
    assert kernel_id(bpffs / FOREIGN) == foreign_id
    # The kills did land inside the work, not only before or after it. (A pin set alone cannot
    # show it: a program swapped in keeps its name, so a run killed after swapping some looks
    # "untouched" by names.)
    assert mid_run > 0, aftermath
    print(
        f"{kills} kills in {rounds} rounds, {elapsed:.1f} s, window {window:.3f} s: {aftermath}, "
        f"{mid_run} right after an object was applied"
    )


@pytest.mark.parametrize("command", ["load", "reload", "unload"])
def test_every_run_removes_the_temporary_files_killed_runs_left(
    compile_bpf, source_dir, bpffs, state_dir, bpfloader_cli, command
):
    """A run killed while it wrote the state or the loaded marker leaves its temporary file;
    the next run holding the lock removes it even when it writes nothing itself (a reload that
    finds nothing changed), so none outlives the run after the kill."""
    install(compile_bpf("myschedtp.c"), source_dir)
    dirs = ("--dir", source_dir, "--pin-root", bpffs)
    assert bpfloader_cli("load", *dirs).returncode == 0
    recorded = (state_dir / "state.json").read_bytes()
    left = [state_dir / ".tmp-loaded-99999", state_dir / ".tmp-state.json-99998"]
    for path in left:
        path.write_text("half written")
    run = bpfloader_cli(command, *dirs)
    assert run.returncode == 0, run.stderr
    assert [p for p in left if p.exists()] == []
    if command == "reload":  # nothing changed: nothing else was written
        assert (state_dir / "state.json").read_bytes() == recorded
    assert sorted(p.name for p in state_dir.iterdir() if p.name.startswith(".")) == []


def test_two_reloads_started_together_run_one_after_the_other(
    swap, source_dir, bpffs, state_dir, bpfloader_cli
):
    install(swap("alpha", 1), source_dir)
    install(swap("beta", 1), source_dir)
    assert bpfloader_cli("load", *where(source_dir, bpffs)).returncode == 0
    before = ids_of(bpffs, ALPHA | BETA)
    map_put(bpffs / "map_alpha_values", 5, 55)
    install(swap("alpha", 2), source_dir)
    install(swap("beta", 2), source_dir)

    # Both start while the lock is taken, and wait; released, they race for it.
    with open(state_dir / "lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        procs = [loader("reload", *where(source_dir, bpffs), state_dir=state_dir) for _ in "12"]
        for proc in procs:
            assert proc.stderr is not None
            assert proc.stderr.readline().startswith("bpfloader: info: reloading ")
        time.sleep(0.3)
        assert [proc.poll() for proc in procs] == [None, None]  # waiting for the lock
    outputs = [proc.communicate() for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    for out, err in outputs:
        assert "EEXIST" not in out + err and "exists" not in out + err
        assert "appeared while" not in err and "vanished while" not in err

    # One did the work; the other came after it and found nothing left to do.
    actions = sorted(
        tuple(sorted({action for action, *_ in summary(out, bpffs).values()})) for out, _ in outputs
    )
    assert actions == [("keep",), ("replace", "reuse")]
    after = ids_of(bpffs, ALPHA | BETA)
    for rel in ALPHA | BETA:
        assert (after[rel] == before[rel]) == rel.startswith("map_"), rel
    assert pins_in(bpffs) == ALPHA | BETA
    assert not (bpffs / STAGING).exists()
    assert map_items(bpffs / "map_alpha_values") == {5: 55}
    report = status_json(bpfloader_cli, source_dir, bpffs)
    assert [
        (o["status"], all(p["present"] for p in o["maps"] + o["programs"]))
        for o in report["objects"]
    ] == [("loaded", True), ("loaded", True)]
    assert lock_holder(state_dir) == ""  # released, and no stale pid left behind


def test_lock_held_longer_than_the_timeout_is_a_clear_error(
    swap, source_dir, bpffs, state_dir, bpfloader_cli
):
    install(swap("alpha", 1), source_dir)
    assert bpfloader_cli("load", *where(source_dir, bpffs)).returncode == 0
    before = ids_of(bpffs, ALPHA)
    install(swap("alpha", 2), source_dir)
    lock = state_dir / "lock"
    for command in ("reload", "load", "unload"):
        with open(lock, "r+") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            held.write(f"{os.getpid()}\n")
            held.flush()
            started = time.monotonic()
            run = bpfloader_cli(command, "--lock-timeout", "0.5", *where(source_dir, bpffs))
            waited = time.monotonic() - started
            held.truncate(0)
        assert run.returncode == 2, run.stderr
        assert run.stderr.splitlines()[-1] == (
            f"bpfloader: another bpfloader run (pid {os.getpid()}) holds {lock}; "
            "gave up waiting after 0.5 s"
        )
        assert 0.5 <= waited < 5
        assert ids_of(bpffs, ALPHA) == before  # nothing was done
    # A holder that does not say who it is: no stale pid from an earlier run is named.
    with open(lock, "r+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        run = bpfloader_cli("reload", "--lock-timeout", "0.2", *where(source_dir, bpffs))
    assert run.returncode == 2
    assert run.stderr.splitlines()[-1] == (
        f"bpfloader: another bpfloader run (pid unknown) holds {lock}; gave up waiting after 0.2 s"
    )
    # Released: the reload goes through.
    assert bpfloader_cli("reload", *where(source_dir, bpffs)).returncode == 0
    assert prog_info(bpffs / f"prog_alpha_{SWITCH}").name == "sw_v2"


def _valid_state_text(state_dir: Path) -> str:
    return (state_dir / "state.json").read_text()


@pytest.mark.parametrize("damage", ["empty", "truncated", "not json", "another shape", "escape"])
def test_unusable_state_file_is_rebuilt_and_nothing_foreign_is_deleted(
    swap, source_dir, bpffs, state_dir, bpfloader_cli, tmp_path, damage
):
    install(swap("alpha", 1), source_dir)
    install(swap("beta", 1), source_dir)
    assert bpfloader_cli("load", *where(source_dir, bpffs)).returncode == 0
    pin_foreign_map(bpffs / FOREIGN)
    map_put(bpffs / "map_alpha_values", 3, 333)
    before = ids_of(bpffs, ALPHA | BETA)
    decoy = tmp_path / "decoy"
    decoy.write_text("not the tool's\n")
    state_file = state_dir / "state.json"
    text = _valid_state_text(state_dir)
    if damage == "escape":
        # Well-formed, but claims a file outside the pin root for an object that is gone:
        # trusted, a reload would unlink it.
        data = json.loads(text)
        ghost = str(source_dir / "ghost.o")
        data["objects"][ghost] = dict(data["objects"][str(source_dir / "alpha.o")], path=ghost)
        data["objects"][ghost]["pins"] = [dict(data["objects"][ghost]["pins"][0], path=str(decoy))]
        damaged = json.dumps(data)
        problem = f"ValueError: pin '{decoy}' of {ghost} is not in the pin root {bpffs}"
    else:
        damaged = {
            "empty": "",
            "truncated": text[: len(text) // 2],
            "not json": "\x00\x01 this is not json {",
            "another shape": "[1, 2, 3]",
        }[damage]
        try:
            json.loads(damaged.encode())  # the loader reads bytes
        except ValueError as e:
            problem = f"{type(e).__name__}: {e}"
        else:
            problem = "ValueError: not a bpfloader state of format 1"
    state_file.write_text(damaged)

    run = bpfloader_cli("reload", *where(source_dir, bpffs))
    assert run.returncode == 0, run.stderr
    assert log_lines(run.stderr, "warning") == [
        f"state {state_file}: {problem}: rebuilt from the pins and the objects "
        "(8 pins attributed to 2 objects)"
    ]
    assert decoy.read_text() == "not the tool's\n"
    assert pins_in(bpffs) == ALPHA | BETA | {FOREIGN}
    after = ids_of(bpffs, ALPHA | BETA)
    for rel in ALPHA | BETA:  # hashes unknown: every object re-checked, maps kept
        assert (after[rel] == before[rel]) == rel.startswith("map_"), rel
    assert map_items(bpffs / "map_alpha_values") == {3: 333}
    # The state is whole again: the next reload has nothing to do.
    again = bpfloader_cli("reload", *where(source_dir, bpffs))
    assert again.returncode == 0
    assert log_lines(again.stderr, "warning") == []
    assert {action for action, *_ in summary(again.stdout, bpffs).values()} == {"keep"}
    assert status_json(bpfloader_cli, source_dir, bpffs)["state"] == "recorded"


@pytest.mark.parametrize("command", ["load", "reload", "unload", "status"])
def test_pin_root_that_is_not_bpffs_is_refused(
    swap, source_dir, state_dir, bpfloader_cli, tmp_path, command
):
    install(swap("alpha", 1), source_dir)
    plain = tmp_path / "plain"
    plain.mkdir(mode=0o700)
    (plain / "somefile").write_text("x")
    run = bpfloader_cli(command, "--dir", source_dir, "--pin-root", plain)
    assert run.returncode == 2, run.stderr
    message = (
        f"bpfloader: pin root {plain} is not a bpf filesystem"
        f" (mount it: mount -t bpf -o mode=0700 bpf {plain})"
    )
    assert run.stderr.splitlines()[-1] == message
    assert run.stdout == ""
    assert os.listdir(plain) == ["somefile"]
    assert oct(os.stat(plain).st_mode & 0o7777) == oct(0o700)
    assert not (state_dir / "state.json").exists()


@pytest.mark.parametrize("command", ["load", "reload"])
def test_pin_path_taken_by_a_directory_fails_that_object_only(
    swap, source_dir, bpffs, bpfloader_cli, command
):
    install(swap("alpha", 1), source_dir)
    install(swap("beta", 1), source_dir)
    taken = bpffs / f"prog_beta_{SWITCH}"
    taken.mkdir()
    run = bpfloader_cli(command, *where(source_dir, bpffs))
    assert run.returncode == (0 if command == "load" else 3), run.stderr
    message = f"{source_dir}/beta.o: {taken} is a directory, not a pinned program"
    assert log_lines(run.stderr, "err") == [message]
    assert run.stdout.splitlines()[0] == "objects: 1 loaded, 0 skipped, 1 failed"
    assert run.stdout.splitlines()[-1] == f"failed: {message}"
    # alpha loaded; beta left nothing (its maps were made before the program and taken back).
    assert tree(bpffs) == (ALPHA, {taken.name})
    assert {a for a, *_ in summary(run.stdout, bpffs).values()} == {"create", "load"}
    report = status_json(bpfloader_cli, source_dir, bpffs)
    assert [
        (o["path"], o["status"], len(o["maps"]), len(o["programs"])) for o in report["objects"]
    ] == [
        (str(source_dir / "alpha.o"), "loaded", 2, 2),
        (str(source_dir / "beta.o"), "failed", 0, 0),
    ]
    assert report["foreign_pins"] == []
