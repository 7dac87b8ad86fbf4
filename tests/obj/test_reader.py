"""Reading clang-compiled Android-format objects: every def field, pairing, sections, relocations.

Pure: no root, no kernel. The objects are compiled from tests/bpf/pure_*.c during the run.
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from bpfloader.obj.kver import kver
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.reader import read_object
from bpfloader.obj.sections import SECTION_PREFIXES, program_kind
from bpfloader.obj.spec import Gates, MapReference, MapSpec, ObjectSpec, ProgramSpec

INF = 0xFFFFFFFF
LOADER_MAX = 0x10000
R_BPF_64_64 = 1

# The prefix table of the README ("Writing programs"), written out with the kernel's numbers
# (include/uapi/linux/bpf.h), not with the package's enums:
# prefix -> (program type, expected attach type).
PROG = {
    "SOCKET_FILTER": 1,
    "KPROBE": 2,
    "SCHED_CLS": 3,
    "SCHED_ACT": 4,
    "TRACEPOINT": 5,
    "XDP": 6,
    "PERF_EVENT": 7,
    "CGROUP_SKB": 8,
    "CGROUP_SOCK": 9,
    "SOCK_OPS": 13,
    "CGROUP_SOCK_ADDR": 18,
    "CGROUP_SYSCTL": 23,
    "CGROUP_SOCKOPT": 25,
}
README_PREFIXES: list[tuple[str, int, int]] = [
    ("kprobe/", PROG["KPROBE"], 0),
    ("kretprobe/", PROG["KPROBE"], 0),
    ("uprobe/", PROG["KPROBE"], 0),
    ("uretprobe/", PROG["KPROBE"], 0),
    ("tracepoint/", PROG["TRACEPOINT"], 0),
    ("perf_event/", PROG["PERF_EVENT"], 0),
    ("skfilter/", PROG["SOCKET_FILTER"], 0),
    ("schedcls/", PROG["SCHED_CLS"], 0),
    ("schedact/", PROG["SCHED_ACT"], 0),
    ("xdp/", PROG["XDP"], 0),
    ("cgroupskb/", PROG["CGROUP_SKB"], 0),
    ("ingress/", PROG["CGROUP_SKB"], 0),  # BPF_CGROUP_INET_INGRESS
    ("egress/", PROG["CGROUP_SKB"], 1),  # BPF_CGROUP_INET_EGRESS
    ("cgroupsock/", PROG["CGROUP_SOCK"], 0),
    ("cgroupsockcreate/", PROG["CGROUP_SOCK"], 2),  # BPF_CGROUP_INET_SOCK_CREATE
    ("cgroupsockrelease/", PROG["CGROUP_SOCK"], 34),  # BPF_CGROUP_INET_SOCK_RELEASE
    ("postbind4/", PROG["CGROUP_SOCK"], 12),  # BPF_CGROUP_INET4_POST_BIND
    ("postbind6/", PROG["CGROUP_SOCK"], 13),  # BPF_CGROUP_INET6_POST_BIND
    ("bind4/", PROG["CGROUP_SOCK_ADDR"], 8),  # BPF_CGROUP_INET4_BIND
    ("bind6/", PROG["CGROUP_SOCK_ADDR"], 9),  # BPF_CGROUP_INET6_BIND
    ("connect4/", PROG["CGROUP_SOCK_ADDR"], 10),  # BPF_CGROUP_INET4_CONNECT
    ("connect6/", PROG["CGROUP_SOCK_ADDR"], 11),  # BPF_CGROUP_INET6_CONNECT
    ("recvmsg4/", PROG["CGROUP_SOCK_ADDR"], 19),  # BPF_CGROUP_UDP4_RECVMSG
    ("recvmsg6/", PROG["CGROUP_SOCK_ADDR"], 20),  # BPF_CGROUP_UDP6_RECVMSG
    ("sendmsg4/", PROG["CGROUP_SOCK_ADDR"], 14),  # BPF_CGROUP_UDP4_SENDMSG
    ("sendmsg6/", PROG["CGROUP_SOCK_ADDR"], 15),  # BPF_CGROUP_UDP6_SENDMSG
    ("getsockopt/", PROG["CGROUP_SOCKOPT"], 21),  # BPF_CGROUP_GETSOCKOPT
    ("setsockopt/", PROG["CGROUP_SOCKOPT"], 22),  # BPF_CGROUP_SETSOCKOPT
    ("sockops/", PROG["SOCK_OPS"], 3),  # BPF_CGROUP_SOCK_OPS
    ("sysctl", PROG["CGROUP_SYSCTL"], 18),  # BPF_CGROUP_SYSCTL
]

# (section in pure_prefixes.c, function) for every row of the table.
COMPILED_PREFIX_SECTIONS = [
    ("kprobe/do_unlinkat", "p_kprobe"),
    ("kretprobe/do_unlinkat", "p_kretprobe"),
    ("uprobe/usr/bin/true", "p_uprobe"),
    ("uretprobe/usr/bin/true", "p_uretprobe"),
    ("tracepoint/sched/sched_switch", "p_tracepoint"),
    ("perf_event/cpu_clock", "p_perf_event"),
    ("skfilter/allow", "p_skfilter"),
    ("schedcls/ingress/tether", "p_schedcls"),
    ("schedact/act", "p_schedact"),
    ("xdp/pass", "p_xdp"),
    ("cgroupskb/count", "p_cgroupskb"),
    ("ingress/count", "p_ingress"),
    ("egress/count", "p_egress"),
    ("cgroupsock/inet", "p_cgroupsock"),
    ("cgroupsockcreate/inet", "p_cgroupsockcreate"),
    ("cgroupsockrelease/inet", "p_cgroupsockrelease"),
    ("postbind4/p", "p_postbind4"),
    ("postbind6/p", "p_postbind6"),
    ("bind4/b", "p_bind4"),
    ("bind6/b", "p_bind6"),
    ("connect4/c", "p_connect4"),
    ("connect6/c", "p_connect6"),
    ("recvmsg4/r", "p_recvmsg4"),
    ("recvmsg6/r", "p_recvmsg6"),
    ("sendmsg4/s", "p_sendmsg4"),
    ("sendmsg6/s", "p_sendmsg6"),
    ("getsockopt/g", "p_getsockopt"),
    ("setsockopt/s", "p_setsockopt"),
    ("sockops/update", "p_sockops"),
    ("sysctl", "p_sysctl"),
]


def read(path: Path) -> ObjectSpec:
    return read_object(path.read_bytes(), str(path))


def readelf_relocations(path: Path) -> dict[str, list[tuple[int, int, str]]]:
    """An independent reader's view: code section -> [(offset, reloc type, symbol name)]."""
    tool = next(
        (t for t in ("llvm-readelf", "llvm-readelf-14", "readelf") if shutil.which(t)), None
    )
    assert tool is not None, "no readelf (binutils or llvm) to cross-check relocations with"
    out = subprocess.run([tool, "-rW", str(path)], capture_output=True, text=True, check=True)
    found: dict[str, list[tuple[int, int, str]]] = {}
    current = None
    for line in out.stdout.splitlines():
        if line.startswith("Relocation section '.rel"):
            current = line.split("'")[1][len(".rel") :]
            found[current] = []
            continue
        fields = line.split()
        if (
            current is not None
            and len(fields) >= 5
            and all(c in "0123456789abcdef" for c in fields[0])
        ):
            found[current].append((int(fields[0], 16), int(fields[1], 16) & 0xFFFFFFFF, fields[-1]))
    return found


