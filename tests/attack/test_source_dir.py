"""Attacks on the source directory by a local unprivileged user (a real uid), against the loader
running as root: a sticky world-writable source directory (root's, 1777: the README allows it)
where the attacker adds links and files of their own beside root's objects, and flips them while
the loader reads.

- a link `x.o` flipped between root's `good.o` and the attacker's own object (race);
- a link `x.o -> good.o` planted once (a second object of root's, named by the attacker);
- a `good.policy` planted beside root's `good.o` (a file, or a link to one of root's files);
- a location `net` flipped between a link to the source directory and one to the attacker's
  own directory (race: the replace-by-rename a sticky directory still allows its owner);
- a source subdirectory, or a def's pin_subdir, named `bpfloader_staging`;
- a `..data` link and `..` names of the attacker's, the kubelet's layout imitated (the loader
  reads a volume the kubelet wrote through root's `..data`: kubelet.py).

Each test fails on the loader before the threat model (commit 9cb7099) and passes with it, but
the last two: they fail on a loader that follows a `..data` whoever owns it (every one of root's
objects refused: a user could fail them all) and on one that lists `..` names (17415c4's
parent). The races are bounded (rounds and seconds) and count the attacker's wins.
"""

from __future__ import annotations

import ctypes
import io
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from bpfloader.journal import ConsoleReporter
from bpfloader.loader import run as loader_run
from tests.attack.conftest import ATTACKER, as_user, race
from tests.conftest import Run

pytestmark = pytest.mark.kernel

WHY = "only root may be able to change what the loader runs"
ROUNDS = 1000
SECONDS = 30.0

# The attacker's object: its map, open to everyone, is what a win pins.
ATTACKERS_OBJECT = """
#include <bpf_helpers.h>
DEFINE_BPF_MAP_UGM(pwned, ARRAY, int, uint64_t, 1, AID_ROOT, AID_ROOT, 0666);
DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, count_switches)
(void *ctx) {
    int key = 0;
    uint64_t *count = bpf_pwned_lookup_elem(&key);
    if (count) __sync_fetch_and_add(count, 1);
    return 1;
}
LICENSE("GPL");
"""

STAGING_SUBDIR_OBJECT = """
#include <bpf_helpers.h>
DEFINE_BPF_MAP_EXT(staged, ARRAY, int, uint32_t, 1, 0, AID_ROOT, AID_ROOT, 0600, "",
                   "bpfloader_staging", false, KVER_NONE, KVER_INF, BPFLOADER_MIN_VER,
                   BPFLOADER_MAX_VER, 0);
DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, tp_staged)
(void *ctx) {
    int key = 0;
    uint32_t one = 1;
    bpf_staged_update_elem(&key, &one, BPF_ANY);
    return 1;
}
LICENSE("GPL");
"""

GOOD_PROGRAM = "prog_good_tracepoint_sched_sched_switch"
GOOD_MAP = "map_good_switch_count"
KERNEL_ENTRIES = ("maps.debug", "progs.debug")


@pytest.fixture
def root_object(compile_bpf) -> bytes:
    """Root's good object (one map, root 0600, and one program)."""
    return compile_bpf("good_last.c").read_bytes()


@pytest.fixture
def attackers_object(compile_bpf) -> bytes:
    return compile_bpf(ATTACKERS_OBJECT, "attack.o").read_bytes()


@pytest.fixture
def source(sticky_source_dir: Path, root_object: bytes) -> Path:
    """The sticky source directory with root's good.o (root's, 0644) in it."""
    (sticky_source_dir / "good.o").write_bytes(root_object)
    os.chmod(sticky_source_dir / "good.o", 0o644)
    return sticky_source_dir


def load_in_process(source: Path, bpffs: Path, state_dir: Path) -> None:
    """A load run in this process (a race's round: no interpreter to start), quiet."""
    options = loader_run.LoadOptions(
        source_dir=str(source), pin_root=str(bpffs), state_dir=str(state_dir)
    )
    loader_run.load(options, ConsoleReporter(io.StringIO()))


@pytest.fixture
def load(bpfloader_cli, source: Path, bpffs: Path, attack_state_dir: Path) -> Callable[[], Run]:
    def run() -> Run:
        where = ("--dir", source, "--pin-root", bpffs, "--state-dir", attack_state_dir)
        done: Run = bpfloader_cli("load", *where)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    return run


def plant(work: Callable[[], object]) -> None:
    """`work()` done as the attacker."""

    def done() -> None:
        work()

    as_user(ATTACKER, done)


