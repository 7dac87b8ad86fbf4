"""libbpf-style objects through `bpfloader load`, in the real kernel: pin names and ownership
(defaults and policy files), programs that run (subprograms, global data, tail calls through
initial `values`), maps pinned by name shared between objects, the source line in a logged
verifier rejection, read-only data replaced on reload, bad objects that pin nothing, and the
plain words for a kernel that lacks a feature."""

from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

import pytest

from bpfloader.errors import KernelError, NotSupportedError
from bpfloader.kernel import features
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import pins as kpins
from bpfloader.loader.kernel_objects import KernelObjects
from bpfloader.obj.bpftypes import MapType
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.reader import read_object
from bpfloader.obj.spec import MapSpec
from tests.conftest import pins_in
from tests.libbpf_support import (
    bpftool,
    bpftool_loadall,
    btf_the_kernel_refuses,
    libbpf_object,
    relocation_into_a_missing_section,
    run_pinned,
    self_referential_btf,
    truncated_btf,
)

pytestmark = pytest.mark.kernel

XDP_PASS = 2


def load(bpfloader_cli, source_dir: Path, bpffs: Path, *objects: Path, check: bool = True):
    for obj in objects:
        (source_dir / obj.name).write_bytes(obj.read_bytes())
    return bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=check)


def owner(path: Path) -> tuple[int, int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)


def lookup(pin: Path, key: bytes, value_size: int) -> bytes | None:
    fd = kpins.open_pinned(str(pin))
    try:
        return kmaps.lookup(fd, key, value_size)
    finally:
        os.close(fd)


ZERO = bytes(4)


def test_pin_names_and_default_ownership(compile_bpf, bpffs, source_dir, bpfloader_cli):
    sections = libbpf_object(compile_bpf, "libbpf_sections.c")
    globals_ = libbpf_object(compile_bpf, "libbpf_globals.c")
    load(bpfloader_cli, source_dir, bpffs, sections, globals_)
    pins = pins_in(bpffs)
    for expected in (
        "prog_libbpf_sections_socket_sock_filter",  # no name of its own: the function's
        "prog_libbpf_sections_xdp_xdp_first",  # two programs in one section
        "prog_libbpf_sections_xdp_xdp_second",
        "prog_libbpf_sections_tp_sched_sched_switch",  # its own name
        "prog_libbpf_sections_cgroup_skb_ingress_skb_ingress",
        "prog_libbpf_sections_tp_btf_sched_switch",
        "map_libbpf_globals_data",
        "map_libbpf_globals_rodata",
        "map_libbpf_globals_bss",
        "map_libbpf_globals_data_custom",
        "map_libbpf_globals_rodata_tuning",
    ):
        assert expected in pins
    assert owner(bpffs / "map_libbpf_globals_bss") == (0, 0, 0o600)
    assert owner(bpffs / "prog_libbpf_globals_socket_count") == (0, 0, 0o440)
    assert len([p for p in pins if p.startswith("prog_libbpf_sections_")]) == 38


def test_a_policy_file_sets_owner_group_and_mode(compile_bpf, bpffs, source_dir, bpfloader_cli):
    obj = libbpf_object(compile_bpf, "libbpf_globals.c")
    (source_dir / "libbpf_globals.policy").write_text(
        '[maps]\ngroup = 1234\nmode = "0640"\n'
        "[programs]\ngroup = 1234\n"
        "[map.bss]\nuser = 4321\nmode = 0o660\n"
    )
    load(bpfloader_cli, source_dir, bpffs, obj)
    assert owner(bpffs / "map_libbpf_globals_data") == (0, 1234, 0o640)
    assert owner(bpffs / "map_libbpf_globals_bss") == (4321, 1234, 0o660)
    assert owner(bpffs / "prog_libbpf_globals_socket_count") == (0, 1234, 0o440)


