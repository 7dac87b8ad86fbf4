"""Attacks on the pin root and the state directory by a local unprivileged user (a real uid),
against the loader running as root: a hand-mounted 1777 bpffs, a directory planted there, a link
swapped in while the loader makes a directory, a pin replaced by another process, a reload
killed half way, a state directory others can write.

Each test fails on the loader before the threat model (commit 9cb7099) and passes with it; the
races are bounded (rounds and seconds) and count the attacker's wins.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bpfloader.journal import ConsoleReporter
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import pins as kpins
from bpfloader.kernel.fd import Fd
from bpfloader.loader import run as loader_run
from bpfloader.loader.state import environment_key
from tests.attack.conftest import ATTACKER, as_user, race
from tests.conftest import REPO, fork_child, pins_in

pytestmark = pytest.mark.kernel

_libc = ctypes.CDLL(None, use_errno=True)
renameat2 = _libc.renameat2
renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
RENAME_EXCHANGE = 2

SUBDIR_OBJECT = """
#include <bpf_helpers.h>
DEFINE_BPF_MAP_EXT(counts, ARRAY, int, uint32_t, 4, 0, AID_ROOT, AID_ROOT, 0600, "",
                   "evil/sub/deeper", false, KVER_NONE, KVER_INF, BPFLOADER_MIN_VER,
                   BPFLOADER_MAX_VER, 0);
DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, tp_count)
(void *ctx) {
    int key = 0;
    uint32_t one = 1;
    bpf_counts_update_elem(&key, &one, BPF_ANY);
    return 1;
}
LICENSE("GPL");
"""

TWO_PROGRAMS = """
#include <bpf_helpers.h>
DEFINE_BPF_MAP(counts, ARRAY, int, uint32_t, 4);
DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, tp_switch)
(void *ctx) {
    int key = 0;
    uint32_t v = VERSION;
    bpf_counts_update_elem(&key, &v, BPF_ANY);
    return 1;
}
DEFINE_BPF_PROG("tracepoint/sched/sched_wakeup", AID_ROOT, AID_ROOT, tp_wakeup)
(void *ctx) {
    int key = 1;
    uint32_t v = VERSION;
    bpf_counts_update_elem(&key, &v, BPF_ANY);
    return 1;
}
LICENSE("GPL");
"""


def _options(source: Path, pin_root: Path, state: Path) -> loader_run.LoadOptions:
    return loader_run.LoadOptions(
        source_dir=str(source), pin_root=str(pin_root), state_dir=str(state)
    )


def _quiet() -> ConsoleReporter:
    return ConsoleReporter(io.StringIO())


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    argv = [str(a) for a in args]
    if argv[0] in ("load", "reload"):
        argv.append("--no-cache")  # never the host's object cache
    return subprocess.run(
        [sys.executable, "-m", "bpfloader", *argv, "--log-target", "console"]
        if argv[0] in ("load", "reload", "unload")
        else [sys.executable, "-m", "bpfloader", *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


@pytest.fixture
def root_source(open_dir: Path) -> Path:
    """A source directory only root can write (as /etc/bpf)."""
    path = open_dir / "src"
    path.mkdir(mode=0o755)
    return path


# -- item 2: no chmod through a link, no pins in a directory another user owns -------------------


def test_a_planted_directory_takes_no_pins_and_no_link_gets_chmodded(
    compile_bpf, hand_mounted_pin_root, root_source, attack_state_dir, open_dir
):
    """The attacker owns `evil/` in a 1777 pin root; an object pins into `evil/sub/deeper`; a
    racer swaps the `sub` the loader has just made for a link to a root-only (0700) directory.
    A win: the loader changed that directory's mode or made something in it. Before: won
    within the rounds. After: the object fails, naming `evil`'s owner, every round, and
    nothing is made there."""
    pin_root = hand_mounted_pin_root
    (root_source / "sub.o").write_bytes(compile_bpf(SUBDIR_OBJECT, "sub.o").read_bytes())
    victim = open_dir / "victim"
    victim.mkdir(mode=0o700)
    (victim / "secret").write_text("root's\n")
    evil = pin_root / "evil"
    as_user(ATTACKER, lambda: os.mkdir(evil, 0o777))
    link = evil / "link"
    at_cwd = -100

    def step() -> None:  # as the attacker: the `sub` root has just made is swapped for a link
        # One atomic syscall, retried as fast as Python can: most fail (no `sub` yet). Once
        # it worked, `link` holds root's directory and the link stays at `sub` for the round.
        if os.path.islink(link):
            renameat2(at_cwd, bytes(link), at_cwd, bytes(evil / "sub"), RENAME_EXCHANGE)

    errors: list[str] = []

    def attempt() -> bool:
        for entry in os.listdir(evil):  # root clears the attacker's directory for the round
            path = evil / entry
            if path.is_symlink() or not path.is_dir():
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            else:
                shutil.rmtree(path, ignore_errors=True)
        os.symlink(victim, link)  # the attacker's link, made again for the round
        os.lchown(link, ATTACKER, ATTACKER)
        result = loader_run.load(_options(root_source, pin_root, attack_state_dir), _quiet())
        errors.extend(o.reason for o in result.objects if o.reason)
        won = stat.S_IMODE(victim.stat().st_mode) != 0o700 or os.listdir(victim) != ["secret"]
        victim.chmod(0o700)
        for entry in os.listdir(victim):
            if entry != "secret":
                shutil.rmtree(victim / entry)
        return won

    outcome = race(attempt, step, rounds=400, seconds=90)
    print(f"planted directory race: {outcome}")
    assert outcome.wins == 0, outcome
    assert outcome.rounds >= 20
    assert errors and all(f"directory {evil} is owned by uid {ATTACKER}" in e for e in errors)
    assert not any(p.startswith("evil/") for p in pins_in(pin_root))


# -- item 3: the pin root is taken over --------------------------------------------------------


def test_a_hand_mounted_pin_root_is_taken_over(
    compile_bpf, hand_mounted_pin_root, root_source, attack_state_dir
):
    """Before the first run the attacker plants a link under the staging name; the loader
    removes it and takes the 1777 root over (root's, writable by no one else): afterwards the
    attacker can neither add entries nor rename or remove root's pins."""
    pin_root = hand_mounted_pin_root
    (root_source / "myschedtp.o").write_bytes(compile_bpf("myschedtp.c").read_bytes())
    as_user(ATTACKER, lambda: os.symlink("/tmp", pin_root / "bpfloader_staging"))
    run = _cli(
        "load", "--dir", root_source, "--pin-root", pin_root, "--state-dir", attack_state_dir
    )
    assert run.returncode == 0, run.stderr
    assert (attack_state_dir / "loaded").exists()
    st = os.stat(pin_root)
    assert (st.st_uid, stat.S_IMODE(st.st_mode) & 0o7777) == (0, 0o1755), oct(st.st_mode)
    assert f"took pin root {pin_root} over (1777 -> 1755)" in run.stderr

    def attack() -> list[str]:
        refused = []
        for name, act in (
            ("mkdir", lambda: os.mkdir(pin_root / "net")),
            ("symlink", lambda: os.symlink("/", pin_root / "map_myschedtp_x")),
            (
                "rename",
                lambda: os.rename(pin_root / "map_myschedtp_cpu_pid_map", pin_root / "stolen"),
            ),
            (
                "unlink",
                lambda: os.unlink(pin_root / "prog_myschedtp_tracepoint_sched_sched_switch"),
            ),
        ):
            try:
                act()
            except PermissionError:
                refused.append(name)
        return refused

    assert as_user(ATTACKER, attack) == ["mkdir", "symlink", "rename", "unlink"]
    assert pins_in(pin_root) == {
        "map_myschedtp_cpu_pid_map",
        "prog_myschedtp_tracepoint_sched_sched_switch",
    }


def test_a_shared_pin_root_is_left_shared_only_when_asked(
    compile_bpf, hand_mounted_pin_root, root_source, attack_state_dir
):
    (root_source / "myschedtp.o").write_bytes(compile_bpf("myschedtp.c").read_bytes())
    run = _cli(
        "load",
        "--dir",
        root_source,
        "--pin-root",
        hand_mounted_pin_root,
        "--state-dir",
        attack_state_dir,
        "--insecure-shared-pin-root",
    )
    assert run.returncode == 0, run.stderr
    assert stat.S_IMODE(os.stat(hand_mounted_pin_root).st_mode) == 0o1777
    assert "is left writable by others (mode 1777" in run.stderr


# -- items 4 and 12: a run killed while it publishes -------------------------------------------


def _killed_at_rename(number: int, work: Callable[[], Any]) -> int:
    """Run `work` in a child that is killed (exits 9, nothing cleaned up) when it makes its
    `number`th rename of a pin into place; the child's exit code."""

    def child() -> None:
        calls = [0]
        for name in ("publish", "exchange"):
            real = getattr(kpins, name)

            def counted(*args: Any, _real: Callable[..., None] = real) -> None:
                calls[0] += 1
                if calls[0] == number:
                    os._exit(9)
                _real(*args)

            setattr(kpins, name, counted)
        work()

    pid, read_end = fork_child(child)
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _statuses(source: Path, pin_root: Path, state: Path) -> list[str]:
    """What `status --json` says of each object."""
    done = _cli("status", "--json", "--dir", source, "--pin-root", pin_root, "--state-dir", state)
    return [o["status"] for o in json.loads(done.stdout)["objects"]]


def _published(pin_root: Path) -> set[str]:
    return {p for p in pins_in(pin_root) if not p.startswith("bpfloader_staging/")}


def _tags(pin_root: Path) -> dict[str, str]:
    out = {}
    for name in sorted(os.listdir(pin_root)):
        if name.startswith("prog_"):
            done = subprocess.run(
                ["bpftool", "-j", "prog", "show", "pinned", str(pin_root / name)],
                capture_output=True,
                text=True,
                check=True,
            )
            out[name] = json.loads(done.stdout)["tag"]
    return out


def test_a_reload_killed_half_way_then_reverted_pins_the_reverted_programs(
    compile_bpf, bpffs, root_source, attack_state_dir
):
    """v1 loaded; a reload to v2 killed at its second rename; v1 put back; the next reload must
    leave v1's programs pinned (before: 'unchanged, left alone' with v2's program in place)."""
    v1 = compile_bpf(TWO_PROGRAMS, "two.o", "-DVERSION=1").read_bytes()
    v2 = compile_bpf(TWO_PROGRAMS, "two.o", "-DVERSION=2").read_bytes()
    obj = root_source / "two.o"
    options = _options(root_source, bpffs, attack_state_dir)
    obj.write_bytes(v1)
    loader_run.load(options, _quiet())
    tags_v1 = _tags(bpffs)
    obj.write_bytes(v2)
    assert _killed_at_rename(2, lambda: loader_run.reload(options, _quiet())) == 9
    assert _tags(bpffs) != tags_v1  # one program of v2 is in place
    obj.write_bytes(v1)
    out = io.StringIO()
    loader_run.reload(options, ConsoleReporter(out))
    assert _tags(bpffs) == tags_v1, out.getvalue()
    assert "a run was killed while it published this object's pins" in out.getvalue()
    out = io.StringIO()  # and from then on, an unchanged reload is left alone again
    loader_run.reload(options, ConsoleReporter(out))
    assert "unchanged" in out.getvalue()
    assert _tags(bpffs) == tags_v1


def test_an_object_killed_while_published_is_partial_then_completed(
    compile_bpf, bpffs, root_source, attack_state_dir
):
    """A load killed after the first of three renames leaves one pin visible: status says the
    object is partial (before: 'loaded'), and the next run completes it."""
    obj = root_source / "two.o"
    obj.write_bytes(compile_bpf(TWO_PROGRAMS, "two.o", "-DVERSION=1").read_bytes())
    options = _options(root_source, bpffs, attack_state_dir)
    assert _killed_at_rename(2, lambda: loader_run.load(options, _quiet())) == 9
    assert len(_published(bpffs)) == 1
    assert _statuses(root_source, bpffs, attack_state_dir) == ["partial"]
    loader_run.load(options, _quiet())
    assert len(_published(bpffs)) == 3
    assert _statuses(root_source, bpffs, attack_state_dir) == ["loaded"]


# -- item 7: a pin another process put in place is not removed ---------------------------------


def test_reload_leaves_a_pin_that_is_no_longer_its_own(
    compile_bpf, bpffs, root_source, attack_state_dir
):
    (root_source / "myschedtp.o").write_bytes(compile_bpf("myschedtp.c").read_bytes())
    options = _options(root_source, bpffs, attack_state_dir)
    loader_run.load(options, _quiet())
    theirs = bpffs / "map_myschedtp_cpu_pid_map"
    os.unlink(theirs)
    fd = kmaps.create_map("theirs", 2, 4, 4, 1, 0)  # another process's map, pinned there
    kpins.pin(fd, str(theirs))
    their_id = kmaps.map_info(fd).id
    os.close(fd)
    (root_source / "myschedtp.o").unlink()
    out = io.StringIO()
    result = loader_run.reload(options, ConsoleReporter(out))
    assert result.removed == [str(bpffs / "prog_myschedtp_tracepoint_sched_sched_switch")]
    with Fd(kpins.open_pinned(str(theirs))) as pinned:
        assert kmaps.map_info(pinned.number).id == their_id
    assert f"not removing {theirs}: it holds another object now (id {their_id}" in out.getvalue()


# -- item 8: the state directory is held to the trust rule -------------------------------------


@pytest.mark.parametrize("how", ["owned by the attacker", "world-writable"])
def test_an_untrusted_state_directory_stops_the_run(compile_bpf, bpffs, root_source, open_dir, how):
    """A crafted state.json listing a victim's pin, in a state directory the attacker can
    write: unload must not delete it (before: deleted), and no run uses that directory."""
    state = open_dir / "state"
    state.mkdir(mode=0o755)
    if how == "world-writable":
        state.chmod(0o777)
    else:
        os.chown(state, ATTACKER, ATTACKER)
    victim = bpffs / "map_victim_data"
    fd = kmaps.create_map("victim", 2, 4, 4, 1, 0)
    kpins.pin(fd, str(victim))
    os.close(fd)
    crafted = {
        "format": 1,
        "pin_root": str(bpffs),
        "source_dir": str(root_source),
        # As the loader would record it here: a state it would take as its own.
        "environment": environment_key(loader_run.current_environment()),
        "objects": {
            "/x.o": {
                "path": "/x.o",
                "sha256": None,
                "status": "loaded",
                "reason": "",
                "critical": False,
                "skipped": [],
                "pins": [
                    {
                        "path": str(victim),
                        "kind": "map",
                        "name": "data",
                        "kernel_id": 0,
                        "uid": 0,
                        "gid": 0,
                        "mode": 0o600,
                        "verified_insns": None,
                        "load_usec": None,
                    }
                ],
            }
        },
    }

    def plant() -> None:
        (state / "state.json").write_text(json.dumps(crafted))

    as_user(ATTACKER, plant)
    for command in ("unload", "load", "reload"):
        run = _cli(command, "--dir", root_source, "--pin-root", bpffs, "--state-dir", state)
        assert victim.exists(), (command, run.stderr)
        assert run.returncode == 2, (command, run.stderr)
        lines = [line for line in run.stderr.splitlines() if "state directory" in line]
        assert len(lines) == 1, run.stderr
        assert "not root" in lines[0] or "writable by others" in lines[0], lines[0]
    assert pins_in(bpffs) == {"map_victim_data"}
