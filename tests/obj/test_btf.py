"""BTF and BTF.ext, read by obj/btf.py (pure): the types of compiled objects, the fix-ups the
kernel requires, the function and line records, the fast index used on the kernel's own BTF,
and malformed BTF (truncated, self-referential, dangling) refused with a clear reason."""

from __future__ import annotations

import struct

import pytest

from bpfloader.obj.btf import (
    BtfError,
    Kind,
    parse_btf,
    parse_btf_ext,
    type_ids_by_name,
)
from bpfloader.obj.elf import STT_FUNC, ElfObject
from tests.libbpf_support import libbpf_object

VMLINUX = "/sys/kernel/btf/vmlinux"

# -- a small BTF writer, for blobs the compiler would never make ------------------------------


def _record(name_off: int, kind: Kind, vlen: int, size_or_type: int) -> bytes:
    return struct.pack("<III", name_off, (int(kind) << 24) | vlen, size_or_type)


def t_int(name_off: int = 1, size: int = 4) -> bytes:
    return _record(name_off, Kind.INT, 0, size) + struct.pack("<I", size * 8)


def t_ref(kind: Kind, target: int, name_off: int = 0) -> bytes:
    return _record(name_off, kind, 0, target)


def t_array(element: int, count: int, index: int = 1) -> bytes:
    return _record(0, Kind.ARRAY, 0, 0) + struct.pack("<III", element, index, count)


def blob(*types: bytes, strings: bytes = b"\0int\0name\0") -> bytes:
    data = b"".join(types)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(data), len(data), len(strings))
    return header + data + strings


def section(obj_path, name: str) -> bytes:
    found = ElfObject(obj_path.read_bytes()).section(name)
    assert found is not None
    return found.data


@pytest.fixture(scope="module")
def globals_obj(compile_bpf):
    return libbpf_object(compile_bpf, "libbpf_globals.c")


# -- compiled objects --------------------------------------------------------------------------


def test_types_of_a_compiled_object(globals_obj):
    btf = parse_btf(section(globals_obj, ".BTF"))
    datasecs = {t.name for t in btf.types if t.kind is Kind.DATASEC}
    assert {".data", ".rodata", ".bss", ".data.custom", ".rodata.tuning"} <= datasecs
    variables = {t.name: t for t in btf.types if t.kind is Kind.VAR}
    limit = variables["limit"]  # const volatile int: qualifiers skipped
    assert btf.resolve(limit.size_or_type).kind is Kind.INT
    assert btf.size_of(limit.id) == 4
    assert btf.size_of(variables["bucket"].id) == 4 * 8
    assert btf.size_of(variables["greeting"].id) == 6
    assert btf.named(Kind.FUNC, "read_globals") is not None
    assert btf.named(Kind.FUNC, "no_such_function") is None


def test_fix_ups_fill_sizes_and_offsets_and_sort_the_variables(globals_obj):
    raw = section(globals_obj, ".BTF")
    btf = parse_btf(raw)
    data = btf.datasec(".data")
    assert data is not None and data.size_or_type == 0  # as the compiler leaves it
    fixed = parse_btf(
        btf.fixed_up(
            {
                ".data": 8,
                ".rodata": 12,
                ".bss": 40,
                ".data.custom": 4,
                ".rodata.tuning": 4,
                ".maps": 0,
                "license": 4,
            },
            {".data": {"counter": 4, "hidden": 0}},
        )
    )
    fixed_data = fixed.datasec(".data")
    assert fixed_data is not None and fixed_data.size_or_type == 8
    names = [(fixed.type(v.type).name, v.offset) for v in fixed_data.sec_vars]
    assert names == [("hidden", 0), ("counter", 4)]  # sorted by offset, as the kernel wants
    assert len(fixed.types) == len(btf.types)
    assert fixed.strings == btf.strings


def test_fix_ups_refuse_what_the_elf_contradicts(globals_obj):
    btf = parse_btf(section(globals_obj, ".BTF"))
    with pytest.raises(BtfError, match=r"DATASEC \.\w+ has no ELF section"):
        btf.fixed_up({}, {})
    sizes = {".data": 8, ".rodata": 12, ".bss": 40, ".data.custom": 4, ".rodata.tuning": 4}
    sizes |= {".maps": 0, "license": 4}
    with pytest.raises(BtfError, match=r"variable counter lies outside DATASEC \.data"):
        btf.fixed_up(sizes, {".data": {"counter": 6}})


