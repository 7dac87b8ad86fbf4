"""The attack suite's fixtures: a local unprivileged attacker (a real second uid, and a third one
as a victim where it matters), the places the README allows that such a user can write to (a
sticky world-writable source directory, a pin root mounted by hand, mode 1777), and a bounded
race: a racer process run as the attacker against a loader run as root, N rounds at most and a
time limit, counting the attacker's wins."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bpfloader.kernel import pins as kpins
from bpfloader.kernel.syscall import mount
from tests.conftest import child_result, fork_child

ATTACKER = 65534  # nobody
VICTIM = 65533  # a second unprivileged user, whose files the attacker must not reach either


def become(uid: int) -> None:
    """Drop to `uid` (and a group of the same number, no supplementary groups) for good."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def as_user(uid: int, work: Callable[[], Any]) -> Any:
    """`work()` run in a child process as `uid`; its JSON-able result (its exception fails)."""

    def switched() -> Any:
        become(uid)
        return work()

    return child_result(*fork_child(switched))


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's own tmp is 0700): root's, mode 0755, under
    /tmp. Removed after the test."""
    path = Path(tempfile.mkdtemp(prefix="bpfloader-attack-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def sticky_source_dir(open_dir: Path) -> Path:
    """A source directory like /tmp: root's, world-writable and sticky (the README allows it)."""
    path = open_dir / "etc-bpf"
    path.mkdir()
    path.chmod(0o1777)
    return path


@pytest.fixture
def hand_mounted_pin_root(open_dir: Path) -> Iterator[Path]:
    """A bpffs mounted as `mount -t bpf bpf DIR` mounts it: no options, so its root is 1777."""
    path = open_dir / "bpffs"
    path.mkdir()
    mount("bpf", str(path), "bpf")
    try:
        yield path
    finally:
        kpins.unmount(str(path))


@pytest.fixture
def attack_state_dir(open_dir: Path) -> Path:
    """The loader's state directory for the test (root's, 0755, as /run/bpfloader)."""
    path = open_dir / "run-bpfloader"
    path.mkdir(mode=0o755)
    return path


@dataclass
class RaceResult:
    rounds: int
    wins: int
    seconds: float


@contextlib.contextmanager
def racer(uid: int, step: Callable[[], None]) -> Iterator[int]:
    """A process running `step()` in a loop as `uid` while the block runs; stopped (by its pid)
    at the end. Exceptions in a step are ignored: the racer keeps trying."""
    pid = os.fork()
    if pid == 0:
        try:
            become(uid)
            while True:
                with contextlib.suppress(Exception):
                    step()
        finally:
            os._exit(0)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


def race(
    attempt: Callable[[], bool],
    step: Callable[[], None],
    *,
    rounds: int,
    seconds: float,
    uid: int = ATTACKER,
    stop_at_first_win: bool = False,
) -> RaceResult:
    """Run `attempt()` (as root; True when the attacker won that round) up to `rounds` times or
    for `seconds`, whichever ends first, with a racer running `step()` as `uid` throughout."""
    wins = done = 0
    started = time.monotonic()
    with racer(uid, step):
        while done < rounds and time.monotonic() - started < seconds:
            done += 1
            if attempt():
                wins += 1
                if stop_at_first_win:
                    break
    return RaceResult(done, wins, time.monotonic() - started)
