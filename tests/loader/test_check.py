"""`bpfloader check`: objects validated for a build pipeline. Without --kernel it needs no
root and no bpffs (parse, policy, gates, every pin named, every program relocated); with
--kernel the verifier runs, and its log is printed, with source lines where there is BTF."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfloader.loader import check as check_module
from tests.libbpf_support import libbpf_object
from tests.loader.test_dry_run import NOBODY, run_cli_as


@pytest.fixture
def readable(compile_bpf) -> Iterator[Path]:
    """A directory anyone may read, with a libbpf-style and an Android-format object."""
    top = Path(tempfile.mkdtemp(prefix="bpfloader-check-"))
    try:
        top.chmod(0o755)
        shutil.copyfile(libbpf_object(compile_bpf, "libbpf_globals.c"), top / "globals.o")
        shutil.copyfile(compile_bpf("pure_plan.c"), top / "plan.o")
        (top / "globals.policy").write_text('[maps]\ngroup = 1234\nmode = "0640"\n')
        for path in top.iterdir():
            path.chmod(0o644)
        yield top
    finally:
        shutil.rmtree(top)


def test_check_needs_no_root(readable):
    assert check_module.check_object  # imported before the child gives up root
    argv = [
        "check",
        "--pin-root",
        "/sys/fs/bpf",
        str(readable / "globals.o"),
        str(readable / "plan.o"),
    ]
    child = run_cli_as(NOBODY, NOBODY, argv)
    assert "exception" not in child, child.get("exception")
    assert child["ids"] == [NOBODY] * 4 and child["capeff"] == "0000000000000000"
    assert child["rc"] == 0, child
    out = str(child["stdout"])
    assert f"ok   {readable}/globals.o" in out
    assert "map  /sys/fs/bpf/map_globals_rodata  0:1234 0640" in out  # the policy applied
    assert "prog /sys/fs/bpf/prog_globals_socket_count  0:0 0440" in out
    assert f"ok   {readable}/plan.o" in out


def test_check_fails_a_bad_object_and_goes_on(bpfloader_cli, compile_bpf, tmp_path):
    bad = compile_bpf("libbpf_bad.c", "bad.o", "-g", "-DBAD_MAP_TYPE")
    good = libbpf_object(compile_bpf, "libbpf_subprogs.c")
    run = bpfloader_cli("check", bad, good)
    assert run.returncode == 1
    assert f"FAIL {bad}: .maps: map 'things' has unknown map type 99" in run.stdout
    assert f"ok   {good}" in run.stdout


@pytest.mark.kernel
def test_check_kernel_loads_and_lets_go(bpfloader_cli, compile_bpf):
    obj = libbpf_object(compile_bpf, "libbpf_values.c")
    run = bpfloader_cli("check", "--kernel", obj)
    assert run.returncode == 0, run.stdout
    assert "kernel: 5 maps created, 3 programs loaded" in run.stdout


@pytest.mark.kernel
def test_check_kernel_prints_the_verifier_log_with_source_lines(bpfloader_cli, compile_bpf):
    obj = libbpf_object(compile_bpf, "libbpf_reject.c")
    run = bpfloader_cli("check", "--kernel", obj)
    assert run.returncode == 1
    assert (
        f"FAIL {obj}: socket: rejected by the verifier at libbpf_reject.c:23 (`return value[1]; "
        "/* REJECTED HERE: one past the value */`): "
    ) in run.stdout
    assert (
        "  | ; return value[1]; /* REJECTED HERE: one past the value */ @ libbpf_reject.c:23"
        in (run.stdout)
    )


@pytest.mark.kernel
def test_android_format_objects_with_btf_get_source_lines_too(bpfloader_cli, compile_bpf):
    obj = compile_bpf("bad_verifier.c", "bad_verifier_btf.o", "-g")
    run = bpfloader_cli("check", "--kernel", obj)
    assert run.returncode == 1
    assert (
        "| ; return v[1]; /* value_size is 4: offset 4 is past the end */ @ bad_verifier.c:14"
        in (run.stdout)
    )
