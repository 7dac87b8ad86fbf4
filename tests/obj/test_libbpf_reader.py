"""Reading libbpf-style objects (pure, no root): BTF-defined maps, global data, libbpf's section
names and the pin names they give, subprogram linking with its BTF records, initial `values`,
which reader an object gets, and bad objects refused with one line naming file and section."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from bpfloader.errors import ObjectFormatError, PlanError
from bpfloader.loader.gates import Environment
from bpfloader.loader.plan import Planner, SourceObject
from bpfloader.obj.bpftypes import (
    BPF_F_SLEEPABLE,
    BPF_PSEUDO_CALL,
    BPF_PSEUDO_FUNC,
    OPCODE_CALL,
    OPCODE_LD_IMM64,
    AttachType,
    MapType,
    ProgType,
)
from bpfloader.obj.elf import ElfObject
from bpfloader.obj.libbpf_sections import program_kind
from bpfloader.obj.reader import is_libbpf_style, read_object
from bpfloader.obj.spec import MapSlot, ObjectSpec, ObjectStyle
from tests.libbpf_support import (
    Patch,
    libbpf_object,
    relocation_into_a_missing_section,
    self_referential_btf,
    truncated_btf,
)

ENV = Environment(kernel=(6, 18, 0), loader_version=48, arch="x86_64")


def read(path: Path, name: str | None = None) -> ObjectSpec:
    return read_object(path.read_bytes(), f"/etc/bpf/{name or path.name}")


def refuse(data: bytes, path: str = "/etc/bpf/bad.o") -> ObjectFormatError:
    with pytest.raises(ObjectFormatError) as caught:
        read_object(data, path)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    return caught.value


# -- maps ------------------------------------------------------------------------------------


def test_btf_defined_maps(compile_bpf):
    spec = read(libbpf_object(compile_bpf, "libbpf_maps.c"))
    assert spec.style is ObjectStyle.LIBBPF
    maps = {m.name: m for m in spec.maps}
    shape = {
        name: (m.type, m.key_size, m.value_size, m.max_entries, m.flags) for name, m in maps.items()
    }
    assert shape == {
        "flows": (MapType.HASH, 12, 8, 64, 0),
        "sized": (MapType.ARRAY, 4, 24, 8, 0),
        "per_cpu": (MapType.PERCPU_ARRAY, 4, 8, 4, 0),
        "lru": (MapType.LRU_HASH, 8, 4, 128, 2),  # BPF_F_NO_COMMON_LRU
        "prefixes": (MapType.LPM_TRIE, 8, 4, 16, 1),  # BPF_F_NO_PREALLOC
        "events": (MapType.RINGBUF, 0, 0, 4096, 0),
        "perf_out": (MapType.PERF_EVENT_ARRAY, 4, 4, 0, 0),  # one per CPU, at load time
        "queue": (MapType.QUEUE, 0, 4, 10, 0),
        "seen": (MapType.BLOOM_FILTER, 0, 8, 100, 0),
    }
    assert maps["seen"].map_extra == 3
    # Types where the object gave them (__type), none where it gave only sizes.
    assert maps["flows"].btf_key_type_id and maps["flows"].btf_value_type_id
    assert (maps["sized"].btf_key_type_id, maps["sized"].btf_value_type_id) == (0, 0)
    assert (maps["seen"].btf_key_type_id, maps["seen"].btf_value_type_id != 0) == (0, True)
    assert all(m.owner.mode == 0o600 and m.owner.uid == 0 and not m.shared for m in spec.maps)
    assert spec.btf is not None


def test_a_map_pinned_by_name_is_shared(compile_bpf):
    spec = read(libbpf_object(compile_bpf, "libbpf_shared.c"))
    (shared,) = spec.maps
    assert shared.name == "shared_totals" and shared.shared


def test_global_data_sections_become_maps(compile_bpf):
    path = libbpf_object(compile_bpf, "libbpf_globals.c")
    maps = {m.name: m for m in read(path).maps}
    assert set(maps) == {"data", "rodata", "bss", "data_custom", "rodata_tuning"}
    kernel_names = {name: m.kernel_name for name, m in maps.items()}
    assert kernel_names == {
        "data": "libbpf_g.data",
        "rodata": "libbpf_g.rodata",
        "bss": "libbpf_g.bss",
        "data_custom": ".data.custom",
        "rodata_tuning": ".rodata.tuning",
    }
    for name, m in maps.items():
        assert (m.type, m.key_size, m.max_entries) == (MapType.ARRAY, 4, 1)
        read_only = name.startswith("rodata")
        assert m.flags == (0x400 | (0x80 if read_only else 0))  # MMAPABLE, RDONLY_PROG
        assert m.frozen == read_only
        assert m.btf_value_type_id and not m.btf_key_type_id  # the DATASEC
    assert maps["data"].initial_data == struct.pack("<ii", 7, 5)  # counter, hidden
    assert maps["rodata"].initial_data == struct.pack("<i", 42) + b"hello\0"
    assert maps["bss"].initial_data == bytes(40)
    assert maps["rodata_tuning"].initial_data == struct.pack("<i", 100)


def test_global_data_references_carry_the_offset(compile_bpf):
    (program,) = read(libbpf_object(compile_bpf, "libbpf_globals.c")).programs
    refs = {(r.map_name, r.offset) for r in program.map_refs}
    assert refs == {
        ("data", 0),  # counter
        ("data", 4),  # hidden
        ("rodata", 0),  # limit
        ("rodata", 4),  # greeting
        ("data_custom", 0),
        ("rodata_tuning", 0),
        ("bss", 0),  # runs
        ("bss", 8),  # bucket
    }


def test_initial_values_and_inner_maps(compile_bpf):
    maps = {m.name: m for m in read(libbpf_object(compile_bpf, "libbpf_values.c")).maps}
    assert maps["outer_array"].slots == (
        MapSlot(0, "inner_b", is_program=False),
        MapSlot(2, "inner_a", is_program=False),
    )
    assert maps["outer_hash"].slots == (MapSlot(5, "inner_a", is_program=False),)
    assert maps["jump_table"].slots == (
        MapSlot(0, "tail_ten", is_program=True),
        MapSlot(1, "tail_eleven", is_program=True),
    )
    inner = maps["outer_array"].inner
    assert inner is not None
    assert (inner.type, inner.key_size, inner.value_size, inner.max_entries) == (
        MapType.ARRAY,
        4,
        8,
        4,
    )
    assert maps["outer_array"].value_size == 4  # a map fd
    assert maps["jump_table"].value_size == 4


# -- programs and their pin names ------------------------------------------------------------


def test_section_names_give_types_attach_types_and_pin_names(compile_bpf):
    spec = read(libbpf_object(compile_bpf, "libbpf_sections.c"))
    programs = {p.name: p for p in spec.programs}
    assert len(programs) == 38
    expected = {
        "sock_filter": (ProgType.SOCKET_FILTER, 0, "socket/sock_filter"),
        "xdp_first": (ProgType.XDP, AttachType.XDP, "xdp/xdp_first"),
        "xdp_second": (ProgType.XDP, AttachType.XDP, "xdp/xdp_second"),
        "tc_prog": (ProgType.SCHED_CLS, 0, "tc/tc_prog"),
        "tp_short": (ProgType.TRACEPOINT, 0, "tp/sched/sched_switch"),
        "raw_tp_long": (ProgType.RAW_TRACEPOINT, 0, "raw_tracepoint/sched_wakeup"),
        "kretprobe_prog": (ProgType.KPROBE, 0, "kretprobe/do_unlinkat"),
        "uprobe_prog": (ProgType.KPROBE, 0, "uprobe/uprobe_prog"),
        "skb_ingress": (
            ProgType.CGROUP_SKB,
            AttachType.CGROUP_INET_INGRESS,
            "cgroup_skb/ingress/skb_ingress",
        ),
        "sock_create": (
            ProgType.CGROUP_SOCK,
            AttachType.CGROUP_INET_SOCK_CREATE,
            "cgroup/sock_create/sock_create",
        ),
        "connect4": (
            ProgType.CGROUP_SOCK_ADDR,
            AttachType.CGROUP_INET4_CONNECT,
            "cgroup/connect4/connect4",
        ),
        "getsockopt_prog": (
            ProgType.CGROUP_SOCKOPT,
            AttachType.CGROUP_GETSOCKOPT,
            "cgroup/getsockopt/getsockopt_prog",
        ),
        "sysctl_prog": (
            ProgType.CGROUP_SYSCTL,
            AttachType.CGROUP_SYSCTL,
            "cgroup/sysctl/sysctl_prog",
        ),
        "sockops_prog": (ProgType.SOCK_OPS, AttachType.CGROUP_SOCK_OPS, "sockops/sockops_prog"),
        "tp_btf_prog": (ProgType.TRACING, AttachType.TRACE_RAW_TP, "tp_btf/sched_switch"),
        "iter_prog": (ProgType.TRACING, AttachType.TRACE_ITER, "iter/task"),
    }
    for function, (prog_type, attach, stem) in expected.items():
        p = programs[function]
        assert (p.type, p.expected_attach_type, p.pin_section) == (prog_type, attach, stem)
        assert p.owner.mode == 0o440 and p.owner.uid == 0
    assert (programs["tp_btf_prog"].attach_target, programs["tp_btf_prog"].attach_target_kind) == (
        "btf_trace_sched_switch",
        "TYPEDEF",
    )
    assert programs["iter_prog"].attach_target == "bpf_iter_task"
    assert programs["tp_short"].attach_target == ""


@pytest.mark.parametrize(
    "section, prog_type, attach, target, flags",
    [
        ("fentry/do_unlinkat", ProgType.TRACING, AttachType.TRACE_FENTRY, "do_unlinkat", 0),
        ("fexit.s/do_unlinkat", ProgType.TRACING, AttachType.TRACE_FEXIT, "do_unlinkat", 16),
        ("lsm/file_open", ProgType.LSM, AttachType.LSM_MAC, "bpf_lsm_file_open", 0),
        ("kprobe.multi/do_*", ProgType.KPROBE, AttachType.TRACE_KPROBE_MULTI, "", 0),
        ("xdp.frags", ProgType.XDP, AttachType.XDP, "", 32),
        ("xdp/devmap", ProgType.XDP, AttachType.XDP_DEVMAP, "", 0),
        ("sk_reuseport/migrate", ProgType.SK_REUSEPORT, 40, "", 0),
    ],
)
def test_the_section_table(section, prog_type, attach, target, flags):
    kind = program_kind(section)
    assert kind is not None
    d = kind.definition
    assert (d.type, d.attach, kind.target_name, d.flags) == (prog_type, attach, target, flags)
    assert BPF_F_SLEEPABLE == 16


@pytest.mark.parametrize("section", ["xdp/custom", "tcx", "socketfilter", "fentry_x", ""])
def test_names_libbpf_does_not_know(section):
    assert program_kind(section) is None


def _calls(code: bytes) -> list[tuple[int, int, int]]:
    """(index, opcode, target) of the calls and function addresses in linked code."""
    found = []
    for i in range(len(code) // 8):
        opcode, src = code[i * 8], code[i * 8 + 1] >> 4
        imm = struct.unpack_from("<i", code, i * 8 + 4)[0]
        if (opcode, src) in ((OPCODE_CALL, BPF_PSEUDO_CALL), (OPCODE_LD_IMM64, BPF_PSEUDO_FUNC)):
            found.append((i, opcode, i + imm + 1))
    return found


def test_subprograms_are_appended_once_each_and_calls_land_on_them(compile_bpf):
    spec = read(libbpf_object(compile_bpf, "libbpf_subprogs.c"))
    measure = next(p for p in spec.programs if p.name == "measure")
    starts = [f.insn for f in measure.func_info]
    assert starts[0] == 0 and starts == sorted(set(starts))
    assert len(starts) == 5  # measure, square, add_twice, sum_below, add_index
    assert len(measure.line_info) >= len(starts)
    assert {line.insn for line in measure.line_info} >= set(starts)
    calls = _calls(measure.instructions)
    assert calls and all(target in starts for _, _, target in calls)
    assert any(opcode == OPCODE_LD_IMM64 for _, opcode, _ in calls)  # bpf_loop's callback
    # The other program gets its own copy of what it calls.
    xdp = next(p for p in spec.programs if p.name == "pass_if_square")
    assert [f.insn for f in xdp.func_info] == [0, xdp.func_info[1].insn]
    assert all(target == xdp.func_info[1].insn for _, _, target in _calls(xdp.instructions))


def test_static_functions_in_a_programs_own_section_are_linked(compile_bpf):
    spec = read(libbpf_object(compile_bpf, "libbpf_own_section.c"))
    assert sorted(p.name for p in spec.programs) == ["first", "second"]
    for p in spec.programs:
        assert len(p.func_info) == 2 and p.pin_section == f"socket/{p.name}"
        ((_, _, target),) = _calls(p.instructions)
        assert target == p.func_info[1].insn


# -- which reader --------------------------------------------------------------------------


def test_android_objects_keep_their_reader(compile_bpf):
    android = compile_bpf("pure_plan.c")
    assert not is_libbpf_style(ElfObject(android.read_bytes()))
    with_btf = compile_bpf("pure_plan.c", "with_btf.o", "-g")  # .BTF does not change that
    assert not is_libbpf_style(ElfObject(with_btf.read_bytes()))
    assert read(with_btf).style is ObjectStyle.ANDROID
    subprogs = libbpf_object(compile_bpf, "libbpf_subprogs.c")
    assert is_libbpf_style(ElfObject(subprogs.read_bytes()))


# -- pins: collisions -----------------------------------------------------------------------

COLLIDING = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("kprobe") int do_unlinkat(void *ctx) { return 0; }
SEC("kprobe/do_unlinkat") int other(void *ctx) { return 0; }
char LICENSE[] SEC("license") = "GPL";
"""