def test_function_and_line_records(compile_bpf):
    obj = libbpf_object(compile_bpf, "libbpf_subprogs.c")
    btf = parse_btf(section(obj, ".BTF"))
    ext = parse_btf_ext(section(obj, ".BTF.ext"), btf)
    elf = ElfObject(obj.read_bytes())
    text = elf.section(".text")
    assert text is not None
    starts = sorted(s.value // 8 for s in elf.symbols_in(text.index) if s.type == STT_FUNC)
    assert [f.insn for f in ext.func_info[".text"]] == starts  # instruction indexes, not bytes
    assert [btf.type(f.type_id).name for f in ext.func_info["socket"]] == ["measure"]
    lines = ext.line_info[".text"]
    assert lines and all(0 <= line.insn < text.size // 8 for line in lines)
    assert any("bpf_loop" in btf.name_at(line.line_off) for line in lines)
    assert ext.core_relos == {}


def test_core_relocations_are_read(compile_bpf):
    obj = compile_bpf("libbpf_bad.c", "core.o", "-g", "-DCORE")
    btf = parse_btf(section(obj, ".BTF"))
    (record,) = parse_btf_ext(section(obj, ".BTF.ext"), btf).core_relos["socket"]
    assert (btf.name_at(record.access_off), record.kind, record.number) == ("0:0", 0, 0)
    assert btf.type(record.type_id).name == "task_like"


def test_the_fast_index_agrees_with_the_full_parse(globals_obj):
    raw = section(globals_obj, ".BTF")
    btf = parse_btf(raw)
    index = type_ids_by_name(raw, (Kind.FUNC, Kind.VAR))
    for t in btf.types:
        if t.kind in (Kind.FUNC, Kind.VAR):
            assert index[(t.kind, t.name)] == t.id


def test_the_kernels_own_btf_is_indexed():
    with open(VMLINUX, "rb") as f:
        raw = f.read()
    index = type_ids_by_name(raw, (Kind.FUNC, Kind.TYPEDEF))
    full = parse_btf(raw)
    for key in ((Kind.FUNC, "do_unlinkat"), (Kind.TYPEDEF, "btf_trace_sched_switch")):
        found = full.named(*key)
        assert found is not None and index[key] == found.id


# -- malformed BTF -----------------------------------------------------------------------------


def test_a_well_formed_blob_parses():
    btf = parse_btf(blob(t_int(), t_ref(Kind.TYPEDEF, 1, 5), t_array(2, 3)))
    assert btf.type(2).name == "name"
    assert btf.resolve(2).kind is Kind.INT
    assert btf.size_of(3) == 12


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"\x9f\xeb\x01", "shorter than the BTF header"),
        (blob(t_int())[:-10], "run past the end of the section"),
        (struct.pack("<HBB", 0x9FEB, 1, 0) + blob(t_int())[4:], "bad magic"),
        (blob(t_int())[:2] + b"\x02" + blob(t_int())[3:], "unsupported BTF version 2"),
        (blob(t_int(), t_ref(Kind.PTR, 7)), "refers to type 7, which does not exist"),
        (blob(t_int()[:8]), r"type 1 is cut short \(truncated BTF\)"),
        (blob(struct.pack("<III", 0, 25 << 24, 0)), "unknown BTF kind 25"),
        (blob(t_int(name_off=400)), "offset 400 is outside the string table"),
    ],
)
def test_malformed_blobs_are_refused(data, reason):
    with pytest.raises(BtfError, match=reason):
        parse_btf(data)


def test_a_record_cut_short_by_the_type_section_is_truncated():
    whole = t_int() + _record(0, Kind.STRUCT, 2, 8) + struct.pack("<III", 1, 1, 0)  # 1 of 2
    with pytest.raises(BtfError, match=r"type 2 \(STRUCT\) is cut short \(truncated BTF\)"):
        parse_btf(blob(whole))


def test_self_referential_types_are_refused_where_they_are_used():
    # typedef 1 -> typedef 2 -> typedef 1: parses (each reference exists), resolves nowhere.
    loop = parse_btf(blob(t_ref(Kind.TYPEDEF, 2, 1), t_ref(Kind.TYPEDEF, 1, 5)))
    with pytest.raises(BtfError, match="refers to itself"):
        loop.resolve(1)
    with pytest.raises(BtfError, match="refers to itself"):
        loop.size_of(2)
    # An array of itself has no size.
    array = parse_btf(blob(t_array(1, 2)))
    with pytest.raises(BtfError, match="nested too deeply"):
        array.size_of(1)


def test_malformed_btf_ext_is_refused(compile_bpf):
    obj = libbpf_object(compile_bpf, "libbpf_subprogs.c")
    btf = parse_btf(section(obj, ".BTF"))
    ext = section(obj, ".BTF.ext")
    with pytest.raises(BtfError, match=r"shorter than the BTF\.ext header"):
        parse_btf_ext(ext[:10], btf)
    with pytest.raises(BtfError, match="truncated"):
        parse_btf_ext(ext[:40], btf)
    with pytest.raises(BtfError, match=r"bad BTF\.ext magic"):
        parse_btf_ext(b"\0\0" + ext[2:], btf)