def test_a_policy_naming_what_the_object_lacks_fails_the_object(
    compile_bpf, bpffs, source_dir, bpfloader_cli
):
    obj = libbpf_object(compile_bpf, "libbpf_globals.c")
    (source_dir / "libbpf_globals.policy").write_text('[map.nonesuch]\nmode = "0644"\n')
    run = load(bpfloader_cli, source_dir, bpffs, obj)
    assert "[map.nonesuch]: the object has no map 'nonesuch'" in run.stdout
    assert pins_in(bpffs) == set()


def test_subprograms_run(compile_bpf, bpffs, source_dir, bpfloader_cli):
    load(bpfloader_cli, source_dir, bpffs, libbpf_object(compile_bpf, "libbpf_subprogs.c"))
    assert run_pinned(bpffs / "prog_libbpf_subprogs_socket_measure") == 9 + 8 + 10
    assert run_pinned(bpffs / "prog_libbpf_subprogs_xdp_pass_if_square") == XDP_PASS


def test_static_functions_in_the_programs_own_section_run(
    compile_bpf, bpffs, source_dir, bpfloader_cli
):
    load(bpfloader_cli, source_dir, bpffs, libbpf_object(compile_bpf, "libbpf_own_section.c"))
    assert run_pinned(bpffs / "prog_libbpf_own_section_socket_first") == 7
    assert run_pinned(bpffs / "prog_libbpf_own_section_socket_second") == 11


def test_global_data_is_initialised_shared_and_read_only_where_declared(
    compile_bpf, bpffs, source_dir, bpfloader_cli
):
    load(bpfloader_cli, source_dir, bpffs, libbpf_object(compile_bpf, "libbpf_globals.c"))
    prog = bpffs / "prog_libbpf_globals_socket_count"
    assert run_pinned(prog) == 7 + 42 + 3 + 5 + 100 + ord("l")
    assert run_pinned(prog) == 8 + 42 + 3 + 6 + 100 + ord("l")  # counter++, hidden++: .data
    bss = lookup(bpffs / "map_libbpf_globals_bss", ZERO, 40)
    assert bss is not None
    runs, *buckets = struct.unpack("<I4x4Q", bss)
    assert runs == 2 and sum(buckets) == 2
    data = lookup(bpffs / "map_libbpf_globals_data", ZERO, 8)
    assert data is not None and struct.unpack("<ii", data) == (9, 7)  # counter, hidden
    rodata = bpffs / "map_libbpf_globals_rodata"
    assert bpftool("map", "show", "pinned", rodata)["frozen"] == 1
    fd = kpins.open_pinned(str(rodata))
    try:
        with pytest.raises(KernelError):
            kmaps.update(fd, ZERO, bytes(12))
    finally:
        os.close(fd)
    # bpftool reads the values through the object's BTF: by variable name.
    dump = bpftool("map", "dump", "pinned", rodata)
    assert dump[0]["formatted"]["value"][".rodata"][0] == {"limit": 42}


def test_initial_values_fill_prog_arrays_and_maps_of_maps(
    compile_bpf, bpffs, source_dir, bpfloader_cli
):
    load(bpfloader_cli, source_dir, bpffs, libbpf_object(compile_bpf, "libbpf_values.c"))
    assert run_pinned(bpffs / "prog_libbpf_values_socket_dispatch") == 11  # tail call, slot 1
    inner_a = bpftool("map", "show", "pinned", bpffs / "map_libbpf_values_inner_a")["id"]
    inner_b = bpftool("map", "show", "pinned", bpffs / "map_libbpf_values_inner_b")["id"]
    outer = bpffs / "map_libbpf_values_outer_array"
    assert lookup(outer, ZERO, 4) == struct.pack("<I", inner_b)
    assert lookup(outer, struct.pack("<I", 1), 4) is None
    assert lookup(outer, struct.pack("<I", 2), 4) == struct.pack("<I", inner_a)
    by_hash = bpffs / "map_libbpf_values_outer_hash"
    assert lookup(by_hash, struct.pack("<I", 5), 4) == struct.pack("<I", inner_a)


