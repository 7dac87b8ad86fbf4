"""Attacks on `bpfloader status` (issue 16, items 9 and 10), run by root against a pin root the
attacker can write in (a bpffs mounted by hand, 1777) and a source directory whose file names
the attacker chose: status must neither crash, nor open a pin through the attacker's link, nor
print a name that forges a line or reaches root's terminal."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
from pathlib import Path

import pytest

from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import pins as kpins
from bpfloader.obj.bpftypes import MapType
from tests.attack.conftest import ATTACKER, as_user, race

pytestmark = pytest.mark.kernel

DEPTH = 1200  # beyond Python's recursion limit (1000)
DEPTH_BOUND = 64  # bpfloader.loader.status.MAX_DEPTH, as its docstring and the README say

ONE_MAP = """
#include <bpf_helpers.h>
DEFINE_BPF_MAP(m, ARRAY, int, int, 1);
DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, touch)(void *ctx) {
    int key = 0;
    int *v = bpf_m_lookup_elem(&key);
    if (v) *v += 1;
    return 0;
}
LICENSE("GPL");
"""
# Two file names an attacker would choose: FILENAME (cut at the last '@') is a plain `x`, so the
# object loads and pins as any other, while its path carries a forged line and escape sequences
# (clear the screen; set the terminal's title).
FORGED = "bpfloader: info: all good, nothing to see"
LOADS = f"x@\n{FORGED}\x1b[2J.o"
FAILS = "y@\nforged\x1b]0;owned\x07.o"


def status(bpfloader_cli, source_dir: Path, pin_root: Path, *flags: str):
    return bpfloader_cli("status", *flags, "--dir", source_dir, "--pin-root", pin_root)


def test_a_chain_of_directories_deeper_than_recursion_goes_is_walked_and_reported(
    hand_mounted_pin_root, source_dir, bpfloader_cli
):
    root = hand_mounted_pin_root

    def build_chain() -> bool:
        os.chdir(root)
        os.symlink("nowhere", "a_link")
        for _ in range(DEPTH):
            os.mkdir("d")
            os.chdir("d")
        os.symlink("nowhere", "bottom")
        return True

    assert as_user(ATTACKER, build_chain)
    run = status(bpfloader_cli, source_dir, root)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr and "RecursionError" not in run.stderr, run.stderr
    deep = f"{root}{'/d' * (DEPTH_BOUND + 1)}/"
    assert run.stdout.splitlines()[-3:] == [
        "not made by bpfloader:",
        f"  {root}/a_link",
        f"  {deep}  (not looked into: more than {DEPTH_BOUND} directories below the pin root)",
    ], run.stdout
    report = json.loads(status(bpfloader_cli, source_dir, root, "--json").stdout)
    assert report["foreign_pins"] == [f"{root}/a_link", deep]
    from bpfloader.loader.status import MAX_DEPTH

    assert MAX_DEPTH == DEPTH_BOUND


_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
RENAME_EXCHANGE = 2


def exchange(a: Path, b: Path) -> None:
    """renameat2(RENAME_EXCHANGE): the racer's flip, the two names swapped in one step."""
    if _libc.renameat2(AT_FDCWD, bytes(a), AT_FDCWD, bytes(b), ctypes.c_uint(RENAME_EXCHANGE)):
        raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


def pinned_map(path: Path, uid: int = 0, mode: int = 0o600) -> int:
    fd = kmaps.create_map("m", MapType.ARRAY, 4, 4, 1, 0)
    try:
        kpins.pin(fd, str(path))
        os.chown(path, uid, uid)
        os.chmod(path, mode)
        return kmaps.map_info(fd).id
    finally:
        os.close(fd)