def test_two_programs_with_one_pin_path_are_an_error_naming_both(compile_bpf):
    spec = read(compile_bpf(COLLIDING, "collide.o", "-g"))
    plan = Planner(ENV, "/sys/fs/bpf", lambda _: False).plan(SourceObject(spec.path), spec)
    assert isinstance(plan.error, PlanError)
    assert str(plan.error) == (
        "/etc/bpf/collide.o: kprobe/do_unlinkat: programs 'do_unlinkat' (section 'kprobe') and "
        "'other' (section 'kprobe/do_unlinkat') would both be pinned at "
        "/sys/fs/bpf/prog_collide_kprobe_do_unlinkat"
    )


def test_a_map_named_like_a_data_section_is_an_error(compile_bpf):
    source = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1);
         __type(key, int); __type(value, int); } bss SEC(".maps");
int counter;
SEC("socket") int f(void *ctx) { int k = 0; counter++; return !!bpf_map_lookup_elem(&bss, &k); }
char LICENSE[] SEC("license") = "GPL";
"""
    e = refuse(compile_bpf(source, "clash.o", "-g").read_bytes())
    assert e.section == ".maps" and "two maps are named 'bss'" in e.reason


# -- bad objects -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flag, section, reason",
    [
        ("-DBAD_MAP_TYPE", ".maps", "map 'things' has unknown map type 99"),
        ("-DBAD_FIELD", ".maps", "map 'things': unknown field 'colour' in its definition"),
        ("-DBAD_PINNING", ".maps", "map 'things' has pinning 2; only LIBBPF_PIN_NONE (0)"),
        ("-DNO_TARGET", "fentry", "a fentry program names what it attaches to: 'fentry/NAME'"),
        ("-DUNKNOWN_SEC", "no_such_kind/x", "not a program section libbpf knows"),
    ],
)
def test_bad_objects(compile_bpf, flag, section, reason):
    e = refuse(compile_bpf("libbpf_bad.c", "bad.o", "-g", flag).read_bytes())
    assert e.section == section
    assert e.reason.startswith(reason), e.reason


def test_maps_without_btf_are_refused(compile_bpf):
    """Issue 20: the message named only clang -g, not the loader's own way to build."""
    e = refuse(compile_bpf("libbpf_bad.c", "bad_nobtf.o", btf=False).read_bytes())
    assert (e.section, e.reason) == (
        ".maps",
        "BTF-defined maps need the object's BTF, which it lacks: build it with `bpfloader build` "
        "(which compiles with -g) or clang -g, and keep the .BTF section when stripping",
    )


