"""RLIMIT_NOFILE (issue 16, item 11): an object holds an fd per map and program while it loads,
so one of more maps than the usual soft limit (1024) needs the loader to raise it to the hard
one, which load, reload and check do as they start; when the hard limit is too low as well,
the object fails on one line naming itself and the limit, not a staging path.

The CLI runs in a child given the limits with setrlimit, as a unit's LimitNOFILE= would."""

from __future__ import annotations

import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, pins_in

pytestmark = pytest.mark.kernel

SOFT = 1024  # the kernel's and systemd's default soft limit
MAPS = 1100


def many_maps(count: int) -> str:
    maps = "\n".join(f"DEFINE_BPF_MAP(m{i}, ARRAY, int, int, 1);" for i in range(count))
    return f"""
#include <bpf_helpers.h>
{maps}
DEFINE_BPF_PROG("tracepoint/sched/sched_switch", AID_ROOT, AID_ROOT, touch)(void *ctx) {{
    int key = 0;
    int *v = bpf_m0_lookup_elem(&key);
    if (v) *v += 1;
    return 0;
}}
LICENSE("GPL");
"""


@pytest.fixture(scope="module")
def big_object(compile_bpf) -> Path:
    return compile_bpf(many_maps(MAPS), "many.o")


def run_limited(soft: int, hard: int, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """`python -m bpfloader ARGS` with RLIMIT_NOFILE set to (soft, hard) before it starts."""
    return subprocess.run(
        [sys.executable, "-m", "bpfloader", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)),
    )


def where(source_dir: Path, bpffs: Path, state_dir: Path) -> tuple[str | Path, ...]:
    return (
        *("--dir", source_dir, "--pin-root", bpffs, "--state-dir", state_dir),
        *("--cache-dir", state_dir.with_name("cache-bpfloader"), "--log-target", "console"),
    )


def test_an_object_of_more_maps_than_the_soft_limit_loads_once_it_is_raised(
    big_object, source_dir, bpffs, state_dir
):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard > MAPS + 100, f"this machine's hard RLIMIT_NOFILE ({hard}) is too low to test"
    shutil.copy(big_object, source_dir)
    run = run_limited(SOFT, hard, "load", *where(source_dir, bpffs, state_dir))
    assert run.returncode == 0, run.stderr
    assert " err: " not in run.stderr, run.stderr
    assert run.stdout.startswith("objects: 1 loaded, 0 skipped, 0 failed\n"), run.stdout
    assert len(pins_in(bpffs)) == MAPS + 1
    check = run_limited(SOFT, hard, "check", "--kernel", big_object)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"kernel: {MAPS} maps created, 1 programs loaded" in check.stdout


def test_with_the_hard_limit_too_low_the_object_fails_naming_itself_and_the_limit(
    big_object, source_dir, bpffs, state_dir
):
    shutil.copy(big_object, source_dir)
    path = source_dir / "many.o"
    line = (
        f"{path}: too many open files: the limit is {SOFT} (RLIMIT_NOFILE) and the object needs "
        f"more (it has {MAPS} maps and 1 program; raise LimitNOFILE=)"
    )
    run = run_limited(SOFT, SOFT, "load", *where(source_dir, bpffs, state_dir))
    assert run.returncode == 0, run.stderr  # not critical: the run goes on
    assert "Traceback" not in run.stderr, run.stderr
    errors = [entry for entry in run.stderr.splitlines() if entry.startswith("bpfloader: err:")]
    assert errors == [f"bpfloader: err: {line}"], run.stderr
    assert f"failed: {line}" in run.stdout.splitlines(), run.stdout
    assert pins_in(bpffs) == set()
    check = run_limited(SOFT, SOFT, "check", "--kernel", path)
    assert check.returncode == 1, check.stdout + check.stderr
    assert check.stdout.splitlines()[0] == f"FAIL {line}", check.stdout