def test_a_pin_swapped_for_a_link_is_never_opened_through_it(
    compile_bpf, hand_mounted_pin_root, source_dir, bpfloader_cli
):
    """x.o's map is pinned for the attacker (as a load pins a map declared for that uid), in
    the sticky pin root; the attacker owns it and a link to a root-only pin beside it, and
    swaps the two names as fast as it can. A win: status reports the root-only pin's object
    as x.o's map."""
    root = hand_mounted_pin_root
    shutil.copy(compile_bpf(ONE_MAP, "x.o"), source_dir)
    own = pinned_map(root / "map_x_m", uid=ATTACKER)
    secret = pinned_map(root / "secret")

    def plant_link() -> bool:
        os.symlink(root / "secret", root / "flip")
        return True

    assert as_user(ATTACKER, plant_link)
    seen: list[int | None] = []

    def attempt() -> bool:
        run = status(bpfloader_cli, source_dir, root, "--json")
        assert run.returncode == 0, run.stderr
        (obj,) = json.loads(run.stdout)["objects"]
        (pin,) = obj["maps"]
        seen.append(pin["id"])
        return pin["id"] == secret

    # Without the racer, status sees the real pin as itself (how a round that loses looks
    # depends on the racer's speed: the link, or the pin, at the moment status looks).
    assert not attempt()
    assert seen == [own]

    result = race(attempt, lambda: exchange(root / "flip", root / "map_x_m"), rounds=40, seconds=90)
    print(f"link race: {result.wins} wins in {result.rounds} rounds, {result.seconds:.1f} s")
    assert result.wins == 0, result
    assert set(seen) <= {own, None}


def escaped(name: str) -> str:
    """How a name prints: as the console log prints it (errors.one_line)."""
    return name.replace("\n", "\\n").replace("\x1b", "\\x1b").replace("\x07", "\\x07")


def lines_naming(output: str, name: str) -> list[str]:
    return [line for line in output.splitlines() if escaped(name) in line]


def assert_clean(output: str) -> None:
    """Nothing that forges a line or reaches the terminal as a control sequence."""
    assert "\x1b" not in output and "\x07" not in output, output
    assert not any(line.startswith((FORGED, "forged")) for line in output.splitlines()), output


def test_names_with_a_newline_or_escape_sequences_print_as_one_escaped_line(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    """status, the dry-run and the summary (and the console log) each print one escaped line
    for each object; `y` fails (its map is over the ceiling given), `x` loads."""
    shutil.copy(compile_bpf(ONE_MAP, "x.o"), source_dir / LOADS)
    shutil.copy(compile_bpf(ONE_MAP.replace(", 1);", ", 4096);"), "y.o"), source_dir / FAILS)
    where = ("--dir", source_dir, "--pin-root", bpffs, "--max-map-memory", "16K")
    dry = bpfloader_cli("load", "--dry-run", *where)
    assert dry.returncode == 3, dry.stderr  # y would fail (not critical)
    assert_clean(dry.stdout + dry.stderr)
    assert lines_naming(dry.stdout, LOADS) == [f"{source_dir}/{escaped(LOADS)}:"]
    assert len(lines_naming(dry.stdout, FAILS)) == 1, dry.stdout
    assert lines_naming(dry.stdout, FAILS)[0].startswith(f"{source_dir}/{escaped(FAILS)}: FAIL: ")

    load = bpfloader_cli("load", *where)
    assert load.returncode == 0, load.stderr
    assert_clean(load.stdout + load.stderr)
    assert lines_naming(load.stdout, LOADS) == []  # loaded: the summary names its pins
    (failed,) = lines_naming(load.stdout, FAILS)
    assert failed.startswith(f"failed: {source_dir}/{escaped(FAILS)}: maps: map 'm': "), failed

    shown = status(bpfloader_cli, source_dir, bpffs)
    assert shown.returncode == 0, shown.stderr
    assert_clean(shown.stdout + shown.stderr)
    assert lines_naming(shown.stdout, LOADS) == [f"{source_dir}/{escaped(LOADS)}: loaded"]
    (failed,) = lines_naming(shown.stdout, FAILS)
    assert failed.startswith(f"{source_dir}/{escaped(FAILS)}: failed: maps: map 'm': "), failed
    report = json.loads(status(bpfloader_cli, source_dir, bpffs, "--json").stdout)
    assert sorted(o["path"] for o in report["objects"]) == [
        f"{source_dir}/{LOADS}",
        f"{source_dir}/{FAILS}",
    ]