def write_as_attacker(path: Path, data: bytes) -> None:
    """A file of the attacker's own (0644), holding `data`."""

    def write() -> None:
        path.write_bytes(data)
        path.chmod(0o644)

    plant(write)


_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_EXCHANGE = 2


def flipper(link: Path, targets: tuple[str, str]) -> Callable[[], None]:
    """A racer's step, as the attacker: `link` and a spare link swapped (renameat2
    RENAME_EXCHANGE, one syscall: the name is never missing), so that `link` leads to each
    target in turn. Made at the first step: `link` to the first target, the spare to the
    second."""
    spare = link.with_name(f".{link.name}.spare")

    def step() -> None:
        if not spare.is_symlink():
            spare.symlink_to(targets[1])
        for _ in range(1000):
            if _libc.renameat2(
                AT_FDCWD, bytes(link), AT_FDCWD, bytes(spare), ctypes.c_uint(RENAME_EXCHANGE)
            ):
                raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))

    return step


def wipe(bpffs: Path, state_dir: Path) -> None:
    """Every pin and directory a run left (but the kernel's own entries), and its state."""
    for directory, dirs, files in os.walk(bpffs, topdown=False):
        for name in files:
            if directory != str(bpffs) or name not in KERNEL_ENTRIES:
                os.unlink(os.path.join(directory, name))
        for name in dirs:
            os.rmdir(os.path.join(directory, name))
    for entry in state_dir.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def refusal(path: Path, problem: str) -> str:
    return f"bpfloader: err: {path}: refused: {problem}; {WHY}"


def test_flipped_object_link(source, attackers_object, bpffs, attack_state_dir):
    """(a) `x.o` flipped between a link to root's good.o and one to the attacker's object: the
    trust check and the read must be of one file. A win: the attacker's 0666 map pinned."""
    write_as_attacker(source / "mine.bin", attackers_object)
    plant(lambda: (source / "x.o").symlink_to("good.o"))

    def attempt() -> bool:
        load_in_process(source, bpffs, attack_state_dir)
        assert (bpffs / GOOD_PROGRAM).exists()  # the run did load root's object
        won = (bpffs / "map_x_pwned").exists()
        wipe(bpffs, attack_state_dir)
        return won

    result = race(
        attempt, flipper(source / "x.o", ("good.o", "mine.bin")), rounds=ROUNDS, seconds=SECONDS
    )
    print(f"object link race: {result.wins} wins in {result.rounds} rounds, {result.seconds:.1f} s")
    assert result.rounds >= 50, result  # enough rounds ran to mean something
    assert result.wins == 0, result


def test_planted_link_to_a_root_object(source, load, bpffs):
    """(b) A link of the attacker's `x.o -> good.o` is not a second object of root's: it fails
    on one line, unread, and root's object loads."""
    plant(lambda: (source / "x.o").symlink_to("good.o"))
    run = load()
    assert refusal(source / "x.o", f"a symbolic link owned by uid {ATTACKER}") in (
        run.stderr.splitlines()
    ), run.stderr
    pins = {p.name for p in bpffs.iterdir()}
    assert {GOOD_MAP, GOOD_PROGRAM} <= pins
    assert not [p for p in pins if p.startswith(("map_x_", "prog_x_"))], pins


@pytest.mark.parametrize("planted", ["file", "link"])
def test_planted_policy_file(source, load, bpffs, planted):
    """(c) A `good.policy` the attacker put beside root's good.o (their file, opening the map
    to everyone; or their link to root's good.o, which is no TOML) does not fail root's object
    and is not applied: the object loads as it declares, with a warning naming the file."""
    policy = source / "good.policy"
    if planted == "file":
        plant(lambda: (policy.write_text('[maps]\nmode = "0666"\n'), policy.chmod(0o644)))
        why = f"owned by uid {ATTACKER}, not root (mode 0644; fix: chown root {policy})"
    else:
        plant(lambda: policy.symlink_to("good.o"))
        why = f"a symbolic link owned by uid {ATTACKER}"
    run = load()
    assert run.returncode == 0, run.stderr
    warning = f"bpfloader: warning: {source}/good.o: policy {policy}: not applied: {why}; "
    assert [line for line in run.stderr.splitlines() if line.startswith(warning)], run.stderr
    assert stat.S_IMODE((bpffs / GOOD_MAP).stat().st_mode) == 0o600


