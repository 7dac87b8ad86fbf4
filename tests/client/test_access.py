"""Pin modes are what decide access: a child process that drops root to uid U / gid G opens a
group-readable map read-only and is refused read-write; another uid/gid is refused entirely.

The child changes into the bpffs root before dropping privileges and opens pins by relative
path, so the test's own 0700 temporary directories are out of the way while the bpffs root
and its subdirectories (whose modes the loader sets) are still searched as U/G.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bpfloader.client import BpfMap, Program
from bpfloader.errors import KernelError
from bpfloader.kernel import pins as kpins
from tests.conftest import in_child

pytestmark = pytest.mark.kernel

READER_UID, READER_GID = 1234, 4321  # k_access.c: acc_* maps are root:4321, acc_owned is 1234
STRANGER_UID, STRANGER_GID = 1235, 4322

GRO = "map_k_access_acc_gro"
GRW = "map_k_access_acc_grw"
OWNED = "map_k_access_acc_owned"
SUB_GRO = "acc_sub/map_k_access_acc_sub_gro"
PROG = "prog_k_access_tracepoint_sched_sched_process_free"  # 0:4321 0440


def as_user(
    cwd: Path, uid: int, gid: int, groups: list[int], work: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """Run `work` in a forked child in `cwd` as uid/gid/groups; its JSON result comes back."""

    def switched() -> dict[str, Any]:
        os.chdir(cwd)
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
        result = work()
        result["ids"] = [os.getuid(), os.geteuid(), os.getgid(), sorted(os.getgroups())]
        return result

    result: dict[str, Any] = in_child(switched)
    assert result.pop("ids") == [uid, uid, gid, sorted(groups)]
    return result


def outcome(action: Callable[[], Any]) -> Any:
    """The action's result, or the errno name of the KernelError it raised."""
    try:
        return action()
    except KernelError as e:
        return errno.errorcode[e.errno]


def try_open(path: str, readonly: bool) -> Callable[[], str]:
    def action() -> str:
        os.close(kpins.open_pinned(path, readonly=readonly))
        return "ok"

    return action


def read_value(path: str, key: int) -> Callable[[], int]:
    def action() -> int:
        with BpfMap.open(path, key="i", value="I", readonly=True) as m:
            return int(m[key])

    return action


def write_value(path: str, key: int, value: int, readonly: bool) -> Callable[[], str]:
    def action() -> str:
        with BpfMap.open(path, key="i", value="I", readonly=readonly) as m:
            m[key] = value
        return "ok"

    return action


@pytest.fixture
def loaded(compile_bpf, source_dir, bpffs, bpfloader_cli) -> Path:
    shutil.copy(compile_bpf("k_access.c"), source_dir)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    for rel, value in ((GRO, 77), (GRW, 78), (OWNED, 79), (SUB_GRO, 80)):
        with BpfMap.open(str(bpffs / rel), key="i", value="I") as m:
            m[1] = value
    return bpffs


def test_pin_modes_as_declared(loaded):
    modes = {}
    for rel in (GRO, GRW, OWNED, SUB_GRO, PROG, "acc_sub"):
        st = os.stat(loaded / rel)
        modes[rel] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    assert modes == {
        GRO: (0, READER_GID, 0o640),
        GRW: (0, READER_GID, 0o660),
        OWNED: (READER_UID, 0, 0o600),
        SUB_GRO: (0, READER_GID, 0o640),
        PROG: (0, READER_GID, 0o440),
        "acc_sub": (0, 0, 0o755),
    }
    # mounted 0700 like systemd's /sys/fs/bpf; the loader made it searchable by all
    assert stat.S_IMODE(os.stat(loaded).st_mode) == stat.S_ISVTX | 0o711


def test_reader_group_opens_read_only_and_is_refused_read_write(loaded):
    def work() -> dict[str, Any]:
        return {
            "gro_ro": outcome(try_open(GRO, readonly=True)),
            "gro_read": outcome(read_value(GRO, 1)),
            "gro_rw": outcome(try_open(GRO, readonly=False)),
            "gro_write_through_ro_fd": outcome(write_value(GRO, 1, 5, readonly=True)),
            "sub_ro": outcome(try_open(SUB_GRO, readonly=True)),
            "sub_read": outcome(read_value(SUB_GRO, 1)),
            "sub_rw": outcome(try_open(SUB_GRO, readonly=False)),
            "grw_write": outcome(write_value(GRW, 2, 1000, readonly=False)),
            "owned_ro": outcome(try_open(OWNED, readonly=True)),
        }

    assert as_user(loaded, READER_UID + 1, READER_GID, [], work) == {
        "gro_ro": "ok",
        "gro_read": 77,
        "gro_rw": "EACCES",
        "gro_write_through_ro_fd": "EPERM",
        "sub_ro": "ok",
        "sub_read": 80,
        "sub_rw": "EACCES",
        "grw_write": "ok",
        "owned_ro": "EACCES",
    }
    with BpfMap.open(str(loaded / GRO), key="i", value="I", readonly=True) as m:
        assert m[1] == 77  # the refused write changed nothing
    with BpfMap.open(str(loaded / GRW), key="i", value="I", readonly=True) as m:
        assert m[2] == 1000  # the group's write landed


