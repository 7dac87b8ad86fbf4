"""Attacks on the object cache (loader/object_cache.py) by a local unprivileged user (a real
uid), against the loader running as root. The cache is read with pickle, so an entry the
attacker wrote would run the attacker's code as root: each attack plants a well-formed entry
(the right magic, digest and key: none of it is secret) whose pickle makes a directory where
only root can, and wins if it appears.

- a cache directory others can write (0777, as a hand-made one may be): an entry planted in it;
- a cache directory made root's alone after the attacker wrote in it: the attacker's file left
  under one object's entry name, and a link under another's to a file of root's whose bytes
  the attacker chose (as a log root writes can hold them).

Each would win on a loader that read any entry of its directory (the planted payloads are
shown to run when read); the loader refuses the first directory, and reads neither the file
nor the link, parsing those objects and replacing both.
"""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bpfloader.loader.object_cache import current_identity, decoded, encoded, entry_key, entry_name
from bpfloader.loader.source import _content_hash
from tests.attack.conftest import ATTACKER, as_user
from tests.cache_support import planted_payload
from tests.conftest import REPO, Compile, pins_in
from tests.reload_support import swap_pins

pytestmark = pytest.mark.kernel

EXPECTED_PINS = {
    "map_myschedtp_cpu_pid_map",
    "prog_myschedtp_tracepoint_sched_sched_switch",
    *swap_pins("alpha"),
}


def _load(
    source: Path, pin_root: Path, state: Path, cache: Path
) -> subprocess.CompletedProcess[str]:
    argv = ["load", "--dir", source, "--pin-root", pin_root, "--state-dir", state]
    argv += ["--cache-dir", cache, "--log-target", "console"]
    return subprocess.run(
        [sys.executable, "-m", "bpfloader", *map(str, argv)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def _planted(obj: Path, marker: Path) -> tuple[str, bytes]:
    """The entry name of `obj` and an entry for it that makes `marker` when read, as the
    attacker works them out: the key's parts are the object, the loader's files, uname."""
    key = entry_key(current_identity(), str(obj), _content_hash(obj.read_bytes(), None))
    entry = encoded(key, planted_payload(marker))
    # The control: read as an entry of this key, it runs (then a miss: it is not a spec).
    assert decoded(entry, key) is None and marker.is_dir()
    marker.rmdir()
    return entry_name(key), entry


@pytest.fixture
def victim(open_dir: Path) -> Path:
    """Where only root can make anything: a made `pwned` there is the attacker's win."""
    path = open_dir / "victim"
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def root_source(open_dir: Path, compile_bpf: Compile) -> Path:
    """A source directory only root can write (as /etc/bpf), with two objects."""
    path = open_dir / "src"
    path.mkdir(mode=0o755)
    shutil.copy(compile_bpf("myschedtp.c"), path)
    shutil.copy(compile_bpf("r_swap.c", "alpha.o", "-DVERSION=1"), path)
    return path


@pytest.fixture
def open_cache(open_dir: Path) -> Path:
    """A cache directory every user can write (0777), as a careless `--cache-dir` could be."""
    cache = open_dir / "cache"
    cache.mkdir()
    cache.chmod(0o777)
    return cache


def test_an_entry_planted_in_a_cache_directory_others_can_write_is_never_read(
    root_source: Path, bpffs: Path, attack_state_dir: Path, open_cache: Path, victim: Path
) -> None:
    cache = open_cache
    marker = victim / "pwned"
    name, entry = _planted(root_source / "myschedtp.o", marker)

    def plant() -> None:
        (cache / name).write_bytes(entry)

    as_user(ATTACKER, plant)
    run = _load(root_source, bpffs, attack_state_dir, cache)
    assert run.returncode == 0, run.stderr
    assert not marker.exists()
    assert "2 loaded, 0 skipped, 0 failed" in run.stdout
    assert pins_in(bpffs) == EXPECTED_PINS
    warnings = [line for line in run.stderr.splitlines() if "object cache" in line]
    assert (
        len(warnings) == 1 and f"not used: directory {cache} is writable by others" in warnings[0]
    )
    assert [p.name for p in cache.iterdir()] == [name]  # not read, not replaced: not used at all
    assert (cache / name).stat().st_uid == ATTACKER


def test_a_file_or_link_another_uid_left_in_the_cache_directory_is_not_read(
    root_source: Path, bpffs: Path, attack_state_dir: Path, open_cache: Path, victim: Path
) -> None:
    cache = open_cache
    marker = victim / "pwned"
    file_name, file_entry = _planted(root_source / "myschedtp.o", marker)
    link_name, link_entry = _planted(root_source / "alpha.o", marker)
    roots_file = victim / "log"  # root's, its bytes the attacker's
    roots_file.write_bytes(link_entry)
    roots_file.chmod(0o644)
    victim.chmod(0o711)  # the link's target reachable, the directory still root's alone

    def plant() -> None:
        (cache / file_name).write_bytes(file_entry)
        (cache / link_name).symlink_to(roots_file)

    as_user(ATTACKER, plant)
    cache.chmod(0o700)  # the administrator closes the directory: what was in it stays
    run = _load(root_source, bpffs, attack_state_dir, cache)
    assert run.returncode == 0, run.stderr
    assert not marker.exists()
    assert "object cache" not in run.stderr  # the directory is used
    assert "2 loaded, 0 skipped, 0 failed" in run.stdout
    assert pins_in(bpffs) == EXPECTED_PINS
    for name in (file_name, link_name):  # each object parsed, its entry root's own now
        st = (cache / name).lstat()
        assert stat.S_ISREG(st.st_mode) and st.st_uid == 0, name
    assert roots_file.read_bytes() == link_entry  # the link was replaced, not written through
