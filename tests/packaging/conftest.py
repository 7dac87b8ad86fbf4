"""The project as a clean clone has it, for the packaging tests to build from: what git tracks
in a checkout; in an unpacked sdist (no .git; its PKG-INFO says so), every file of it but those
the sdist's build added. Built from a copy, so that nothing the build writes (egg-info) lands
in the tree the tests run from, and nothing untracked in it reaches a package.

Offline: the builds and installs run in a network namespace of their own with no network in it
(`unshare --map-root-user --net`, which needs no root where user namespaces are allowed), so a
step that would fetch from PyPI fails instead of fetching.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

OFFLINE = ["unshare", "--map-root-user", "--net", "--"]
DEBIAN_PYTHON = "/usr/bin/python3"  # with Debian's python3-setuptools, python3-wheel, -venv
# What building the sdist adds to it, and what running tests in a tree leaves there.
SDIST_GENERATED = {"PKG-INFO", "setup.cfg", "bpfloader.egg-info"}
CACHES = {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}


def project_files() -> list[str]:
    """The project's files, relative to REPO (a symbolic link as one entry)."""
    if (REPO / ".git").exists():
        listed = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True
        ).stdout
        return sorted(os.fsdecode(p) for p in listed.split(b"\0") if p)
    assert (REPO / "PKG-INFO").is_file(), f"{REPO}: neither a git checkout nor an unpacked sdist"
    found = []
    for directory, dirs, files in os.walk(REPO):
        at = Path(directory).relative_to(REPO)
        dirs[:] = [
            d for d in dirs if d not in CACHES and not (at == Path() and d in SDIST_GENERATED)
        ]
        found += [str(at / f) for f in files if not (at == Path() and f in SDIST_GENERATED)]
    return sorted(found)


def copy_project(to: Path) -> Path:
    for name in project_files():
        source, target = REPO / name, to / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            os.symlink(os.readlink(source), target)
        else:
            shutil.copy2(source, target)
    return to


@pytest.fixture(scope="session")
def project_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("project") / "bpfloader")


def run(*command: str | Path, cwd: Path, timeout: float = 600) -> str:
    """Run a command, fail the test with its output if it fails; its stdout."""
    done = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )
    assert done.returncode == 0, (
        f"{command} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    return done.stdout


def build_wheel(source: Path, out: Path) -> Path:
    """The wheel of the project at `source`, built offline by Debian's python3 and its own
    setuptools (no build isolation: nothing is fetched), into `out`."""
    run(*OFFLINE, DEBIAN_PYTHON, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps",
        "--no-index", "--no-cache-dir", "-w", out, f"{source}/", cwd=out)  # fmt: skip
    (built,) = out.glob("bpfloader-*.whl")
    return built
