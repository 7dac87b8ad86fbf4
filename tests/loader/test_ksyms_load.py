"""`__ksym` externs against the running kernel: loaded by bpftool (libbpf 1.1) and by bpfloader,
the kernel holds the same programs, BTF and maps; run, each extern holds what this kernel
gives it; the typed variables this kernel cannot load are relocated as libbpf relocates them
(tests/obj/libbpf_oracle.c) and their refusal is explained; every extern this kernel lacks
fails its object on one line naming it. The objects are compiled in the run against a
vmlinux.h generated from this kernel."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bpfloader.client import BpfMap, Program
from bpfloader.errors import LoaderError
from bpfloader.kernel import btf as kbtf
from bpfloader.loader.kernel_objects import resolve_externs
from bpfloader.obj import core
from bpfloader.obj.reader import read_object
from bpfloader.obj.relocate import relocate
from tests.core_support import core_flags, core_object, generate_vmlinux_h, without_map_fds
from tests.libbpf_support import (
    assert_same_programs_and_maps,
    bpftool,
    bpftool_loadall,
    bpftool_text,
    loaded_by_bpfloader,
    loaded_by_bpftool,
)
from tests.loader.conftest import libbpf_relocated

pytestmark = pytest.mark.kernel

VMLINUX_SOURCE = "/sys/kernel/btf/vmlinux"


@pytest.fixture(scope="session")
def vmlinux_dir(build_dir: Path) -> Path:
    directory = build_dir / "vmlinux_ksyms"
    generate_vmlinux_h(directory)
    return directory


def kallsyms_address(name: str) -> int:
    with open("/proc/kallsyms") as f:
        for line in f:
            address, _, symbol = line.split()[:3]
            if symbol == name:
                return int(address, 16)
    raise AssertionError(f"{name} is not in /proc/kallsyms")


def program_btf(pin: Path) -> str:
    return bpftool_text("btf", "dump", "id", bpftool("prog", "show", "pinned", pin)["btf_id"])


def test_the_kernel_holds_what_libbpf_makes(
    compile_bpf, vmlinux_dir, bpffs, source_dir, bpfloader_cli
):
    obj = core_object(compile_bpf, vmlinux_dir, "ksyms/ksyms_loadable.c")
    done = bpftool_loadall(obj, bpffs)
    assert done.returncode == 0, done.stderr
    theirs = loaded_by_bpftool(bpffs)
    (bpffs / "ours").mkdir()
    shutil.copy(obj, source_dir)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs / "ours", check=True)
    assert "warning" not in run.stderr  # the kernel took the object's BTF as rewritten
    ours = loaded_by_bpfloader(bpffs / "ours")
    assert sorted(ours.programs) == ["ksyms_tc", "ksyms_xdp"]
    assert_same_programs_and_maps(ours, theirs, btf=True)
    for name, pin in ours.program_pins.items():
        # The same BTF, `.ksyms` rewritten and `dummy_ksym` appended alike.
        assert program_btf(pin) == program_btf(theirs.program_pins[name]), name
    assert "'dummy_ksym'" in program_btf(ours.program_pins["ksyms_tc"])


def test_each_extern_holds_what_this_kernel_gives_it(
    compile_bpf, vmlinux_dir, bpffs, source_dir, bpfloader_cli
):
    shutil.copy(core_object(compile_bpf, vmlinux_dir, "ksyms/ksyms_loadable.c"), source_dir)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    packet = bytes(14) + bytes(range(50))
    with Program.open(str(bpffs / "prog_ksyms_loadable_tc_ksyms_tc")) as prog:
        assert prog.test_run(packet).retval == 0
    with Program.open(str(bpffs / "prog_ksyms_loadable_xdp_ksyms_xdp")) as prog:
        prog.test_run(packet)
    with BpfMap.open(str(bpffs / "map_ksyms_loadable_results")) as results:  # by its BTF
        got = [results[i] for i in range(7)]
    assert got[0] == kallsyms_address("_text")  # typeless: from /proc/kallsyms
    assert got[1:4] == [0, 0, 0]  # the __weak ones this kernel lacks
    assert got[5] == got[6] == len(packet)  # the kfunc, from a subprogram and from XDP


def bpfloader_relocated(obj: Path) -> dict[str, bytes]:
    """Each program as bpfloader relocates it for this kernel: CO-RE, externs, maps at fd 0."""
    spec = read_object(obj.read_bytes(), str(obj))
    assert spec.ksyms is not None and spec.core is not None
    externs = resolve_externs(spec.ksyms)
    results = core.resolve(spec.core, kbtf.kernel_target())
    try:
        fds = {m.name: 0 for m in spec.maps}
        return {
            p.name: relocate(
                p, fds, core.apply(p.instructions, p.core_relos, results), externs.patches
            )
            for p in spec.programs
        }
    finally:
        externs.close()


def test_typed_variables_are_relocated_as_libbpf_relocates_them(
    compile_bpf, vmlinux_dir, libbpf_oracle, bpffs, source_dir, bpfloader_cli
):
    obj = core_object(compile_bpf, vmlinux_dir, "ksyms/ksyms_typed.c")
    theirs = libbpf_relocated(libbpf_oracle, obj, None, refused=True)
    ours = bpfloader_relocated(obj)
    assert sorted(ours) == sorted(theirs) == ["ksyms_typed"]
    assert without_map_fds(ours["ksyms_typed"]) == without_map_fds(theirs["ksyms_typed"])
    assert ours["ksyms_typed"][1] >> 4 == 3  # a BPF_PSEUDO_BTF_ID load of the kernel's VAR
    shutil.copy(obj, source_dir)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    failed = [line for line in run.stdout.splitlines() if line.startswith("failed: ")]
    assert failed == [
        f"failed: {source_dir / obj.name}: tc: extern 'runqueues' (.ksyms): the kernel cannot "
        "find its address (a kernel built without CONFIG_KALLSYMS_ALL knows only the addresses "
        "of functions)"
    ], run.stdout


@pytest.mark.parametrize(
    "flag, reason",
    [
        (
            "MISSING_TYPELESS",
            ".BTF: extern 'bpfloader_no_such_symbol' (.ksyms): not in /proc/kallsyms and not "
            "__weak",
        ),
        (
            "MISSING_VARIABLE",
            ".BTF: extern 'bpfloader_no_such_variable' (.ksyms): not in the BTF of "
            f"{VMLINUX_SOURCE} and not __weak",
        ),
        (
            "MISSING_KFUNC",
            ".BTF: extern 'bpfloader_no_such_kfunc' (.ksyms): not in the BTF of "
            f"{VMLINUX_SOURCE} and not __weak",
        ),
        (
            "WRONG_PROTO",
            ".BTF: extern 'bpf_cast_to_kern_ctx' (.ksyms): its prototype (type ",
        ),
        ("WRONG_TYPE", ".BTF: extern 'runqueues' (.ksyms): its type (type "),
        (
            "UNGUARDED_WEAK",
            "tc: calls __weak kfunc 'bpfloader_no_such_kfunc', which this kernel lacks, where the "
            "verifier reaches it (guard the call: if (bpf_ksym_exists(bpfloader_no_such_kfunc)) "
            "...)",
        ),
    ],
)
def test_an_extern_this_kernel_lacks_fails_its_object_on_one_line(
    compile_bpf, vmlinux_dir, bpffs, source_dir, bpfloader_cli, flag, reason
):
    bad = compile_bpf("ksyms/ksyms_bad.c", f"bad_{flag}.o", *core_flags(vmlinux_dir), f"-D{flag}")
    shutil.copy(bad, source_dir)
    shutil.copy(core_object(compile_bpf, vmlinux_dir, "ksyms/ksyms_loadable.c"), source_dir)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    failed = [line for line in run.stdout.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and failed[0].startswith(f"failed: {source_dir / bad.name}: "), failed
    assert failed[0].removeprefix(f"failed: {source_dir / bad.name}: ").startswith(reason), failed
    assert "objects: 1 loaded, 0 skipped, 1 failed" in run.stdout
    assert not any("ksyms_bad" in p.name for p in bpffs.iterdir())


def test_check_names_the_externs_and_resolves_them_against_a_target(
    compile_bpf, vmlinux_dir, bpfloader_cli
):
    obj = core_object(compile_bpf, vmlinux_dir, "ksyms/ksyms_loadable.c")
    plain = bpfloader_cli("check", obj)
    assert plain.returncode == 0, plain.stderr
    assert "  extern bpf_cast_to_kern_ctx (.ksyms): kfunc" in plain.stdout.splitlines()
    assert "  extern _text (.ksyms): typeless symbol" in plain.stdout.splitlines()
    against = bpfloader_cli("check", "--target-btf", VMLINUX_SOURCE, obj)
    assert against.returncode == 0, against.stderr
    lines = against.stdout.splitlines()
    kfunc_id = bpftool("btf", "dump", "file", VMLINUX_SOURCE)  # every type, by id
    expected = next(t["id"] for t in kfunc_id["types"] if t.get("name") == "bpf_cast_to_kern_ctx")
    assert f"  extern bpf_cast_to_kern_ctx (.ksyms): kfunc: vmlinux BTF id {expected}" in lines
    assert (
        "  extern bpfloader_no_such_variable (.ksyms): typed variable, __weak: not in the BTF of "
        f"{VMLINUX_SOURCE} (0)"
    ) in lines


def test_the_kernels_own_btf_is_found_by_name():
    fds = kbtf.kernel_btf_fds({"vmlinux"})
    try:
        assert list(fds) == ["vmlinux"]
        assert kbtf._kernel_btf_name(fds["vmlinux"]) == "vmlinux"
    finally:
        for fd in fds.values():
            fd.close()
    with pytest.raises(LoaderError, match="the kernel has no BTF named bpfloader_no_such_module"):
        kbtf.kernel_btf_fds({"vmlinux", "bpfloader_no_such_module"})
