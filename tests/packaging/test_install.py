"""`make install DESTDIR=...`: what lands where, and that the installed copy works on its own.

The installed package is run from DESTDIR (on PYTHONPATH, ahead of the development checkout),
so a file missing from the package data shows here, not on a user's machine. The unit's
capability bounding set is tried on a real load: enough to pin with owners, and each of the
capabilities dropped below is one the load cannot do without.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, Compile, pins_in
from tests.packaging.conftest import OFFLINE

UNITS = [
    "bpfloader.service",
    "bpfloader-bpffs.service",
    "bpfloader-reload.service",
    "bpfloader.path",
]
MAX_OFFLINE_EXPOSURE = 3.0


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`make install DESTDIR=...` offline: in a network namespace of its own, without a network
    (Debian's setuptools builds the package; nothing is fetched from PyPI)."""
    root = tmp_path_factory.mktemp("destdir")
    done = subprocess.run(
        [*OFFLINE, "make", "-C", str(REPO), "install", f"DESTDIR={root}"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, f"make install failed:\n{done.stdout}\n{done.stderr}"
    yield root


def site_packages(root: Path) -> Path:
    (site,) = root.glob("usr/local/lib/python3*/*-packages")
    return site


def test_files_in_standard_places(installed: Path) -> None:
    for path in [
        "usr/local/bin/bpfloader",
        *(f"usr/local/lib/systemd/system/{unit}" for unit in UNITS),
        "usr/local/lib/systemd/catalog/bpfloader.catalog",
        "usr/local/share/doc/bpfloader/README.md",
        "etc/default/bpfloader",
    ]:
        assert (installed / path).is_file(), path
    # The man page and completions, as `make man` made them (tests/packaging/test_manual.py).
    for path, made in [
        ("usr/local/share/man/man8/bpfloader.8", "share/man/man8/bpfloader.8"),
        (
            "usr/local/share/bash-completion/completions/bpfloader",
            "share/bash-completion/completions/bpfloader",
        ),
        ("usr/local/share/zsh/site-functions/_bpfloader", "share/zsh/site-functions/_bpfloader"),
    ]:
        assert (installed / path).read_bytes() == (REPO / made).read_bytes(), path
    assert (installed / "etc/bpf").is_dir()
    package = site_packages(installed) / "bpfloader"
    for data in ["include/bpf_helpers.h", "include/gnu/stubs-32.h", "py.typed", "cli.py"]:
        assert (package / data).is_file(), data
    assert (installed / "usr/local/bin/bpfloader").read_text().startswith("#!/usr/bin/python3\n")


def test_units_name_the_installed_command(installed: Path) -> None:
    unit = (installed / "usr/local/lib/systemd/system/bpfloader.service").read_text()
    assert "ExecStart=/usr/local/bin/bpfloader load $BPFLOADER_OPTIONS" in unit
    assert "ExecReload=/usr/local/bin/bpfloader reload $BPFLOADER_OPTIONS" in unit
    for name in UNITS:
        text = (installed / "usr/local/lib/systemd/system" / name).read_text()
        for line in re.findall(r"^Exec\w*=(\S+)", text, re.MULTILINE):
            assert line.startswith("/usr/local/bin/") or line in ("mount", "systemctl"), line


def test_defaults_file_is_kept_on_reinstall(installed: Path) -> None:
    defaults = installed / "etc/default/bpfloader"
    defaults.write_text('BPFLOADER_OPTIONS="--lower-unprivileged-bpf-disabled"\n')
    subprocess.run(["make", "-C", str(REPO), "install", f"DESTDIR={installed}"], check=True)
    assert defaults.read_text() == 'BPFLOADER_OPTIONS="--lower-unprivileged-bpf-disabled"\n'


def test_unit_exposure_offline(installed: Path) -> None:
    """systemd-analyze's own score of the hardening, without booting (the boot test quotes the
    score of the running unit)."""
    unit = installed / "usr/local/lib/systemd/system/bpfloader.service"
    done = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", f"--root={installed}", str(unit)],
        capture_output=True,
        text=True,
    )
    match = re.search(r"Overall exposure level for bpfloader.service: ([\d.]+)", done.stdout)
    assert match, done.stdout + done.stderr
    assert float(match.group(1)) <= MAX_OFFLINE_EXPOSURE, done.stdout


def run_installed(
    installed: Path, *args: str, caps: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The installed package, as `python -m bpfloader ARGS` with DESTDIR's copy first on the path;
    under `setpriv --bounding-set CAPS` when given (what the unit's CapabilityBoundingSet does)."""
    env = {**os.environ, "PYTHONPATH": str(site_packages(installed))}
    command = [sys.executable, "-m", "bpfloader", *args]
    if caps is not None:
        command = ["setpriv", "--bounding-set", caps, "--", *command]
    # cwd: `python -m` puts the working directory first on the path; not the checkout's.
    return subprocess.run(
        command, capture_output=True, text=True, env=env, timeout=120, cwd=installed
    )


def unit_capabilities() -> list[str]:
    unit = (REPO / "systemd/bpfloader.service").read_text()
    (line,) = re.findall(r"^CapabilityBoundingSet=(.*)$", unit, re.MULTILINE)
    return line.split()


def setpriv_caps(caps: list[str]) -> str:
    return ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])


def test_installed_copy_is_the_one_running(installed: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import bpfloader; print(bpfloader.__file__)"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(site_packages(installed))},
        cwd=installed,
    )
    assert done.stdout.startswith(str(installed)), done.stdout


def test_installed_copy_builds_with_its_own_header(installed: Path, tmp_path: Path) -> None:
    done = run_installed(installed, "build", str(REPO / "etc/bpf/myschedtp.c"), "-o", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "myschedtp.o").stat().st_size > 0
    flags = run_installed(installed, "cflags").stdout
    assert str(site_packages(installed) / "bpfloader/include") in flags


@pytest.mark.kernel
def test_unit_capabilities_are_enough(
    installed: Path, compile_bpf: Compile, source_dir: Path, bpffs: Path, tmp_path: Path
) -> None:
    """The installed loader, limited to the unit's bounding set: loads, pins with the declared
    owners (root:adm), and reloads."""
    os.link(compile_bpf("myschedtp.c"), source_dir / "myschedtp.o")
    where = [
        "--dir",
        str(source_dir),
        "--pin-root",
        str(bpffs),
        "--state-dir",
        str(tmp_path / "st"),
    ]
    where += ["--cache-dir", str(tmp_path / "cache"), "--log-target", "console"]
    caps = setpriv_caps(unit_capabilities())
    for command in ("load", "reload"):
        done = run_installed(installed, command, *where, caps=caps)
        assert done.returncode == 0, f"{command} under {caps}:\n{done.stdout}\n{done.stderr}"
    assert pins_in(bpffs) == {
        "map_myschedtp_cpu_pid_map",
        "prog_myschedtp_tracepoint_sched_sched_switch",
    }
    assert (bpffs / "map_myschedtp_cpu_pid_map").stat().st_gid == 4


@pytest.mark.kernel
@pytest.mark.parametrize(
    "dropped, says",
    [
        ("CAP_CHOWN", "Operation not permitted"),  # pins get their declared owner
        ("CAP_BPF CAP_SYS_ADMIN", "EPERM"),  # maps and programs at all
    ],
)
def test_unit_capabilities_are_needed(
    installed: Path,
    compile_bpf: Compile,
    source_dir: Path,
    bpffs: Path,
    tmp_path: Path,
    dropped: str,
    says: str,
) -> None:
    """Without some of the unit's capabilities the object fails, and leaves no pin behind."""
    os.link(compile_bpf("myschedtp.c"), source_dir / "myschedtp.o")
    caps = [c for c in unit_capabilities() if c not in dropped.split()]
    done = run_installed(
        installed,
        "load",
        *["--dir", str(source_dir), "--pin-root", str(bpffs), "--state-dir", str(tmp_path / "st")],
        *["--cache-dir", str(tmp_path / "cache"), "--log-target", "console"],
        caps=setpriv_caps(caps),
    )
    assert "0 loaded, 0 skipped, 1 failed" in done.stdout, done.stdout + done.stderr
    assert says in done.stdout + done.stderr
    assert pins_in(bpffs) == set()