def test_maps_pinned_by_name_are_shared(compile_bpf, bpffs, source_dir, bpfloader_cli):
    a = libbpf_object(compile_bpf, "libbpf_shared.c", "shared_a.o")
    b = compile_bpf("libbpf_shared.c", "shared_b.o", "-g", "-DSLOT=1")
    load(bpfloader_cli, source_dir, bpffs, a, b)
    pins = pins_in(bpffs)
    assert "map__shared_totals" in pins
    assert not any(p.startswith("map_shared_") for p in pins)
    run_pinned(bpffs / "prog_shared_a_socket_count_slot")
    run_pinned(bpffs / "prog_shared_b_socket_count_slot")
    run_pinned(bpffs / "prog_shared_b_socket_count_slot")
    totals = (
        lookup(bpffs / "map__shared_totals", ZERO, 8),
        lookup(bpffs / "map__shared_totals", struct.pack("<I", 1), 8),
    )
    assert totals == (struct.pack("<Q", 1), struct.pack("<Q", 2))


def test_a_rejection_logs_the_source_line(compile_bpf, bpffs, source_dir, bpfloader_cli):
    run = load(bpfloader_cli, source_dir, bpffs, libbpf_object(compile_bpf, "libbpf_reject.c"))
    assert "invalid access to map value" in run.stderr
    # The console reporter quotes the whole verifier log, which the object's line_info
    # annotates with the C source of each instruction.
    assert "return value[1]; /* REJECTED HERE: one past the value */" in run.stderr
    assert "libbpf_reject.c:23" in run.stderr
    assert pins_in(bpffs) == set()


@pytest.mark.parametrize(
    "flag, reason",
    [
        ("-DBAD_MAP_TYPE", "map 'things' has unknown map type 99"),
        ("-DBAD_FIELD", "unknown field 'colour'"),
        (
            "-DEXTERN",
            "extern 'bpfloader_no_such_variable' (.ksyms): not in the BTF of "
            "/sys/kernel/btf/vmlinux and not __weak",
        ),
        (
            "-DKCONFIG_MISSING",
            "extern 'CONFIG_BPFLOADER_MISSING' (.kconfig): not in this kernel's config and not "
            "__weak",
        ),
        ("-DCORE", "CO-RE relocation"),
    ],
)
def test_a_bad_object_pins_nothing_and_the_others_load(
    compile_bpf, bpffs, source_dir, bpfloader_cli, flag, reason
):
    bad = compile_bpf("libbpf_bad.c", "bad.o", "-g", flag)
    good = libbpf_object(compile_bpf, "libbpf_subprogs.c")
    run = load(bpfloader_cli, source_dir, bpffs, bad, good)
    assert reason in run.stdout
    failed = [line for line in run.stdout.splitlines() if line.startswith("failed")]
    assert len(failed) == 1 and "bad.o" in failed[0], run.stdout
    assert {p for p in pins_in(bpffs) if "bad" in p} == set()
    assert "prog_libbpf_subprogs_socket_measure" in pins_in(bpffs)


@pytest.mark.parametrize(
    "corrupt, reason",
    [
        (truncated_btf, ".BTF: types run past the end of the section (truncated BTF)"),
        (lambda path: self_referential_btf(path)[0], "refers to itself through typedefs"),
        (relocation_into_a_missing_section, "in section 127, which does not exist"),
    ],
)
def test_a_corrupt_object_pins_nothing(
    compile_bpf, bpffs, source_dir, bpfloader_cli, corrupt, reason
):
    (source_dir / "corrupt.o").write_bytes(corrupt(compile_bpf("libbpf_bad.c", "good.o", "-g")))
    run = load(bpfloader_cli, source_dir, bpffs)
    assert f"failed: {source_dir}/corrupt.o: " in run.stdout and reason in run.stdout
    assert pins_in(bpffs) == set()


def test_btf_the_kernel_refuses_is_a_warning_and_the_object_loads_without_it(
    compile_bpf, bpffs, source_dir, bpfloader_cli
):
    obj = libbpf_object(compile_bpf, "libbpf_globals.c")
    (source_dir / "refused.o").write_bytes(btf_the_kernel_refuses(obj))
    run = load(bpfloader_cli, source_dir, bpffs)
    assert "warning: " in run.stderr and "the kernel refused the object's BTF" in run.stderr
    prog = bpffs / "prog_refused_socket_count"
    assert "btf_id" not in bpftool("prog", "show", "pinned", prog)
    assert run_pinned(prog) == 7 + 42 + 3 + 5 + 100 + ord("l")


