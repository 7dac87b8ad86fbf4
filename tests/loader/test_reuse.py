"""A second `load` over existing pins reuses them (same kernel objects, map contents kept); a
pin of another shape at a map's or program's path fails the object, names what differs, and
leaves no new pin of that object."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from bpfloader.client import BpfMap
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import pins as kpins
from bpfloader.kernel import programs as kprogs
from tests.conftest import pins_in

pytestmark = pytest.mark.kernel

HASH, PERCPU_HASH, LRU_HASH = 1, 5, 9  # enum bpf_map_type
SOCKET_FILTER = 1  # enum bpf_prog_type
BPF_F_NO_PREALLOC = 1

MYSCHEDTP = {"map_myschedtp_cpu_pid_map", "prog_myschedtp_tracepoint_sched_sched_switch"}
K_OWNERS = {
    "map_k_owners_m_plain",
    "map_k_owners_m_ro",
    "map_k_owners_m_gwo",
    "map_k_owners_m_gro",
    "map_k_owners_m_grw",
    "map_k_owners_m_ugm",
    "k_sub/deeper/map_k_owners_m_sub",
    "prog_k_owners_tracepoint_sched_sched_switch",
    "k_progsub/prog_k_owners_tracepoint_sched_sched_wakeup",
}


def summary(stdout: str, root: Path) -> list[tuple[str, str, int]]:
    """(pin, action, kernel id) for each pin line of the summary table."""
    rows = []
    for line in stdout.splitlines():
        if line.startswith(f"{root}/"):
            path, action, _owner, _mode, kernel_id, *_ = line.split()
            rows.append((os.path.relpath(path, root), action, int(kernel_id)))
    return rows


def state(root: Path) -> dict[str, tuple[int, int, int, int]]:
    """pin -> (inode, uid, gid, mode)."""
    result = {}
    for rel in pins_in(root):
        st = os.stat(root / rel)
        result[rel] = (st.st_ino, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
    return result


def kernel_id(path: Path) -> int:
    fd = kpins.open_pinned(str(path))
    try:
        return kmaps.map_info(fd).id if path.name.startswith("map_") else kprogs.program_info(fd).id
    finally:
        os.close(fd)


def pin_socket_filter(path: Path) -> None:
    """Pin a trivial SOCKET_FILTER program (r0 = 0; exit) at `path`."""
    loaded = kprogs.load_program(
        name="squatter",
        prog_type=SOCKET_FILTER,
        expected_attach_type=0,
        instructions=bytes.fromhex("b700000000000000") + bytes.fromhex("9500000000000000"),
        license="GPL",
        kern_version=0,
    )
    try:
        kpins.pin(loaded.fd, str(path))
    finally:
        os.close(loaded.fd)


def pin_map(path: Path, map_type: int, key: int, value: int, entries: int, flags: int) -> int:
    """Pin a new map at `path`; its kernel id."""
    fd = kmaps.create_map("squatter", map_type, key, value, entries, flags)
    try:
        kpins.pin(fd, str(path))
        return kmaps.map_info(fd).id
    finally:
        os.close(fd)


def load(bpfloader_cli, source_dir: Path, bpffs: Path):
    return bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)


def test_second_load_reuses_every_pin_and_keeps_map_contents(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    for source in ("myschedtp.c", "k_owners.c"):
        shutil.copy(compile_bpf(source), source_dir)
    first = load(bpfloader_cli, source_dir, bpffs)
    assert first.returncode == 0, first.stderr
    before = summary(first.stdout, bpffs)
    assert {action for _, action, _ in before} == {"create", "load"}
    assert {rel for rel, _, _ in before} == MYSCHEDTP | K_OWNERS == pins_in(bpffs)
    on_disk = state(bpffs)
    with BpfMap.open(str(bpffs / "map_myschedtp_cpu_pid_map"), key="i", value="I") as m:
        m[5] = 4242
    with BpfMap.open(str(bpffs / "map_k_owners_m_grw"), key="Q", value="I") as m:
        m[1 << 40] = 99
        m[3] = 7

    second = load(bpfloader_cli, source_dir, bpffs)
    assert second.returncode == 0, second.stderr
    after = summary(second.stdout, bpffs)
    assert after == [
        (rel, "reuse", kid) for rel, _, kid in before
    ]  # same pins, same order, same kernel objects
    assert state(bpffs) == on_disk  # same inodes, owners and modes
    for rel, _, kid in after:
        assert kernel_id(bpffs / rel) == kid
    with BpfMap.open(str(bpffs / "map_myschedtp_cpu_pid_map"), key="i", value="I") as m:
        assert m[5] == 4242
        assert m[4] == 0
    with BpfMap.open(str(bpffs / "map_k_owners_m_grw"), key="Q", value="I", readonly=True) as m:
        assert dict(m) == {1 << 40: 99, 3: 7}
    assert "objects: 2 loaded, 0 skipped, 0 failed" in second.stdout.splitlines()


def test_program_reloaded_against_a_reused_map(compile_bpf, source_dir, bpffs, bpfloader_cli):
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    first = load(bpfloader_cli, source_dir, bpffs)
    assert first.returncode == 0, first.stderr
    ids = {rel: kid for rel, _, kid in summary(first.stdout, bpffs)}
    os.unlink(bpffs / "prog_myschedtp_tracepoint_sched_sched_switch")

    second = load(bpfloader_cli, source_dir, bpffs)
    assert second.returncode == 0, second.stderr
    rows = summary(second.stdout, bpffs)
    map_id = ids["map_myschedtp_cpu_pid_map"]
    assert rows[0] == ("map_myschedtp_cpu_pid_map", "reuse", map_id)
    assert rows[1][:2] == ("prog_myschedtp_tracepoint_sched_sched_switch", "load")
    assert rows[1][2] != ids["prog_myschedtp_tracepoint_sched_sched_switch"]
    assert pins_in(bpffs) == MYSCHEDTP
    shown = subprocess.run(
        ["bpftool", "-j", "prog", "show", "pinned", bpffs / rows[1][0]],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(shown.stdout)["map_ids"] == [map_id]  # relocated to the reused map


@pytest.mark.parametrize(
    ("field", "shape", "found", "expected"),
    [
        ("type", (LRU_HASH, 8, 4, 32, 0), LRU_HASH, HASH),
        ("key_size", (HASH, 4, 4, 32, 0), 4, 8),
        ("value_size", (HASH, 8, 8, 32, 0), 8, 4),
        ("max_entries", (HASH, 8, 4, 64, 0), 64, 32),
        ("map_flags", (HASH, 8, 4, 32, BPF_F_NO_PREALLOC), BPF_F_NO_PREALLOC, 0),
    ],
)
def test_pinned_map_of_another_shape_fails_the_object(
    compile_bpf, source_dir, bpffs, bpfloader_cli, field, shape, found, expected
):
    # k_owners declares m_grw as HASH, key 8, value 4, 32 entries, no flags.
    shutil.copy(compile_bpf("k_owners.c"), source_dir)
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    squatter = bpffs / "map_k_owners_m_grw"
    squatter_id = pin_map(squatter, *shape)

    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr  # k_owners is not critical
    # Not one new pin of k_owners (four maps were made before m_grw), no directory of it;
    # myschedtp still loads, and the squatter is left alone.
    assert pins_in(bpffs) == MYSCHEDTP | {"map_k_owners_m_grw"}
    assert not (bpffs / "k_sub").exists()
    assert not (bpffs / "k_progsub").exists()
    assert kernel_id(squatter) == squatter_id
    obj = f"{source_dir}/k_owners.o"
    errors = [
        line
        for line in run.stderr.splitlines()
        if line.startswith("bpfloader: err: ") and obj in line and "'m_grw'" in line
    ]
    assert len(errors) == 1, run.stderr
    (error,) = errors
    assert f"pinned map {squatter} has {field} {found}, the object declares {expected}" in error
    lines = run.stdout.splitlines()
    assert "objects: 1 loaded, 0 skipped, 1 failed" in lines
    assert f"failed: {error.removeprefix('bpfloader: err: ')}" in lines


def test_pinned_program_of_another_type_fails_the_object(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    squatter = bpffs / "prog_myschedtp_tracepoint_sched_sched_switch"
    exit_0 = bytes.fromhex("b7000000000000009500000000000000")  # r0 = 0; exit
    loaded = kprogs.load_program(
        name="squatter",
        prog_type=SOCKET_FILTER,
        expected_attach_type=0,
        instructions=exit_0,
        license="GPL",
        kern_version=0,
    )
    try:
        kpins.pin(loaded.fd, str(squatter))
    finally:
        os.close(loaded.fd)

    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    assert pins_in(bpffs) == {squatter.name}  # the map made before the check is gone again
    errors = [
        line
        for line in run.stderr.splitlines()
        if line.startswith("bpfloader: err: ") and f"{source_dir}/myschedtp.o" in line
    ]
    assert len(errors) == 1, run.stderr
    assert f"pinned program {squatter} is of type {SOCKET_FILTER}" in errors[0]
    assert "TRACEPOINT (5)" in errors[0]
    assert "objects: 0 loaded, 0 skipped, 1 failed" in run.stdout.splitlines()


@pytest.mark.parametrize(
    ("pin", "expected_kind"),
    [
        ("prog_myschedtp_tracepoint_sched_sched_switch", "program"),
        ("map_myschedtp_cpu_pid_map", "map"),
    ],
)
def test_pin_of_the_other_kind_fails_the_object(
    compile_bpf, source_dir, bpffs, bpfloader_cli, pin, expected_kind
):
    """A map where a program belongs is not "reused" as one, nor a program as a map. The map
    is a PERCPU_HASH (5), whose number equals BPF_PROG_TYPE_TRACEPOINT."""
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    squatter = bpffs / pin
    if expected_kind == "program":
        pin_map(squatter, PERCPU_HASH, 4, 4, 4, 0)
    else:
        pin_socket_filter(squatter)

    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    assert pins_in(bpffs) == {pin}
    found_kind = "map" if expected_kind == "program" else "program"
    errors = [
        line
        for line in run.stderr.splitlines()
        if line.startswith("bpfloader: err: ") and f"{source_dir}/myschedtp.o" in line
    ]
    assert len(errors) == 1, run.stderr
    assert f"{squatter} holds a BPF {found_kind}, not a {expected_kind}" in errors[0]
    assert "objects: 0 loaded, 0 skipped, 1 failed" in run.stdout.splitlines()