@pytest.fixture(scope="module")
def every(compile_bpf) -> ObjectSpec:
    """Without BTF: the defs alone (their BTF types: test_android_btf_maps.py)."""
    return read(compile_bpf("pure_every_field.c", btf=False))


def program(spec: ObjectSpec, section: str) -> ProgramSpec:
    (found,) = [p for p in spec.programs if p.section == section]
    return found


# -- maps ---------------------------------------------------------------------------------------


def test_every_map_field_and_macro_default(every):
    default = Gates()
    assert default == Gates(0, INF, 0, LOADER_MAX, 0)
    assert every.maps == (
        MapSpec(
            name="first_map",
            type=1,
            key_size=4,
            value_size=8,
            max_entries=17,
            flags=1,  # BPF_F_NO_PREALLOC
            owner=Ownership(uid=1001, gid=1002, mode=0o640),
            gates=Gates(
                min_kver=kver(4, 19, 0),
                max_kver=kver(6, 99, 7),
                min_loader=3,
                max_loader=77,
                ignore_on=0x40 | 0x02,  # IGNORE_ON_X86_64 | IGNORE_ON_USER
            ),
            pin_subdir="pure_subdir",
            shared=True,
            selinux_context="fs_bpf_pure_ctx",
        ),
        MapSpec("plain_map", 2, 4, 4, 8, 0, Ownership(0, 0, 0o600), default),
        MapSpec("ro_map", 2, 4, 8, 4, 0, Ownership(0, 2001, 0o440), default),
        MapSpec("gwo_map", 1, 8, 4, 5, 0, Ownership(0, 2002, 0o620), default),
        MapSpec("gro_map", 6, 4, 2, 6, 0, Ownership(0, 2003, 0o640), default),
        MapSpec("grw_map", 9, 2, 8, 7, 0, Ownership(0, 2004, 0o660), default),
        MapSpec("ugm_map", 5, 4, 4, 9, 0, Ownership(3001, 3002, 0o604), default),
        MapSpec("shared_map", 1, 8, 8, 64, 0, Ownership(3003, 3004, 0o660), default, shared=True),
        MapSpec(
            "kver_map",
            2,
            4,
            4,
            2,
            0,
            Ownership(0, 3005, 0o600),
            Gates(min_kver=kver(5, 10, 0), max_kver=kver(6, 1, 0)),
        ),
    )
    assert every.map_named("ugm_map") is every.maps[6]
    assert every.map_named("nope") is None