@pytest.fixture
def good(compile_bpf) -> Path:
    return compile_bpf("libbpf_bad.c", "good.o", "-g")


def test_a_good_object_before_patching(good):
    assert read_object(good.read_bytes(), "/etc/bpf/good.o").programs


def test_truncated_btf(good):
    e = refuse(truncated_btf(good))
    assert (e.section, e.reason) == (
        ".BTF",
        "types run past the end of the section (truncated BTF)",
    )


def test_self_referential_btf(good):
    data, type_id = self_referential_btf(good)
    e = refuse(data)
    assert e.section == ".maps"
    assert (
        e.reason == f"map 'things': type {type_id} refers to itself through typedefs or qualifiers"
    )


def test_a_relocation_into_a_section_that_does_not_exist(good):
    e = refuse(relocation_into_a_missing_section(good))
    assert e.section == "socket"
    assert e.reason.endswith("refers to 'seen' in section 127, which does not exist")
    assert e.reason.startswith("instruction ") and "of 'use'" in e.reason


def test_a_relocation_to_a_symbol_that_does_not_exist(good):
    patch = Patch(good)
    start, _ = patch.sections[".relsocket"]
    r_info = struct.unpack_from("<Q", patch.data, start + 8)[0]
    struct.pack_into("<Q", patch.data, start + 8, (5000 << 32) | (r_info & 0xFFFFFFFF))
    e = refuse(bytes(patch.data))
    assert e.section == ".relsocket"
    assert "names symbol 5000, which does not exist" in e.reason