def test_changed_read_only_data_is_replaced_on_reload(
    compile_bpf, bpffs, source_dir, bpfloader_cli
):
    source = (
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
        "const volatile int answer = ANSWER;\nint calls;\n"
        'SEC("socket") int ask(struct __sk_buff *skb) { calls++; return answer; }\n'
        'char LICENSE[] SEC("license") = "GPL";\n'
    )
    first = compile_bpf(source, "answer.o", "-g", "-DANSWER=1")
    load(bpfloader_cli, source_dir, bpffs, first)
    prog = bpffs / "prog_answer_socket_ask"
    assert run_pinned(prog) == 1
    bss_id = bpftool("map", "show", "pinned", bpffs / "map_answer_bss")["id"]
    second = compile_bpf(source, "answer.o", "-g", "-DANSWER=2")
    (source_dir / "answer.o").write_bytes(second.read_bytes())
    bpfloader_cli("reload", "--dir", source_dir, "--pin-root", bpffs, check=True)
    assert run_pinned(prog) == 2
    # The .bss map (state) is kept; the .rodata map (constants) is the new object's.
    assert bpftool("map", "show", "pinned", bpffs / "map_answer_bss")["id"] == bss_id
    assert lookup(bpffs / "map_answer_bss", ZERO, 4) == struct.pack("<I", 2)


def test_tracing_programs_load_as_libbpf_loads_them(compile_bpf, bpffs, source_dir, bpfloader_cli):
    """fentry/, fexit/, fmod_ret/ and lsm/ programs attach through a kernel function's BTF id.
    Some kernels refuse them whatever the loader (this project's CI machines answer EPERM to
    libbpf too): bpfloader must succeed exactly where libbpf does."""
    obj = libbpf_object(compile_bpf, "libbpf_fentry.c")
    theirs = bpftool_loadall(obj, bpffs)
    ours = bpfloader_cli("check", "--kernel", obj)
    if theirs.returncode == 0:
        assert ours.returncode == 0, ours.stdout
    else:
        assert "Operation not permitted" in theirs.stderr, theirs.stderr
        assert ours.returncode == 1
        assert "fentry/do_unlinkat: BPF_PROG_LOAD failed: EPERM" in ours.stdout


def test_a_feature_the_kernel_lacks_is_named_with_its_version(compile_bpf, monkeypatch):
    """A refusal with EINVAL on a kernel older than the map type: said in plain words."""
    obj = read_object(libbpf_object(compile_bpf, "libbpf_subprogs.c").read_bytes(), "x.o")
    # A ring buffer with a key is refused: EINVAL, as an old kernel would answer for a map type
    # it does not know. (A size that is no power-of-two number of pages no longer is: the loader
    # rounds it up, as Android's loader and libbpf do.)
    spec = MapSpec("events", MapType.RINGBUF, 4, 0, 4096, 0, Ownership())
    monkeypatch.setattr(features, "running_kernel", lambda: (4, 19, 0))
    objects = KernelObjects(obj, 0, print, lambda spec, error: None)
    with pytest.raises(NotSupportedError) as caught:
        objects.create_map(spec)
    assert (
        str(caught.value)
        == ".maps: map 'events': map type RINGBUF needs Linux 5.8; this kernel is 4.19"
    )
    assert caught.value.errno == errno.EINVAL  # the kernel's answer is kept, and so is its error
    assert isinstance(caught.value.__cause__, KernelError)
    assert caught.value.__cause__.operation == "BPF_MAP_CREATE"
    monkeypatch.setattr(features, "running_kernel", lambda: (6, 18, 0))
    with pytest.raises(KernelError) as refused:
        objects.create_map(spec)
    assert not isinstance(refused.value, NotSupportedError)
    assert "EINVAL" in str(refused.value)  # on a kernel that has it, the errno stays
