"""CO-RE objects loaded by bpftool (libbpf 1.1) and by bpfloader against the running kernel:
the kernel must hold the same programs (type, tag, xlated instructions with lines and function
names) and the same maps. The objects are compiled in the run against a vmlinux.h generated
from this kernel."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.core_support import core_object, generate_vmlinux_h, with_relocation_kind
from tests.libbpf_support import (
    assert_same_programs_and_maps,
    bpftool_loadall,
    loaded_by_bpfloader,
    loaded_by_bpftool,
)

pytestmark = pytest.mark.kernel

# source -> whether its TYPE_EXISTS records are made TYPE_MATCHES (clang 14 emits none).
CORPUS = [
    ("core/core_kinds.c", False),
    ("core/core_kinds.c", True),
    ("core/core_subprogs.c", False),
]


@pytest.fixture(scope="session")
def vmlinux_dir(build_dir: Path) -> Path:
    directory = build_dir / "vmlinux"
    generate_vmlinux_h(directory)
    return directory


@pytest.mark.parametrize(("source", "matches"), CORPUS)
def test_the_kernel_holds_what_libbpf_makes(
    compile_bpf, vmlinux_dir, source, matches, bpffs, source_dir, bpfloader_cli, tmp_path
):
    obj = core_object(compile_bpf, vmlinux_dir, source)
    if matches:
        obj = with_relocation_kind(obj, 8, 12, tmp_path / obj.name)
    done = bpftool_loadall(obj, bpffs)
    assert done.returncode == 0, f"bpftool prog loadall {source}: {done.stderr}"
    theirs = loaded_by_bpftool(bpffs)
    ours_root = bpffs / "ours"
    ours_root.mkdir()
    (source_dir / obj.name).write_bytes(obj.read_bytes())
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", ours_root, check=True)
    assert_same_programs_and_maps(loaded_by_bpfloader(ours_root), theirs)


def test_an_unguarded_relocation_this_kernel_lacks_is_named(
    compile_bpf, vmlinux_dir, bpffs, source_dir, bpfloader_cli
):
    obj = core_object(compile_bpf, vmlinux_dir, "core/core_unguarded.c")
    (source_dir / obj.name).write_bytes(obj.read_bytes())
    (bpffs / "ours").mkdir()
    done = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs / "ours")
    assert "1 failed" in done.stdout
    failed = next(line for line in done.stdout.splitlines() if line.startswith("failed: "))
    assert failed.endswith(
        ": CO-RE relocation 'struct task_struct___future::field_of_a_future_kernel' (field byte "
        "offset) not satisfied by this kernel"
    ), done.stdout
    assert "1: (85) call unknown#195896080" in done.stderr  # the verifier's log, quoted
    libbpf = bpftool_loadall(obj, bpffs)  # libbpf refuses it too, at the same instruction
    assert libbpf.returncode != 0, libbpf.stderr
    assert "1: <invalid CO-RE relocation>" in libbpf.stderr, libbpf.stderr
