"""What a load imports: boot pays for every module, so the load path imports what it uses and
nothing else, and an unchanged reload not even the object reader or the kernel side. Read from
`python -X importtime`, which lists every module a real process imported."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.libbpf_support import libbpf_object

pytestmark = pytest.mark.kernel

# Never on the load path: netlink and ELF libraries, the journal binding with a console target,
# the client library, policy files' TOML (no policy here), and what only some commands need.
NEVER = (
    "pyroute2",
    "elftools",
    "systemd",
    "bpfloader.client",
    "tomllib",
    "shutil",
    "tempfile",
    "socket",
    "signal",
    "concurrent.futures",  # with logging and traceback: parallel.py's workers are plain threads
)
# What an unchanged reload does without: it hashes files and checks pins, nothing more.
NOT_ON_UNCHANGED_RELOAD = (
    "bpfloader.obj.reader",
    "bpfloader.obj.elf",
    "bpfloader.obj.btf",
    "bpfloader.obj.spec",
    "bpfloader.loader.apply",
    "bpfloader.loader.kernel_objects",
    "bpfloader.kernel.programs",
    "bpfloader.kernel.maps",
)
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", re.MULTILINE)


def imported(command: str, source_dir: Path, bpffs: Path, state_dir: Path) -> set[str]:
    where = ["--dir", source_dir, "--pin-root", bpffs, "--state-dir", state_dir]
    where += ["--cache-dir", state_dir.with_name("cache-bpfloader")]
    args = [command, *map(str, where), "--log-target", "console"]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bpfloader", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "objects: 3 loaded, 0 skipped, 0 failed" in done.stdout, done.stdout
    return set(IMPORT_LINE.findall(done.stderr))


def _under(modules: set[str], names: tuple[str, ...]) -> set[str]:
    return {m for m in modules if any(m == n or m.startswith(n + ".") for n in names)}


def test_the_load_path_imports_only_what_it_uses(compile_bpf, source_dir, bpffs, state_dir):
    # Both formats, with BTF and DWARF (-g): the debug sections stay unread.
    shutil.copy(compile_bpf("myschedtp.c", "myschedtp.o", "-g"), source_dir)
    shutil.copy(compile_bpf("tc_counter.c", "tc_counter.o", "-g"), source_dir)
    shutil.copy(libbpf_object(compile_bpf, "libbpf_subprogs.c"), source_dir)

    load = imported("load", source_dir, bpffs, state_dir)
    # The list is real: the modules a load needs are in it, so an absence means something.
    assert {"bpfloader.obj.reader", "bpfloader.loader.apply", "threading"} <= load
    assert _under(load, NEVER) == set()

    reload = imported("reload", source_dir, bpffs, state_dir)
    assert {"bpfloader.loader.run", "bpfloader.loader.state", "hashlib"} <= reload
    assert _under(reload, NEVER + NOT_ON_UNCHANGED_RELOAD) == set()