def test_map_symbols_are_paired_with_defs_by_offset_not_by_symbol_order(compile_bpf, every):
    path = compile_bpf("pure_every_field.c", btf=False)
    with path.open("rb") as f:
        elf = ELFFile(f)
        maps_index = next(i for i, s in enumerate(elf.iter_sections()) if s.name == "maps")
        symbols = [
            (s.name, s["st_value"])
            for s in elf.get_section_by_name(".symtab").iter_symbols()
            if s["st_shndx"] == maps_index
        ]
    by_offset = [name for name, _ in sorted(symbols, key=lambda s: s[1])]
    # The precondition that makes this test mean something: clang lists the symbols in another
    # order than their defs (first_map, at offset 0, is not referenced and comes late).
    assert [name for name, _ in symbols] != by_offset
    assert dict(symbols)["first_map"] == 0
    assert [m.name for m in every.maps] == by_offset
    assert every.maps[0].name == "first_map"


def test_swapping_two_symbol_values_swaps_the_defs_they_name(compile_bpf):
    """Patch the symbol table so that plain_map and ro_map point at each other's defs."""
    path = compile_bpf("pure_every_field.c", btf=False)
    data = bytearray(path.read_bytes())
    with path.open("rb") as f:
        elf = ELFFile(f)
        symtab = elf.get_section_by_name(".symtab")
        entsize = symtab["sh_entsize"]
        where = {
            s.name: (symtab["sh_offset"] + i * entsize + 8, s["st_value"])
            for i, s in enumerate(symtab.iter_symbols())
            if s.name in ("plain_map", "ro_map")
        }
    (plain_at, plain_value), (ro_at, ro_value) = where["plain_map"], where["ro_map"]
    data[plain_at : plain_at + 8] = ro_value.to_bytes(8, "little")
    data[ro_at : ro_at + 8] = plain_value.to_bytes(8, "little")
    spec = read_object(bytes(data), str(path))
    assert [m.name for m in spec.maps][1:3] == ["ro_map", "plain_map"]
    ro, plain = spec.maps[1], spec.maps[2]
    assert (ro.value_size, ro.owner) == (4, Ownership(0, 0, 0o600))
    assert (plain.value_size, plain.owner) == (8, Ownership(0, 2001, 0o440))


