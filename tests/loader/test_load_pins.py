"""`bpfloader load` pins every map and program at its contract name with its declared owner
and mode, honours every def field (pin_subdir, shared, uid/gid/mode, kernel-version gates,
optional, critical, `$` variants) and locations, and lists each pin in its summary.

Objects are built from tests/bpf/k_*.c; every expectation below is written out by hand.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

import pytest

from bpfloader.kernel import pins as kpins
from bpfloader.kernel import programs as kprogs
from tests.conftest import pins_in

pytestmark = pytest.mark.kernel

PROG, DIR = 0o440, 0o755


def running_kver() -> str:
    """KVER(a,b,c) of the running kernel, as C text for -D flags."""
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", os.uname().release)
    assert match, os.uname().release
    major, minor, patch = (int(g or 0) for g in match.groups())
    return f"KVER({major},{minor},{patch})"


@dataclass(frozen=True)
class Row:
    """One pin line of the summary table."""

    path: str
    action: str
    uid: int
    gid: int
    mode: int
    kernel_id: int


def summary_rows(stdout: str, root: Path) -> list[Row]:
    rows = []
    for line in stdout.splitlines():
        if not line.startswith(f"{root}/"):
            continue
        path, action, owner, mode, kernel_id, *_ = line.split()
        uid, gid = owner.split(":")
        rows.append(
            Row(
                os.path.relpath(path, root),
                action,
                int(uid),
                int(gid),
                int(mode, 8),
                int(kernel_id),
            )
        )
    return rows


def owners(root: Path, rels: set[str] | None = None) -> dict[str, tuple[int, int, int]]:
    """rel path -> (uid, gid, mode) of every pin (or of `rels`) under root."""
    result = {}
    for rel in pins_in(root) if rels is None else rels:
        st = os.stat(root / rel)
        result[rel] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    return result


def dirs_in(root: Path) -> dict[str, tuple[int, int, int]]:
    """rel path -> (uid, gid, mode) of every directory under root."""
    result = {}
    for directory, subdirs, _ in os.walk(root):
        for name in subdirs:
            path = os.path.join(directory, name)
            st = os.stat(path)
            result[os.path.relpath(path, root)] = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    return result


def check_summary(stdout: str, root: Path) -> list[Row]:
    """The summary lists each pin on disk once per object using it, with its true owner."""
    rows = summary_rows(stdout, root)
    assert {r.path for r in rows} == pins_in(root)
    on_disk = owners(root)
    for row in rows:
        assert (row.uid, row.gid, row.mode) == on_disk[row.path], row
    return rows


def load(bpfloader_cli, source_dir: Path, bpffs: Path, *extra: str):
    return bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, *extra)


def test_every_map_macro_and_program_owner(compile_bpf, source_dir, bpffs, bpfloader_cli):
    shutil.copy(compile_bpf("k_owners.c"), source_dir)
    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    assert owners(bpffs) == {
        "map_k_owners_m_plain": (0, 0, 0o600),
        "map_k_owners_m_ro": (0, 1001, 0o440),
        "map_k_owners_m_gwo": (0, 1002, 0o620),
        "map_k_owners_m_gro": (0, 1003, 0o640),
        "map_k_owners_m_grw": (0, 1004, 0o660),
        "map_k_owners_m_ugm": (1005, 1006, 0o604),
        "k_sub/deeper/map_k_owners_m_sub": (1009, 1010, 0o664),
        "prog_k_owners_tracepoint_sched_sched_switch": (1007, 1008, PROG),
        "k_progsub/prog_k_owners_tracepoint_sched_sched_wakeup": (1011, 1012, PROG),
    }
    assert dirs_in(bpffs) == {
        "k_sub": (0, 0, DIR),
        "k_sub/deeper": (0, 0, DIR),
        "k_progsub": (0, 0, DIR),
    }
    # The fixture mounts the bpffs 0700 (as systemd does): the loader opened it for traversal.
    assert stat.S_IMODE(os.stat(bpffs).st_mode) == stat.S_ISVTX | 0o711
    assert sorted(os.listdir(bpffs)) == [
        "k_progsub",
        "k_sub",
        "map_k_owners_m_gro",
        "map_k_owners_m_grw",
        "map_k_owners_m_gwo",
        "map_k_owners_m_plain",
        "map_k_owners_m_ro",
        "map_k_owners_m_ugm",
        "maps.debug",
        "prog_k_owners_tracepoint_sched_sched_switch",
        "progs.debug",
    ]  # and no staging directory left behind
    rows = check_summary(run.stdout, bpffs)
    assert [(r.path, r.action) for r in rows] == [
        ("map_k_owners_m_plain", "create"),
        ("map_k_owners_m_ro", "create"),
        ("map_k_owners_m_gwo", "create"),
        ("map_k_owners_m_gro", "create"),
        ("map_k_owners_m_grw", "create"),
        ("map_k_owners_m_ugm", "create"),
        ("k_sub/deeper/map_k_owners_m_sub", "create"),
        ("prog_k_owners_tracepoint_sched_sched_switch", "load"),
        ("k_progsub/prog_k_owners_tracepoint_sched_sched_wakeup", "load"),
    ]
    assert len({r.kernel_id for r in rows if r.path.split("/")[-1].startswith("map_")}) == 7
    assert "objects: 1 loaded, 0 skipped, 0 failed" in run.stdout.splitlines()


def test_dir_mode_option_sets_made_directories(compile_bpf, source_dir, bpffs, bpfloader_cli):
    shutil.copy(compile_bpf("k_owners.c"), source_dir)
    run = load(bpfloader_cli, source_dir, bpffs, "--dir-mode", "0750")
    assert run.returncode == 0, run.stderr
    assert dirs_in(bpffs) == {
        "k_sub": (0, 0, 0o750),
        "k_sub/deeper": (0, 0, 0o750),
        "k_progsub": (0, 0, 0o750),
    }


def test_location_subdirectory_and_pin_subdir_override(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    (source_dir / "net_shared").mkdir()
    shutil.copy(compile_bpf("k_location.c"), source_dir / "net_shared")
    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    assert owners(bpffs) == {
        "net_shared/map_k_location_loc_here": (0, 1030, 0o640),
        "k_elsewhere/map_k_location_loc_there": (1031, 1032, 0o640),
        "net_shared/prog_k_location_tracepoint_sched_sched_switch": (1033, 1034, PROG),
    }
    assert dirs_in(bpffs) == {"net_shared": (0, 0, DIR), "k_elsewhere": (0, 0, DIR)}
    check_summary(run.stdout, bpffs)


def test_shared_map_is_pinned_once_and_reused(compile_bpf, source_dir, bpffs, bpfloader_cli):
    shutil.copy(compile_bpf("k_shared.c", "k_shared_a.o"), source_dir)
    shutil.copy(compile_bpf("k_shared.c", "k_shared_b.o", "-DPROG_FN=tp_shared_b"), source_dir)
    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    assert owners(bpffs) == {
        "map__shared_counts": (0, 1020, 0o640),
        "map_k_shared_a_own_map": (0, 0, 0o600),
        "map_k_shared_b_own_map": (0, 0, 0o600),
        "prog_k_shared_a_tracepoint_sched_sched_switch": (0, 1020, PROG),
        "prog_k_shared_b_tracepoint_sched_sched_switch": (0, 1020, PROG),
    }
    rows = check_summary(run.stdout, bpffs)
    assert [(r.path, r.action) for r in rows] == [
        ("map__shared_counts", "create"),
        ("map_k_shared_a_own_map", "create"),
        ("prog_k_shared_a_tracepoint_sched_sched_switch", "load"),
        ("map__shared_counts", "reuse"),
        ("map_k_shared_b_own_map", "create"),
        ("prog_k_shared_b_tracepoint_sched_sched_switch", "load"),
    ]
    shared = [r for r in rows if r.path == "map__shared_counts"]
    assert shared[0].kernel_id == shared[1].kernel_id
    assert "objects: 2 loaded, 0 skipped, 0 failed" in run.stdout.splitlines()


def test_kernel_version_gates_around_running_kernel(compile_bpf, source_dir, bpffs, bpfloader_cli):
    shutil.copy(compile_bpf("k_kver.c", None, f"-DRUN_KVER={running_kver()}"), source_dir)
    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    # min <= running passes, running < max passes; running == max and min == running+1 do not.
    assert owners(bpffs) == {
        "map_k_kver_m_from_now_in": (0, 0, 0o600),
        "map_k_kver_m_until_next_in": (0, 0, 0o600),
        "prog_k_kver_tracepoint_sched_sched_switch": (0, 0, PROG),
    }
    check_summary(run.stdout, bpffs)
    skipped = [line for line in run.stderr.splitlines() if " skipped: " in line]
    for name in (
        "map m_from_next_out",
        "map m_until_now_out",
        "program kv_until_now_out",  # programs by their function's name
        "program kv_from_next_out",
        "program kv_uses_gated_map",  # optional, uses a gated-out map
    ):
        assert sum(f"k_kver.o: {name} skipped: " in line for line in skipped) == 1, name
    assert "objects: 1 loaded, 0 skipped, 0 failed" in run.stdout.splitlines()


@pytest.mark.parametrize(
    ("split", "winner"),
    [("RUN", "sw_from"), ("RUN+1", "sw_before")],
    ids=["split-at-running", "split-above-running"],
)
def test_exactly_one_variant_is_pinned_at_the_base_name(
    compile_bpf, source_dir, bpffs, bpfloader_cli, split, winner
):
    kver = running_kver() + ("+1" if split == "RUN+1" else "")
    shutil.copy(compile_bpf("k_variants.c", None, f"-DSPLIT_KVER={kver}"), source_dir)
    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    assert owners(bpffs) == {"prog_k_variants_tracepoint_sched_sched_switch": (0, 0, PROG)}
    fd = kpins.open_pinned(str(bpffs / "prog_k_variants_tracepoint_sched_sched_switch"))
    try:
        assert kprogs.program_info(fd).name == winner
    finally:
        os.close(fd)
    (row,) = check_summary(run.stdout, bpffs)
    assert row.action == "load"


def test_optional_program_rejected_by_verifier_is_skipped(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    shutil.copy(compile_bpf("k_reject.c", "k_optional.o", "-DREJECT_OPTIONAL"), source_dir)
    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    assert owners(bpffs) == {
        "map_k_optional_rj_map": (0, 0, 0o600),
        "k_rj_sub/map_k_optional_rj_sub": (0, 0, 0o600),
        "prog_k_optional_tracepoint_sched_sched_switch": (0, 0, PROG),
    }
    warnings = [
        line
        for line in run.stderr.splitlines()
        if line.startswith("bpfloader: warning: ")
        and f"{source_dir}/k_optional.o: tracepoint/sched/sched_wakeup: rejected by the "
        "verifier at k_reject.c:"
        in line  # the verifier's answer, where it stopped
    ]
    assert len(warnings) == 1, run.stderr
    assert not [line for line in run.stderr.splitlines() if line.startswith("bpfloader: err")]
    check_summary(run.stdout, bpffs)
    assert "objects: 1 loaded, 0 skipped, 0 failed" in run.stdout.splitlines()


NEIGHBOURS = {
    "prog_execsnoop_tracepoint_syscalls_sys_enter_execve": (0, 0, PROG),
    "map_myschedtp_cpu_pid_map": (0, 4, 0o640),
    "prog_myschedtp_tracepoint_sched_sched_switch": (0, 4, PROG),
}


@pytest.mark.parametrize(
    ("flags", "exit_status"),
    [((), 0), (("-DREJECT_CRITICAL",), 1)],
    ids=["not-critical", "critical"],
)
def test_mandatory_program_rejected_fails_only_its_object(
    compile_bpf, source_dir, bpffs, bpfloader_cli, flags, exit_status
):
    # execsnoop.o sorts before the failing object, myschedtp.o after it: both still load.
    shutil.copy(compile_bpf("k_reject.c", "k_mandatory.o", *flags), source_dir)
    for example in ("execsnoop.c", "myschedtp.c"):
        shutil.copy(compile_bpf(example), source_dir)
    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == exit_status, run.stderr
    assert owners(bpffs) == NEIGHBOURS  # not one pin of k_mandatory, not even its good program
    assert dirs_in(bpffs) == {}  # its pin_subdir was never made
    errors = [
        line
        for line in run.stderr.splitlines()
        if line.startswith(f"bpfloader: {'crit' if exit_status else 'err'}: ")
        and f"{source_dir}/k_mandatory.o: tracepoint/sched/sched_wakeup: rejected by the "
        "verifier at k_reject.c:"
        in line
    ]
    assert len(errors) == 1, run.stderr
    rows = check_summary(run.stdout, bpffs)
    assert {r.action for r in rows} == {"create", "load"}
    lines = run.stdout.splitlines()
    counts = "2 loaded, 0 skipped, 1 failed" + (" (1 critical)" if exit_status else "")
    assert f"objects: {counts}" in lines
    (failed,) = [line for line in lines if line.startswith("failed")]
    critical = " (critical)" if exit_status else ""
    assert failed.startswith(f"failed{critical}: {source_dir}/k_mandatory.o: ")


def test_critical_object_that_loads_exits_zero(compile_bpf, source_dir, bpffs, bpfloader_cli):
    obj = compile_bpf("k_reject.c", "k_crit_ok.o", "-DREJECT_CRITICAL", "-DREJECT_OPTIONAL")
    shutil.copy(obj, source_dir)
    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    assert owners(bpffs) == {
        "map_k_crit_ok_rj_map": (0, 0, 0o600),
        "k_rj_sub/map_k_crit_ok_rj_sub": (0, 0, 0o600),
        "prog_k_crit_ok_tracepoint_sched_sched_switch": (0, 0, PROG),
    }
    assert "objects: 1 loaded, 0 skipped, 0 failed" in run.stdout.splitlines()


def test_examples_and_test_objects_together(compile_bpf, source_dir, bpffs, bpfloader_cli):
    """Everything in one directory: every pin listed once, owners as declared."""
    for example in ("execsnoop.c", "myschedtp.c", "k_owners.c"):
        shutil.copy(compile_bpf(example), source_dir)
    (source_dir / "net_shared").mkdir()
    shutil.copy(compile_bpf("k_location.c"), source_dir / "net_shared")
    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    rows = check_summary(run.stdout, bpffs)
    assert len(rows) == 3 + 9 + 3
    assert len({r.kernel_id for r in rows if "/prog_" in f"/{r.path}"}) == 5
    assert "objects: 4 loaded, 0 skipped, 0 failed" in run.stdout.splitlines()