def test_supplementary_group_is_enough(loaded):
    def work() -> dict[str, Any]:
        return {"gro_read": outcome(read_value(GRO, 1)), "gro_rw": outcome(try_open(GRO, False))}

    assert as_user(loaded, 5000, 5000, [READER_GID], work) == {
        "gro_read": 77,
        "gro_rw": "EACCES",
    }


def test_owner_uid_opens_its_map_read_write(loaded):
    def work() -> dict[str, Any]:
        return {
            "owned_write": outcome(write_value(OWNED, 2, 1234, readonly=False)),
            "owned_read": outcome(read_value(OWNED, 1)),
        }

    assert as_user(loaded, READER_UID, STRANGER_GID, [], work) == {
        "owned_write": "ok",
        "owned_read": 79,
    }


def test_other_uid_and_gid_are_refused_entirely(loaded):
    def work() -> dict[str, Any]:
        return {
            f"{rel}:{'ro' if readonly else 'rw'}": outcome(try_open(rel, readonly))
            for rel in (GRO, GRW, OWNED, SUB_GRO)
            for readonly in (True, False)
        }

    assert as_user(loaded, STRANGER_UID, STRANGER_GID, [], work) == {
        f"{rel}:{mode}": "EACCES" for rel in (GRO, GRW, OWNED, SUB_GRO) for mode in ("ro", "rw")
    }


def test_a_pin_root_left_0700_hides_every_pin(loaded):
    """The control for the loader's chmod of the pin root: without it, modes are moot."""
    os.chmod(loaded, 0o700)

    def work() -> dict[str, Any]:
        return {"gro_ro": outcome(try_open(GRO, True)), "sub_ro": outcome(try_open(SUB_GRO, True))}

    assert as_user(loaded, READER_UID, READER_GID, [], work) == {
        "gro_ro": "EACCES",
        "sub_ro": "EACCES",
    }


def test_loader_reopens_a_0700_pin_root(compile_bpf, source_dir, bpffs, bpfloader_cli):
    assert stat.S_IMODE(os.stat(bpffs).st_mode) == stat.S_ISVTX | 0o700  # as mounted
    shutil.copy(compile_bpf("k_access.c"), source_dir)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    assert stat.S_IMODE(os.stat(bpffs).st_mode) == stat.S_ISVTX | 0o711
    assert f"made pin root {bpffs} traversable" in run.stderr

    def work() -> dict[str, Any]:
        return {"gro_read": outcome(read_value(GRO, 3))}

    assert as_user(bpffs, READER_UID, READER_GID, [], work) == {"gro_read": 0}


def test_subdirectory_mode_decides_reach(compile_bpf, source_dir, bpffs, bpfloader_cli):
    shutil.copy(compile_bpf("k_access.c"), source_dir)
    bpfloader_cli(
        "load", "--dir", source_dir, "--pin-root", bpffs, "--dir-mode", "0700", check=True
    )
    assert stat.S_IMODE(os.stat(bpffs / "acc_sub").st_mode) == 0o700

    def work() -> dict[str, Any]:
        return {"gro_ro": outcome(try_open(GRO, True)), "sub_ro": outcome(try_open(SUB_GRO, True))}

    assert as_user(bpffs, READER_UID, READER_GID, [], work) == {"gro_ro": "ok", "sub_ro": "EACCES"}


def test_program_pin_opens_read_only_for_its_group_only(loaded):
    """Measured on 6.18: a program pin 0440 root:G opens with BPF_F_RDONLY for group G (and
    such an fd can be attached), read-write it is refused; any other uid/gid is refused."""

    def work() -> dict[str, Any]:
        return {"rw": outcome(try_open(PROG, False)), "ro": outcome(try_open(PROG, True))}

    assert as_user(loaded, READER_UID, READER_GID, [], work) == {"rw": "EACCES", "ro": "ok"}
    assert as_user(loaded, STRANGER_UID, STRANGER_GID, [], work) == {
        "rw": "EACCES",
        "ro": "EACCES",
    }


def test_group_member_opens_the_program_read_only_through_the_client(loaded):
    """A 0440 root:G program pin: the group opens it with readonly=True and reads its info;
    read-write is refused, and a stranger is refused both."""

    def open_program(readonly: bool) -> Callable[[], str]:
        def action() -> str:
            with Program.open(PROG, readonly=readonly) as prog:
                return prog.info.name

        return action

    reader = as_user(
        loaded,
        READER_UID,
        READER_GID,
        [],
        lambda: {"ro": outcome(open_program(True)), "rw": outcome(open_program(False))},
    )
    assert reader == {"ro": "acc_prog", "rw": "EACCES"}
    stranger = as_user(
        loaded, STRANGER_UID, STRANGER_GID, [], lambda: {"ro": outcome(open_program(True))}
    )
    assert stranger == {"ro": "EACCES"}
