"""`bpfloader check --target-btf FILE`: CO-RE relocations resolved without root against another
kernel's BTF (a file of raw BTF, or an ELF file with .BTF), each one it would not satisfy named;
and the running kernel's BTF read only for objects that have CO-RE relocations."""

from __future__ import annotations

import pytest

from bpfloader.kernel import btf as kbtf
from bpfloader.loader.kernel_objects import KernelObjects
from bpfloader.obj.reader import read_object


def test_check_against_a_target_btf(compile_bpf, bpfloader_cli):
    obj = compile_bpf("core/core_elsewhere.c")
    target = compile_bpf("core/core_target.c")
    run = bpfloader_cli("check", "--target-btf", target, obj)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert f"  core: 35 of 37 CO-RE relocations satisfied by {target}" in lines
    poisoned = [line for line in lines if "not satisfied" in line]
    assert poisoned == [
        "  core: not satisfied (poisoned): raw_tracepoint/sys_enter: #22 "
        "'struct core_item___v2::renamed_away' (field byte offset)",
        "  core: not satisfied (poisoned): raw_tracepoint/sys_enter: #32 "
        "'enum core_state::CORE_GONE' (enum value)",
    ]


def test_check_against_raw_btf(compile_bpf, bpfloader_cli, tmp_path):
    from bpfloader.obj.elf import ElfObject

    section = ElfObject(compile_bpf("core/core_target.c").read_bytes()).section(".BTF")
    assert section is not None
    raw = tmp_path / "target.btf"
    raw.write_bytes(section.data)
    run = bpfloader_cli("check", "--target-btf", raw, compile_bpf("core/core_elsewhere.c"))
    assert f"  core: 35 of 37 CO-RE relocations satisfied by {raw}" in run.stdout.splitlines()


def test_check_without_a_target_says_the_relocations_are_not_resolved(compile_bpf, bpfloader_cli):
    run = bpfloader_cli("check", compile_bpf("core/core_elsewhere.c"))
    assert run.returncode == 0, run.stderr
    assert "  core: 37 CO-RE relocations, not resolved (--target-btf FILE resolves them)" in (
        run.stdout.splitlines()
    )


def test_a_bad_target_is_one_line(compile_bpf, bpfloader_cli, tmp_path):
    bad = tmp_path / "bad.btf"
    bad.write_bytes(b"not btf at all, not an ELF file either")
    run = bpfloader_cli("check", "--target-btf", bad, compile_bpf("core/core_elsewhere.c"))
    assert run.returncode != 0
    assert run.stderr.strip().splitlines()[-1].startswith(f"bpfloader: target BTF {bad}: bad magic")
    run = bpfloader_cli(
        "check", "--target-btf", tmp_path / "none", compile_bpf("core/core_elsewhere.c")
    )
    assert run.returncode != 0 and "No such file or directory" in run.stderr


def test_an_object_without_core_relocations_does_not_read_the_kernel_btf(compile_bpf, monkeypatch):
    def no(*_: object) -> None:
        raise AssertionError("the kernel's BTF was read")

    monkeypatch.setattr(kbtf, "kernel_target", no)
    obj = compile_bpf("libbpf_subprogs.c", None, "-g")
    spec = read_object(obj.read_bytes(), str(obj))
    objects = KernelObjects(spec, 0, lambda _: None, lambda *_: None)
    assert all(objects.core_relocated(p) is None for p in spec.programs)
    core_obj = compile_bpf("core/core_elsewhere.c")
    core_spec = read_object(core_obj.read_bytes(), str(core_obj))
    with pytest.raises(AssertionError, match="the kernel's BTF was read"):
        KernelObjects(core_spec, 0, lambda _: None, lambda *_: None).core_relocated(
            core_spec.programs[0]
        )