# -- programs -----------------------------------------------------------------------------------


def test_every_program_def_field(every):
    p = program(every, "schedcls/every_field")
    assert p.name == "every_prog"
    assert (int(p.type), p.expected_attach_type) == (PROG["SCHED_CLS"], 0)
    assert p.owner == Ownership(uid=4001, gid=4002, mode=0o440)
    assert p.gates == Gates(
        min_kver=kver(5, 4, 0),
        max_kver=kver(6, 30, 0),
        min_loader=5,
        max_loader=90,
        ignore_on=0x10 | 0x01,  # IGNORE_ON_AARCH64 | IGNORE_ON_ENG
    )
    assert p.optional is True
    assert p.selinux_context == "fs_bpf_prog_ctx"
    assert p.pin_subdir == "prog_subdir"
    assert [r.map_name for r in p.map_refs] == ["plain_map", "ro_map", "ugm_map"]


def test_program_macros(every):
    """(section, function, owner, gates, optional) for each DEFINE_*PROG* macro use."""
    got = [
        (p.section, p.name, p.owner, p.gates, p.optional, p.pin_subdir, p.selinux_context)
        for p in every.programs
        if p.section != "schedcls/every_field"
    ]
    root = Ownership(0, 0, 0o440)
    assert got == [
        (
            "tracepoint/sched/sched_switch",
            "plain_prog",
            Ownership(0, 5005, 0o440),
            Gates(),
            False,
            "",
            "",
        ),
        ("xdp/optional", "optional_prog", Ownership(6001, 6002, 0o440), Gates(), True, "", ""),
        ("kprobe/kver_min", "kver_prog", root, Gates(min_kver=kver(5, 15, 0)), False, "", ""),
        (
            "schedcls/ingress6/clat_ether$4_14",
            "clat_4_14",
            root,
            Gates(min_kver=kver(4, 14, 0), max_kver=kver(5, 10, 0)),
            False,
            "",
            "",
        ),
        (
            "schedcls/ingress6/clat_ether$5_10",
            "clat_5_10",
            root,
            Gates(min_kver=kver(5, 10, 0)),
            False,
            "",
            "",
        ),
        ("skfilter/no_def", "no_def_prog", root, Gates(), False, "", ""),
    ]


def test_program_without_a_def_gets_the_defaults(every):
    p = program(every, "skfilter/no_def")
    assert p.owner == Ownership(uid=0, gid=0, mode=0o440)
    assert p.gates == Gates(min_kver=0, max_kver=INF, min_loader=0, max_loader=LOADER_MAX)
    assert (p.optional, p.pin_subdir, p.selinux_context, p.map_refs) == (False, "", "", ())
    assert (int(p.type), p.expected_attach_type) == (PROG["SOCKET_FILTER"], 0)


def test_variant_sections_keep_their_name_and_share_a_base_section(every):
    variants = [p for p in every.programs if "$" in p.section]
    assert [(p.section, p.base_section) for p in variants] == [
        ("schedcls/ingress6/clat_ether$4_14", "schedcls/ingress6/clat_ether"),
        ("schedcls/ingress6/clat_ether$5_10", "schedcls/ingress6/clat_ether"),
    ]
    assert program(every, "skfilter/no_def").base_section == "skfilter/no_def"
    assert all(int(p.type) == PROG["SCHED_CLS"] for p in variants)


def test_instructions_are_the_section_bytes(compile_bpf, every):
    path = compile_bpf("pure_every_field.c", btf=False)
    with path.open("rb") as f:
        elf = ELFFile(f)
        for p in every.programs:
            code = elf.get_section_by_name(p.section).data()
            assert p.instructions == code
            assert p.insn_count == len(code) // 8
    assert program(every, "xdp/optional").insn_count == 2  # r0 = XDP_PASS; exit


