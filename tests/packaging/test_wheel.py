"""The wheel, as a pip user gets it: built offline by Debian's own setuptools (the build-system
floor is bookworm's python3-setuptools), installed offline into a fresh virtual environment
outside the checkout (no runtime dependency is left to fetch), and working there: `--version`,
`check`, `build` with its own header, a load into a private bpffs; `systemd-units --install`
writes units that run that environment's own command, which `systemd-analyze verify` accepts
(and refuses the bare `bpfloader` of the templates). The journal from such an environment is
for the journal's own tests (tests/loader/test_journal.py), which run the same command."""

from __future__ import annotations

import email
import os
import re
import subprocess
import zipfile
from pathlib import Path

import pytest

from bpfloader import units
from bpfloader.version import __version__
from tests.conftest import REPO, Compile, pins_in
from tests.loader.test_journal import entries, journald  # noqa: F401  (a fixture)
from tests.packaging.conftest import DEBIAN_PYTHON, OFFLINE, build_wheel, run

UNITS = [
    "bpfloader.service",
    "bpfloader-bpffs.service",
    "bpfloader-reload.service",
    "bpfloader.path",
]
SYSTEMD_FILES = [*UNITS, "bpfloader.catalog", "bpfloader.default"]


@pytest.fixture(scope="module")
def wheel(project_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(project_copy, tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment of Debian's python3, the wheel installed into it offline:
    without --no-deps, so that a runtime dependency would fail the install."""
    where = tmp_path_factory.mktemp("venv")
    root = where / "env"
    run(*OFFLINE, DEBIAN_PYTHON, "-m", "venv", root, cwd=where)
    run(*OFFLINE, root / "bin/pip", "install", "--no-index", "--no-cache-dir", wheel, cwd=where)
    return root


def in_venv(venv: Path, *args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`bpfloader ARGS` of the virtual environment, run from `cwd` (not the checkout)."""
    return subprocess.run(
        [str(venv / "bin/bpfloader"), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def test_debians_setuptools_meets_the_build_floor() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    (floor,) = re.findall(r'^requires = \["setuptools>=(\d+)"\]', pyproject, re.MULTILINE)
    debian = run(DEBIAN_PYTHON, "-c", "import setuptools; print(setuptools.__version__)", cwd=REPO)
    assert int(debian.split(".")[0]) >= int(floor), debian


def test_the_wheel_holds_the_license_metadata_and_package_data(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"bpfloader-{__version__}.dist-info"
        meta = email.message_from_bytes(archive.read(f"{dist_info}/METADATA"))
        license_text = archive.read(f"{dist_info}/LICENSE").decode()
    assert "Apache License" in license_text and "Version 2.0, January 2004" in license_text
    assert meta["License"] == "Apache-2.0"  # setuptools < 77's field (77 on: License-Expression)
    assert meta.get_all("License-File") == ["LICENSE"]
    assert "Typing :: Typed" in meta.get_all("Classifier")
    assert "Operating System :: POSIX :: Linux" in meta.get_all("Classifier")
    assert meta.get_all("Project-URL")
    runtime = [r for r in meta.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert runtime == []
    for name in SYSTEMD_FILES:
        assert f"bpfloader/systemd/{name}" in names, name
    for data in ("bpfloader/include/bpf_helpers.h", "bpfloader/py.typed", "bpfloader/units.py"):
        assert data in names, data
    assert not any(n.startswith("tests/") for n in names)


def test_the_venv_runs_its_own_copy_and_nothing_else(venv: Path, tmp_path: Path) -> None:
    python = str(venv / "bin/python")
    where = run(python, "-c", "import bpfloader; print(bpfloader.__file__)", cwd=tmp_path)
    assert where.startswith(str(venv)), where
    installed = run(python, "-m", "pip", "list", "--format=freeze", cwd=tmp_path)
    assert {line.split("==")[0] for line in installed.split()} <= {"bpfloader", "pip", "setuptools"}


def test_version_check_and_build_work_in_the_venv(
    venv: Path, compile_bpf: Compile, tmp_path: Path
) -> None:
    version = in_venv(venv, "--version", cwd=tmp_path)
    assert (version.returncode, version.stdout) == (0, f"bpfloader {__version__}\n")
    checked = in_venv(venv, "check", compile_bpf("myschedtp.c"), cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "map_myschedtp_cpu_pid_map" in checked.stdout
    built = in_venv(venv, "build", REPO / "etc/bpf/myschedtp.c", "-o", tmp_path, cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    flags = in_venv(venv, "cflags", cwd=tmp_path).stdout
    assert f"{venv}/lib/python3" in flags and "bpfloader/include" in flags


@pytest.mark.kernel
def test_the_venvs_command_loads(
    venv: Path,
    compile_bpf: Compile,
    source_dir: Path,
    bpffs: Path,
    state_dir: Path,
    cache_dir: Path,
) -> None:
    os.link(compile_bpf("myschedtp.c"), source_dir / "myschedtp.o")
    where = ["--dir", source_dir, "--pin-root", bpffs, "--state-dir", state_dir]
    where += ["--cache-dir", cache_dir]
    done = in_venv(venv, "load", *where, "--log-target", "console", cwd=source_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    assert pins_in(bpffs) == {
        "map_myschedtp_cpu_pid_map",
        "prog_myschedtp_tracepoint_sched_sched_switch",
    }


@pytest.mark.kernel
@pytest.mark.usefixtures("journald")
def test_the_venvs_command_reaches_the_journal(
    venv: Path,
    compile_bpf: Compile,
    source_dir: Path,
    bpffs: Path,
    state_dir: Path,
    cache_dir: Path,
) -> None:
    """A plain pip install has no journal binding and needs none: the venv's bpfloader logs
    to a real journald (started by the test where none listens) and the entries arrive."""
    os.link(compile_bpf("myschedtp.c"), source_dir / "myschedtp.o")
    where = ["--dir", source_dir, "--pin-root", bpffs, "--state-dir", state_dir]
    where += ["--cache-dir", cache_dir]
    done = in_venv(venv, "load", *where, "--log-target", "journal", cwd=source_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    pin = str(bpffs / "map_myschedtp_cpu_pid_map")
    found = entries(f"BPF_PIN={pin}")
    assert found, f"no journal entry names {pin}"
    assert found[0]["BPF_OBJECT"] == str(source_dir / "myschedtp.o")
    listed = subprocess.run(
        [
            venv / "bin/python",
            "-I",
            "-c",
            "import importlib.util as u; print(u.find_spec('systemd'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert listed.stdout.strip() == "None"  # no binding in the venv: the protocol is ours


def verify(*units: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", *map(str, units)], capture_output=True, text=True
    )


def test_systemd_units_install_units_that_run_the_venvs_command(venv: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    done = in_venv(venv, "systemd-units", "--install", "--prefix", prefix, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    command = venv / "bin/bpfloader"
    unit_dir = prefix / "lib/systemd/system"
    written = [
        *(unit_dir / u for u in UNITS),
        prefix / "lib/systemd/catalog/bpfloader.catalog",
        prefix / "etc/default/bpfloader",
        prefix / "share/doc/bpfloader/README.md",
    ]
    assert done.stdout.splitlines() == [
        *(f"wrote {path}" for path in written),
        f"warning: bpfloader.service cannot run {command}: PrivateTmp=yes gives it a /tmp and "
        "/var/tmp of its own (install it in /opt)",
        f"staged: systemd reads no units from {unit_dir} (--prefix /usr/local does)",
    ]
    service = (unit_dir / "bpfloader.service").read_text()
    assert f"\nExecStart={command} load $BPFLOADER_OPTIONS\n" in service
    assert f"\nExecReload={command} reload $BPFLOADER_OPTIONS\n" in service
    assert f"\nEnvironmentFile=-{prefix}/etc/default/bpfloader\n" in service
    for unit in UNITS:
        text = (unit_dir / unit).read_text()
        assert f"Documentation=file://{prefix}/share/doc/bpfloader/README.md\n" in text
        assert not re.search(r"^Exec\w*=bpfloader", text, re.MULTILINE), unit
    assert (prefix / "share/doc/bpfloader/README.md").read_text() == (
        REPO / "README.md"
    ).read_text()
    for name, path in [("bpfloader.catalog", written[4]), ("bpfloader.default", written[5])]:
        assert path.read_text() == (REPO / "systemd" / name).read_text()
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {"0o644"}

    verified = verify(*(unit_dir / u for u in UNITS))
    assert (verified.returncode, verified.stdout, verified.stderr) == (0, "", "")
    templates = verify(REPO / "systemd/bpfloader.service")  # what the issue found
    assert templates.returncode != 0
    assert "Command bpfloader is not executable" in templates.stderr


def test_systemd_units_without_install_prints_and_writes_nothing(
    venv: Path, tmp_path: Path
) -> None:
    prefix = tmp_path / "prefix"
    done = in_venv(venv, "systemd-units", "--prefix", prefix, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"# {prefix}/lib/systemd/system/bpfloader.service\n")
    assert f"ExecStart={venv}/bin/bpfloader load $BPFLOADER_OPTIONS" in done.stdout
    assert f"# {prefix}/lib/systemd/catalog/bpfloader.catalog\n" in done.stdout
    assert not prefix.exists()


def test_the_defaults_file_is_kept_and_the_units_replaced(venv: Path, tmp_path: Path) -> None:
    prefix = tmp_path / "prefix"
    defaults = prefix / "etc/default/bpfloader"
    defaults.parent.mkdir(parents=True)
    defaults.write_text('BPFLOADER_OPTIONS="--lower-unprivileged-bpf-disabled"\n')
    service = prefix / "lib/systemd/system/bpfloader.service"
    service.parent.mkdir(parents=True)
    service.write_text("[Service]\nExecStart=/old/bpfloader load\n")
    done = in_venv(venv, "systemd-units", "--install", "--prefix", prefix, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"kept {defaults} (it exists)" in done.stdout.splitlines()
    assert defaults.read_text() == 'BPFLOADER_OPTIONS="--lower-unprivileged-bpf-disabled"\n'
    assert f"ExecStart={venv}/bin/bpfloader load" in service.read_text()
    assert sorted(p.name for p in service.parent.iterdir()) == sorted(UNITS)  # no temp left


def test_a_command_path_systemd_would_misread_is_quoted(venv: Path, tmp_path: Path) -> None:
    """Run by a path with a space, '%' and '$' (a link to the venv's command): the units name
    it quoted and escaped, and systemd-analyze finds the command there."""
    odd = tmp_path / "odd dir %i $HOME"
    odd.mkdir()
    (odd / "bpfloader").symlink_to(venv / "bin/bpfloader")
    prefix = tmp_path / "prefix"
    done = subprocess.run(
        [str(odd / "bpfloader"), "systemd-units", "--install", "--prefix", str(prefix)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    service = prefix / "lib/systemd/system/bpfloader.service"
    quoted = f'"{tmp_path}/odd dir %%i $HOME/bpfloader"'
    assert f"\nExecStart={quoted} load $BPFLOADER_OPTIONS\n" in service.read_text()
    verified = verify(service, prefix / "lib/systemd/system/bpfloader-bpffs.service")
    assert (verified.returncode, verified.stderr) == (0, "")


def test_what_systemd_units_refuses(venv: Path, tmp_path: Path) -> None:
    as_module = subprocess.run(
        [str(venv / "bin/python"), "-m", "bpfloader", "systemd-units"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert as_module.returncode == 2
    assert as_module.stderr.endswith(
        "__main__.py: not run as a command (python -m bpfloader?): run the bpfloader command "
        "the units are to start, e.g. /opt/venv/bin/bpfloader systemd-units\n"
    )
    spaced = in_venv(venv, "systemd-units", "--prefix", tmp_path / "a b", cwd=tmp_path)
    assert spaced.returncode == 2
    assert spaced.stderr == (
        f"bpfloader: {tmp_path}/a b: a prefix with a space, quote, backslash, '%', '$' or a "
        "non-ASCII character, which unit files would read otherwise\n"
    )


def test_where_the_services_sandbox_cannot_run_the_command() -> None:
    """The warning `systemd-units --install` gives, and the settings of the unit it names."""
    service = (REPO / "systemd/bpfloader.service").read_text()
    assert "\nProtectHome=yes\n" in service and "\nPrivateTmp=yes\n" in service
    for path, hidden_by in [
        ("/home/me/venv/bin/bpfloader", "ProtectHome=yes"),
        ("/root/venv/bin/bpfloader", "ProtectHome=yes"),
        ("/var/tmp/venv/bin/bpfloader", "PrivateTmp=yes"),
        ("/opt/venv/bin/bpfloader", None),
        ("/usr/local/bin/bpfloader", None),
        ("/homework/bin/bpfloader", None),
    ]:
        why = units.hidden_from_service(path)
        assert (why and why.split()[0]) == hidden_by, path