def test_flipped_location_link(source, attackers_object, bpffs, attack_state_dir):
    """(d) In a sticky directory the attacker may still rename over their own entries: a
    location `net` flipped (by rename) between a link to the source directory itself, whose
    good.o is root's, and a link to the attacker's own directory, whose good.o is theirs. A
    win: the attacker's 0666 map pinned under net/."""
    mine = source / "mine"
    plant(mine.mkdir)
    write_as_attacker(mine / "good.o", attackers_object)
    plant(lambda: (source / "net").symlink_to("."))

    def attempt() -> bool:
        load_in_process(source, bpffs, attack_state_dir)
        assert (bpffs / GOOD_PROGRAM).exists()
        won = (bpffs / "net" / "map_good_pwned").exists()
        wipe(bpffs, attack_state_dir)
        return won

    result = race(attempt, flipper(source / "net", (".", "mine")), rounds=ROUNDS, seconds=SECONDS)
    print(
        f"location link race: {result.wins} wins in {result.rounds} rounds, {result.seconds:.1f} s"
    )
    assert result.rounds >= 50, result
    assert result.wins == 0, result


def test_staging_name_as_a_source_subdirectory(source, root_object, load, bpffs):
    """(e) A location named `bpfloader_staging` would publish into the loader's private staging
    directory: each object in it fails on one line, and nothing is pinned for it."""
    location = source / "bpfloader_staging"
    location.mkdir(mode=0o755)
    (location / "good.o").write_bytes(root_object)
    run = load()
    assert (
        f"bpfloader: err: {location}/good.o: location directory 'bpfloader_staging' is "
        "reserved: bpfloader_staging is the loader's staging directory"
    ) in run.stderr.splitlines(), run.stderr
    assert (bpffs / GOOD_PROGRAM).exists()
    staging = bpffs / "bpfloader_staging"
    assert not staging.exists() or not list(staging.iterdir())


def test_staging_name_as_a_pin_subdir(compile_bpf, source, load, bpffs):
    """(e) A def's pin_subdir `bpfloader_staging` fails its object at planning, one line."""
    bad = source / "staged.o"
    bad.write_bytes(compile_bpf(STAGING_SUBDIR_OBJECT, "staged.o").read_bytes())
    run = load()
    assert (
        f"bpfloader: err: {bad}: maps: pin_subdir 'bpfloader_staging' is reserved: "
        "bpfloader_staging is the loader's staging directory"
    ) in run.stderr.splitlines(), run.stderr
    assert (bpffs / GOOD_PROGRAM).exists()
    staging = bpffs / "bpfloader_staging"
    assert not staging.exists() or not list(staging.iterdir())


def test_planted_kubelet_layout(source, attackers_object, load, bpffs):
    """(f) The attacker imitates a volume the kubelet wrote: their `..data` link to their own
    version directory `..mine`, holding their object as good.o, and a visible `x.o ->
    ..data/good.o`. Their `..data` is not followed (not root's): the directory is read as it
    is, root's good.o loads, nothing of theirs is pinned, and their link fails alone (before
    the scan looked for `..data`, a `..data` of root's would have been a location)."""
    mine = source / "..mine"
    plant(mine.mkdir)
    write_as_attacker(mine / "good.o", attackers_object)
    plant(lambda: (source / "..data").symlink_to("..mine"))
    plant(lambda: (source / "x.o").symlink_to("..data/good.o"))
    run = load()
    assert refusal(source / "x.o", f"a symbolic link owned by uid {ATTACKER}") in (
        run.stderr.splitlines()
    ), run.stderr
    pins = {p.name for p in bpffs.iterdir()}
    assert {GOOD_MAP, GOOD_PROGRAM} <= pins
    assert not [p for p in pins if "pwned" in p or p.startswith((".", "map_x_", "prog_x_"))], pins


def test_planted_writer_names(source, attackers_object, load, bpffs):
    """(g) Names starting with `..` are the kubelet's writer's: the attacker's `..x.o` and
    `..loc/good.o` are neither objects nor a location, not even refused: only root's loads."""
    write_as_attacker(source / "..x.o", attackers_object)
    plant((source / "..loc").mkdir)
    write_as_attacker(source / "..loc" / "good.o", attackers_object)
    run = load()
    assert run.returncode == 0, run.stderr
    assert "..x.o" not in run.stderr and "..loc" not in run.stderr, run.stderr
    assert {p.name for p in bpffs.iterdir()} == {GOOD_MAP, GOOD_PROGRAM, *KERNEL_ENTRIES}