def test_map_relocations_recorded_at_the_ld_imm64_they_patch(compile_bpf, every):
    path = compile_bpf("pure_every_field.c", btf=False)
    oracle = readelf_relocations(path)
    assert set(oracle) == {"schedcls/every_field", "tracepoint/sched/sched_switch"}
    for p in every.programs:
        expected = [
            MapReference(insn=offset // 8, map_name=symbol)
            for offset, kind, symbol in oracle.get(p.section, [])
            if kind == R_BPF_64_64
        ]
        assert list(p.map_refs) == expected, p.section
        for ref in p.map_refs:
            assert p.instructions[ref.insn * 8] == 0x18  # BPF_LD | BPF_IMM | BPF_DW
    assert [r.map_name for r in program(every, "tracepoint/sched/sched_switch").map_refs] == [
        "shared_map",
        "kver_map",
    ]
    # Two instructions apart at least: a ld_imm64 is 16 bytes.
    insns = [r.insn for r in program(every, "schedcls/every_field").map_refs]
    assert insns == sorted(insns) and all(b - a >= 2 for a, b in itertools.pairwise(insns))


# -- object-wide sections -----------------------------------------------------------------------


def test_license_and_critical(every):
    assert every.license == "Dual BSD/GPL"
    assert every.critical == "pure test: the network stack needs it"
    assert every.is_critical is True
    assert every.path.endswith("pure_every_field.o")


def test_object_without_critical(compile_bpf):
    spec = read(compile_bpf("pure_prefixes.c"))
    assert spec.critical is None
    assert spec.is_critical is False
    assert spec.license == "GPL"
    assert spec.maps == ()


def test_loader_version_sections_default(every):
    assert (every.min_loader, every.max_loader) == (0, LOADER_MAX)


def test_loader_version_sections_declared(compile_bpf):
    spec = read(
        compile_bpf("pure_every_field.c", None, "-DBPFLOADER_MIN_VER=5u", "-DBPFLOADER_MAX_VER=60u")
    )
    assert (spec.min_loader, spec.max_loader) == (5, 60)
    # The macros without explicit loader versions give each def the object's range too.
    plain = spec.map_named("plain_map")
    assert plain is not None
    assert (plain.gates.min_loader, plain.gates.max_loader) == (5, 60)
    assert (
        program(spec, "xdp/optional").gates.min_loader,
        program(spec, "xdp/optional").gates.max_loader,
    ) == (5, 60)
    # DEFINE_BPF_MAP_EXT and DEFINE_BPF_PROG_EXT keep what they were given.
    first = spec.map_named("first_map")
    assert first is not None and (first.gates.min_loader, first.gates.max_loader) == (3, 77)


# -- the prefix table ---------------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "prog_type", "attach"), README_PREFIXES)
def test_prefix_table_row(prefix, prog_type, attach):
    assert program_kind(prefix + "anything") == (prog_type, attach)
    assert program_kind(prefix) == (prog_type, attach)
    kind = program_kind(prefix + "x")
    assert kind is not None and isinstance(kind[1], int)


def test_prefix_table_holds_every_design_row_in_order():
    """First match wins: the Android rows are all there, in the README's order."""
    table = [(p, int(t), int(a)) for p, t, a in SECTION_PREFIXES]
    android = [row for row in table if row[0] in {p for p, _, _ in README_PREFIXES}]
    assert android == README_PREFIXES


@pytest.mark.parametrize("section", ["bogus/x", "Kprobe/x", "kprobe", "xdp_", "", "/kprobe/x"])
def test_unknown_prefixes(section):
    assert program_kind(section) is None


def test_compiled_sections_of_every_prefix(compile_bpf):
    spec = read(compile_bpf("pure_prefixes.c"))
    assert [(p.section, p.name) for p in spec.programs] == COMPILED_PREFIX_SECTIONS
    for p in spec.programs:
        (row,) = [r for r in README_PREFIXES if p.section.startswith(r[0])]
        assert (int(p.type), p.expected_attach_type) == (row[1], row[2]), p.section
        assert p.owner == Ownership(0, 0, 0o440)
        assert p.map_refs == ()
