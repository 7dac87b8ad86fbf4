"""Pin-side safety: the loader never follows a symbolic link in the pin root, and its staging
directory is a private directory of its own on the pin root's bpffs, cleaned of leftovers.

bpffs holds symbolic links as well as pins; each test plants one where the loader would
look and checks that it is refused by name while the object it would have redirected stays
untouched and the other objects load.
"""

from __future__ import annotations

import io
import os
import shutil
import stat
from pathlib import Path

import pytest

from bpfloader.journal import ConsoleReporter
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import pins as kpins
from bpfloader.loader.naming import STAGING_DIR
from bpfloader.loader.pin_root import PinRoot
from tests.conftest import pins_in

pytestmark = pytest.mark.kernel

ARRAY = 2  # enum bpf_map_type
MYSCHEDTP = {"map_myschedtp_cpu_pid_map", "prog_myschedtp_tracepoint_sched_sched_switch"}
EXECSNOOP = {"prog_execsnoop_tracepoint_syscalls_sys_enter_execve"}


@pytest.fixture
def examples(compile_bpf, source_dir: Path) -> Path:
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    shutil.copy(compile_bpf("execsnoop.c"), source_dir)
    return source_dir


def foreign_map(directory: Path) -> tuple[Path, int]:
    """A map pinned by someone else, and its id: what a planted link would point at."""
    directory.mkdir(exist_ok=True)
    fd = kmaps.create_map("foreign", ARRAY, 4, 8, 1, 0)
    try:
        kpins.pin(fd, str(directory / "foreign"))
        return directory / "foreign", kmaps.map_info(fd).id
    finally:
        os.close(fd)


def test_a_link_where_a_map_pin_goes_is_refused(examples, bpffs, bpfloader_cli):
    target, target_id = foreign_map(bpffs / "elsewhere")
    os.symlink(target, bpffs / "map_myschedtp_cpu_pid_map")
    run = bpfloader_cli("load", "--dir", examples, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    errors = [line for line in run.stderr.splitlines() if "myschedtp.o" in line and "err" in line]
    assert len(errors) == 1, run.stderr
    assert f"{bpffs}/map_myschedtp_cpu_pid_map is a symbolic link" in errors[0]
    assert "never follows links" in errors[0]
    assert os.path.islink(bpffs / "map_myschedtp_cpu_pid_map")  # left as it was
    assert kmaps.map_info(kpins.open_pinned(str(target))).id == target_id
    assert pins_in(bpffs) >= EXECSNOOP
    assert not pins_in(bpffs) & {"prog_myschedtp_tracepoint_sched_sched_switch"}


def test_a_linked_location_directory_is_refused(compile_bpf, source_dir, bpffs, bpfloader_cli):
    (source_dir / "loc").mkdir()
    shutil.copy(compile_bpf("myschedtp.c"), source_dir / "loc")
    shutil.copy(compile_bpf("execsnoop.c"), source_dir)
    (bpffs / "real").mkdir()
    os.symlink(bpffs / "real", bpffs / "loc")
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    assert f"{bpffs}/loc is a symbolic link" in run.stderr
    assert os.listdir(bpffs / "real") == []  # nothing made through the link
    assert pins_in(bpffs) >= EXECSNOOP


def test_unload_leaves_a_pin_replaced_by_a_link(examples, bpffs, bpfloader_cli):
    bpfloader_cli("load", "--dir", examples, "--pin-root", bpffs, check=True)
    target, _ = foreign_map(bpffs / "elsewhere")
    pin = bpffs / "map_myschedtp_cpu_pid_map"
    os.unlink(pin)
    os.symlink(target, pin)
    run = bpfloader_cli("unload", "--pin-root", bpffs)
    assert f"not removing {pin}" in run.stderr
    assert os.path.islink(pin) and target.exists()
    assert "prog_myschedtp_tracepoint_sched_sched_switch" not in pins_in(bpffs)


def test_staging_leftovers_of_an_interrupted_run_are_removed(examples, bpffs, bpfloader_cli):
    staging = bpffs / STAGING_DIR
    staging.mkdir(mode=0o777)
    os.chmod(staging, 0o777)
    os.chown(staging, 40123, 40123)  # as if another user had made it
    foreign_map(staging / "nested")
    fd = kmaps.create_map("stale", ARRAY, 4, 4, 1, 0)
    kpins.pin(fd, str(staging / "pin_1_1"))
    os.close(fd)
    os.symlink("/", staging / "link")
    run = bpfloader_cli("load", "--dir", examples, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    assert not staging.exists()  # emptied, then removed when the run ended
    assert pins_in(bpffs) == MYSCHEDTP | EXECSNOOP
    assert os.path.isdir("/proc")  # the link's target was not touched


def test_a_staging_link_is_removed_never_followed(examples, bpffs, bpfloader_cli, tmp_path):
    """The staging name is the loader's: a link there is removed (not followed), and the run
    makes its own private directory instead."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, bpffs / STAGING_DIR)
    run = bpfloader_cli("load", "--dir", examples, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    assert pins_in(bpffs) == MYSCHEDTP | EXECSNOOP
    assert not os.path.lexists(bpffs / STAGING_DIR)  # removed, then its own removed at the end
    assert os.listdir(elsewhere) == []


def test_a_staging_dir_on_another_filesystem_is_refused(examples, bpffs, bpfloader_cli):
    staging = bpffs / STAGING_DIR
    staging.mkdir()
    kpins.mount_bpffs(str(staging))
    try:
        run = bpfloader_cli("load", "--dir", examples, "--pin-root", bpffs)
    finally:
        kpins.unmount(str(staging))
    assert run.returncode == 2, run.stderr
    assert "is not on the pin root's bpf filesystem" in run.stderr
    assert pins_in(bpffs) == set()


def test_staging_is_private_while_the_loader_uses_it(bpffs):
    """Checked in-process: a staging directory another user owns (and could have filled) is
    removed, and the run's own is root's, 0700 and empty."""
    staging = bpffs / STAGING_DIR
    staging.mkdir()
    (staging / "planted").mkdir()
    os.chown(staging, 40123, 40123)
    os.chmod(staging, 0o777)
    with PinRoot.open(str(bpffs), ConsoleReporter(io.StringIO())):
        st = os.lstat(staging)
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o700, 0, 0)
        assert os.listdir(staging) == []
