"""The sdist is the whole project: every file git tracks (tests/packaging/conftest.py's
project_files: in an unpacked sdist, every file of it), built offline by Debian's setuptools;
a wheel built from it carries the same package data; and its tests run from it, unpacked
outside the checkout: all of tests/obj, the symbol reader's, and a kernel test (a uprobe
attached by symbol, its object loaded into a private bpffs)."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from bpfloader.version import __version__
from tests.conftest import REPO
from tests.packaging.conftest import (
    DEBIAN_PYTHON,
    OFFLINE,
    SDIST_GENERATED,
    build_wheel,
    project_files,
    run,
)

TOP = f"bpfloader-{__version__}"
FROM_THE_SDIST = [
    "tests/obj",
    "tests/client/test_symbols.py",
    "tests/client/test_attach_tracing.py::test_uprobe_and_uretprobe_fire_on_a_function_of_a_built_binary",
]


@pytest.fixture(scope="module")
def sdist(project_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    build = f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))"
    name = run(*OFFLINE, DEBIAN_PYTHON, "-c", build, cwd=project_copy).split()[-1]
    return out / name


def expected_files() -> set[str]:
    """The project's files, a linked directory (bpfloader/systemd) as the files in it."""
    found = set()
    for name in project_files():
        path = REPO / name
        if path.is_symlink() and path.is_dir():
            found |= {f"{name}/{p.name}" for p in path.iterdir()}
        else:
            found.add(name)
    return found


def unpack(sdist: Path, into: Path) -> Path:
    """The sdist unpacked as a user would (tar), its top directory."""
    run("tar", "-xzf", sdist, "-C", into, cwd=into)
    return into / TOP


def test_the_sdist_holds_every_project_file(sdist: Path) -> None:
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if not m.isdir()]
    names = {m.name.removeprefix(f"{TOP}/") for m in members}
    generated = {n for n in names if n.split("/")[0] in SDIST_GENERATED}
    assert names - generated == expected_files()
    assert {"tests/conftest.py", "LICENSE", "Makefile", "scripts/install"} <= names
    assert "bpfloader.egg-info/SOURCES.txt" in generated


def test_a_wheel_built_from_the_sdist_carries_the_package_data(sdist: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(build_wheel(unpack(sdist, tmp_path), tmp_path)) as archive:
        names = set(archive.namelist())
    systemd = {n.removeprefix("systemd/") for n in expected_files() if n.startswith("systemd/")}
    assert {f"bpfloader/systemd/{n}" for n in systemd} <= names
    assert "bpfloader/include/bpf_helpers.h" in names


@pytest.mark.kernel
def test_the_sdists_tests_run_from_it(sdist: Path, tmp_path: Path) -> None:
    unpacked = unpack(sdist, tmp_path)
    imported = run(
        sys.executable, "-c", "import bpfloader; print(bpfloader.__file__)", cwd=unpacked
    )
    assert imported == f"{unpacked}/bpfloader/__init__.py\n"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *FROM_THE_SDIST],
        capture_output=True,
        text=True,
        cwd=unpacked,
        timeout=1200,
    )
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in summary and "skipped" not in summary, summary
    assert int(summary.split()[0]) > 500, summary
