"""The CO-RE relocation engine (obj/core.py, pure): the records read from .BTF.ext, each kind's
value against a target whose fields sit elsewhere (tests/bpf/core/core_target.c, values worked out
from its C layout by hand), candidates and their rules, poisoning, the instruction patches and
their checks, and the linker's placement of relocations in subprograms."""

from __future__ import annotations

import struct

import pytest

from bpfloader.errors import ObjectFormatError
from bpfloader.obj import core
from bpfloader.obj.btf import BtfError, CoreReloRecord, Kind, parse_btf, parse_btf_ext
from bpfloader.obj.core import CoreError, CoreKind, CoreRelocation, Resolution
from bpfloader.obj.elf import ElfObject
from bpfloader.obj.reader import read_object
from bpfloader.obj.spec import ObjectSpec


def _spec(path) -> ObjectSpec:
    return read_object(path.read_bytes(), str(path))


def _target(path) -> core.TargetBtf:
    return core.read_target_btf(path.read_bytes(), str(path))


@pytest.fixture(scope="module")
def elsewhere(compile_bpf):
    spec = _spec(compile_bpf("core/core_elsewhere.c"))
    assert spec.core is not None
    return spec


@pytest.fixture(scope="module")
def target(compile_bpf):
    return _target(compile_bpf("core/core_target.c"))


def _by_description(spec: ObjectSpec, results) -> dict[str, Resolution]:
    assert spec.core is not None
    return {spec.core.describe(r): results[r.number] for _, r in spec.core.records}


# -- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, essential",
    [
        ("task_struct", "task_struct"),
        ("task_struct___v2", "task_struct"),
        ("task_struct___old___x", "task_struct___old"),  # the last flavor only
        ("a___b", "a"),
        ("a____b", "a____b"),  # `x___y` with y not `_`: four underscores are no separator
        ("a___", "a___"),
        ("___", "___"),
        ("", ""),
    ],
)
def test_the_essential_name_cuts_the_flavor(name, essential):
    assert core.essential(name) == essential


# -- every kind against a target of our own -----------------------------------------------------

# The target's struct core_item (core/core_target.c): long pad[3] at 0; spare:7, flag_a:6, flag_b:9
# from bit 192; first at 28; inner at 32; small (unsigned int) at 40; array[8] at 44; the union
# at 76; only_in_v2 at 80; embedded (core_inner: pad 0, b 8, a 16; 24 bytes) at 88; 112 bytes.
EXPECTED = {
    ("struct core_item::first", CoreKind.FIELD_BYTE_OFFSET): 28,
    ("struct core_item::inner", CoreKind.FIELD_BYTE_OFFSET): 32,
    ("struct core_inner::b", CoreKind.FIELD_BYTE_OFFSET): 8,
    ("struct core_inner::a", CoreKind.FIELD_BYTE_OFFSET): 16,
    ("struct core_item::flag_a", CoreKind.FIELD_BYTE_OFFSET): 24,
    ("struct core_item::flag_a", CoreKind.FIELD_BYTE_SIZE): 4,
    ("struct core_item::flag_a", CoreKind.FIELD_LSHIFT_U64): 64 - (199 + 6 - 192),
    ("struct core_item::flag_a", CoreKind.FIELD_RSHIFT_U64): 64 - 6,
    ("struct core_item::flag_a", CoreKind.FIELD_SIGNED): 0,
    ("struct core_item::flag_b", CoreKind.FIELD_LSHIFT_U64): 64 - (205 + 9 - 192),
    ("struct core_item::flag_b", CoreKind.FIELD_RSHIFT_U64): 64 - 9,
    ("struct core_item::flag_b", CoreKind.FIELD_SIGNED): 1,
    ("struct core_item::array[2]", CoreKind.FIELD_BYTE_OFFSET): 44 + 2 * 4,
    ("struct core_item::array", CoreKind.FIELD_BYTE_SIZE): 32,
    ("struct core_item::u_int", CoreKind.FIELD_BYTE_OFFSET): 76,  # through the anonymous union
    ("struct core_item::small", CoreKind.FIELD_BYTE_SIZE): 4,  # a short locally
    ("struct core_item::small", CoreKind.FIELD_SIGNED): 0,  # signed locally
    ("struct core_item::embedded.a", CoreKind.FIELD_BYTE_OFFSET): 88 + 16,
    ("struct core_item::embedded.b", CoreKind.FIELD_BYTE_OFFSET): 88 + 8,
    ("struct core_item___v2::only_in_v2", CoreKind.FIELD_EXISTS): 1,
    ("struct core_item___v2::only_in_v2", CoreKind.FIELD_BYTE_OFFSET): 80,
    ("struct core_item___v2::renamed_away", CoreKind.FIELD_EXISTS): 0,
    ("struct core_item___v2", CoreKind.TYPE_EXISTS): 1,  # its essential name is core_item
    ("typedef core_item_t", CoreKind.TYPE_SIZE): 112,
    ("struct core_inner", CoreKind.TYPE_SIZE): 24,
    ("enum core_state::CORE_BUSY", CoreKind.ENUMVAL_VALUE): 11,
    ("enum core_state::CORE_GONE", CoreKind.ENUMVAL_EXISTS): 0,
}


def test_every_kind_against_a_target_where_fields_sit_elsewhere(elsewhere, target):
    results = _by_description(elsewhere, core.resolve(elsewhere.core, target))
    for (path, kind), value in EXPECTED.items():
        result = results[f"'{path}' ({kind.label})"]
        assert (result.poison, result.new) == (False, value), (path, kind)
    assert results["'struct core_item___v2::renamed_away' (field byte offset)"].poison
    assert results["'enum core_state::CORE_GONE' (enum value)"].poison


def test_type_ids(elsewhere, target):
    results = _by_description(elsewhere, core.resolve(elsewhere.core, target))
    assert elsewhere.core is not None
    local_btf = elsewhere.core.btf
    kernel_id = results["'struct core_item' (target type id)"].new
    assert target.vmlinux.type(kernel_id).name == "core_item"
    local = results["'struct core_inner' (local type id)"]
    assert local.orig == local.new and local_btf.type(local.new).name == "core_inner"


def test_against_its_own_btf_every_value_is_the_compilers(elsewhere, compile_bpf):
    results = core.resolve(elsewhere.core, _target(compile_bpf("core/core_elsewhere.c")))
    for result in results.values():
        assert result.poison or result.orig == result.new or not result.validate


def test_type_matches(elsewhere, target):
    assert elsewhere.core is not None
    btf = elsewhere.core.btf
    record = next(r for _, r in elsewhere.core.records if r.kind == CoreKind.TYPE_EXISTS)
    matches = CoreReloRecord(record.insn, record.type_id, record.access_off, 12, 0)
    other = core.ObjectCore(btf, (("s", matches),))
    # core_item___v2's renamed_away is not in the target's core_item: it does not match ...
    assert core.resolve(other, target)[0] == Resolution(orig=1, new=0)
    # ... against itself it does.
    assert core.resolve(other, core.TargetBtf("self", btf))[0] == Resolution(orig=1, new=1)


# -- candidates ---------------------------------------------------------------------------------

AMBIGUOUS_TARGET = """
struct core_inner { long pad; long b; int a; };
struct core_inner___dup { int a; long b; };
struct core_inner t1;
struct core_inner___dup t2;
"""

AGREEING_TARGET = """
struct core_inner { int a; long b; };
struct core_inner___dup { int a; long b; };
struct core_inner t1;
struct core_inner___dup t2;
"""


def test_candidates_that_disagree_are_an_error(elsewhere, compile_bpf):
    target = _target(compile_bpf(AMBIGUOUS_TARGET, "ambiguous.o"))
    with pytest.raises(CoreError) as caught:
        core.resolve(elsewhere.core, target)
    assert "struct core_inner" in str(caught.value)
    assert "the target's candidates disagree" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_candidates_that_agree_are_one(elsewhere, compile_bpf):
    target = _target(compile_bpf(AGREEING_TARGET, "agreeing.o"))
    results = _by_description(elsewhere, core.resolve(elsewhere.core, target))
    assert results["'struct core_inner::b' (field byte offset)"].new == 8
    assert results["'struct core_inner' (type size)"].poison is False


def test_a_candidate_of_another_kind_or_incompatible_field_is_no_candidate(elsewhere, compile_bpf):
    target = _target(compile_bpf(OTHER_KINDS_TARGET, "other_kinds.o"))
    results = _by_description(elsewhere, core.resolve(elsewhere.core, target))
    assert results["'struct core_inner::b' (field byte offset)"].poison  # a union: no candidate
    assert results["'struct core_item::first' (field byte offset)"].new == 0  # int vs long: ok
    assert results["'struct core_item::inner' (field byte offset)"].poison  # not there
    assert results["'struct core_inner' (type size)"] == Resolution(orig=16, new=0)


def test_the_candidates_narrow_to_those_the_first_relocation_matched():
    # Two target candidates of struct s: only the second has field x; the first relocation
    # (x) narrows the candidates to it, so the second (y, which both have, at different
    # offsets) is not ambiguous.
    local = _btf_of_struct([("x", 0), ("y", 32)])
    target = _btf(_struct_type("s", [("y", 64)]) + _struct_type("s", [("x", 0), ("y", 96)]))
    records = tuple(
        ("sec", CoreReloRecord(i, 2, off, CoreKind.FIELD_BYTE_OFFSET, i))
        for i, off in enumerate((local.strings.index(b"0:0\0"), local.strings.index(b"0:1\0")))
    )
    results = core.resolve(core.ObjectCore(local, records), core.TargetBtf("t", target))
    assert results[1].new == 12


OTHER_KINDS_TARGET = """
union core_inner { int a; long b; };
struct core_item { long first; };
union core_inner u;
struct core_item i;
"""


def _module(base: core.Btf, name: str, members: list[tuple[str, int]]) -> bytes:
    """Split BTF over `base`: one struct `name` of `int`s (the base's) at those bit offsets,
    its names in a string table of its own (offsets continue the base's)."""
    strings = b"\0" + b"".join(n.encode() + b"\0" for n in (name, *(m for m, _ in members)))

    def at(text: str) -> int:
        return base.strings_base + len(base.strings) + strings.index(b"\0" + text.encode()) + 1

    int_id = next(t.id for t in base.of_kind(Kind.INT) if t.name == "int")
    types = struct.pack("<III", at(name), (4 << 24) | len(members), 16)
    types += b"".join(struct.pack("<III", at(m), int_id, off) for m, off in members)
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


def test_a_type_vmlinux_lacks_is_found_in_a_module(target):
    local = _btf_of_struct([("x", 0), ("y", 32)])  # struct s
    modules = (("mod_a", _module(target.vmlinux, "t", [("x", 0)])),)
    modules += (("mod_b", _module(target.vmlinux, "s", [("pad", 0), ("x", 64), ("y", 96)])),)
    record = CoreReloRecord(0, 2, local.strings.index(b"0:1\0"), CoreKind.FIELD_BYTE_OFFSET, 0)
    split = core.TargetBtf("t", target.vmlinux, modules)
    result = core.resolve(core.ObjectCore(local, (("sec", record),)), split)
    assert (result[0].orig, result[0].new) == (4, 12)
    (module_btf,) = [b for name, b in split.module_btfs() if name == "mod_b"]
    assert module_btf.first_id == target.vmlinux.end_id
    assert module_btf.type(module_btf.first_id).name == "s"


def test_vmlinux_candidates_are_searched_before_the_modules(elsewhere, target):
    alone = core.resolve(elsewhere.core, target)
    module = _module(target.vmlinux, "core_inner", [("b", 0), ("a", 32)])
    split = core.TargetBtf(target.name, target.vmlinux, (("mod", module),))
    assert core.resolve(elsewhere.core, split) == alone
    assert split._parsed == []  # modules are parsed only for a type vmlinux lacks


def test_a_malformed_module_btf_is_a_one_line_error_naming_it(target):
    local = _btf_of_struct([("x", 0), ("y", 32)])
    record = CoreReloRecord(0, 2, local.strings.index(b"0:1\0"), CoreKind.FIELD_BYTE_OFFSET, 0)
    split = core.TargetBtf("t", target.vmlinux, (("broken", b"\x9f\xeb\x01\x00"),))
    with pytest.raises(CoreError) as caught:
        core.resolve(core.ObjectCore(local, (("sec", record),)), split)
    assert "the BTF of kernel module broken: " in str(caught.value)
    assert "\n" not in str(caught.value)


# -- hand-made BTF --------------------------------------------------------------------------------

_STRINGS = b"\0int\0s\0x\0y\0z\0" + b"0:0\0" + b"0:1\0" + b"0\0" + b"0:5\0" + b"1:0\0" + b"0:\xb2\0"


def _name(name: str) -> int:
    return _STRINGS.index(b"\0" + name.encode() + b"\0") + 1


def _struct_type(name: str, members: list[tuple[str, int]]) -> bytes:
    """A struct of int members (type 1) at the given bit offsets."""
    record = struct.pack("<III", _name(name), (4 << 24) | len(members), 16)
    return record + b"".join(struct.pack("<III", _name(m), 1, off) for m, off in members)


def _btf(types: bytes) -> core.Btf:
    int_type = struct.pack("<IIII", _name("int"), 1 << 24, 4, 32 | 1 << 24)  # signed int
    types = int_type + types
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(_STRINGS))
    return parse_btf(header + types + _STRINGS)


def _btf_of_struct(members: list[tuple[str, int]]) -> core.Btf:
    return _btf(_struct_type("s", members))


@pytest.mark.parametrize(
    "access, kind, message",
    [
        ("0:5", CoreKind.FIELD_BYTE_OFFSET, "member 5 of type 2 does not exist"),
        ("0:0", CoreKind.TYPE_SIZE, "a type relocation's access string is '0:0', not '0'"),
        ("0", CoreKind.ENUMVAL_VALUE, "is not an enumerator of type 2"),
        ("", CoreKind.FIELD_BYTE_OFFSET, "access string '' is malformed"),
        # A digit to str.isdigit, not to int() (found by the fuzzer: Latin-1's superscript 2).
        ("0:\xb2", CoreKind.FIELD_BYTE_OFFSET, "access string '0:\xb2' is malformed"),
    ],
)
def test_malformed_local_specs_are_one_line_errors(access, kind, message):
    local = _btf_of_struct([("x", 0), ("y", 32)])
    off = local.strings.index(access.encode("latin-1") + b"\0") if access else 0
    records = (("sec", CoreReloRecord(0, 2, off, kind, 0)),)
    with pytest.raises(CoreError) as caught:
        core.resolve(core.ObjectCore(local, records), core.TargetBtf("t", local))
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.section == "sec"


def test_an_array_index_on_the_root_scales_by_its_size():
    local = _btf_of_struct([("x", 0), ("y", 32)])
    target = _btf_of_struct([("z", 0), ("x", 64), ("y", 96)])
    record = CoreReloRecord(0, 2, local.strings.index(b"1:0\0"), CoreKind.FIELD_BYTE_OFFSET, 0)
    result = core.resolve(core.ObjectCore(local, (("s", record),)), core.TargetBtf("t", target))
    assert (result[0].orig, result[0].new) == (16, 16 + 8)


# -- records --------------------------------------------------------------------------------------


def _ext(records: list[tuple[int, int, int, int]], section_name_off: int = 1) -> bytes:
    core_part = struct.pack("<I", 16) + struct.pack("<II", section_name_off, len(records))
    core_part += b"".join(struct.pack("<IIII", *r) for r in records)
    header = struct.pack("<HBBIIIIIII", 0xEB9F, 1, 0, 32, 0, 0, 0, 0, 0, len(core_part))
    return header + core_part


@pytest.mark.parametrize(
    "record, message",
    [
        ((4, 2, 0, 0), "CO-RE relocation #0 of section 'int': offset 4"),
        ((8, 2, 0, 13), "unknown kind 13"),
        ((8, 99, 0, 0), "type id 99 does not exist"),
        ((8, 2, 1 << 20, 0), "outside the string table"),
    ],
)
def test_bad_records_are_one_line_errors(record, message):
    btf = _btf_of_struct([("x", 0)])
    with pytest.raises(BtfError) as caught:
        parse_btf_ext(_ext([record]), btf)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_records_are_numbered_in_file_order_and_sorted_by_instruction():
    btf = _btf_of_struct([("x", 0)])
    ext = parse_btf_ext(_ext([(16, 2, 0, 0), (8, 2, 0, 2)]), btf)
    assert [(r.insn, r.number) for r in ext.core_relos["int"]] == [(1, 1), (2, 0)]


def test_truncated_records_are_refused():
    btf = _btf_of_struct([("x", 0)])
    with pytest.raises(BtfError):
        parse_btf_ext(_ext([(8, 2, 0, 0)])[:-4], btf)


# -- patching -------------------------------------------------------------------------------------


def _insn(code: int, regs: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, regs, off, imm)


def _apply(code: bytes, result: Resolution, insn: int = 0) -> bytes:
    record = CoreReloRecord(insn, 1, 0, 0, 0)
    return core.apply(code, (CoreRelocation(insn, "sec", record),), {0: result})


POISON = _insn(0x85, imm=0xBAD2310)


def test_alu_immediates_loads_and_ld_imm64_are_patched():
    assert _apply(_insn(0xB7, 1, imm=4), Resolution(orig=4, new=9)) == _insn(0xB7, 1, imm=9)
    ldx = _insn(0x61, 0x21, off=4)  # r1 = *(u32 *)(r2 + 4)
    assert _apply(ldx, Resolution(orig=4, new=40, orig_size=4, new_size=4)) == _insn(
        0x61, 0x21, off=40
    )
    stx = _insn(0x63, 0x21, off=4)  # *(u32 *)(r1 + 4) = r2
    assert _apply(stx, Resolution(orig=4, new=12, orig_size=4, new_size=4)) == _insn(
        0x63, 0x21, off=12
    )
    st = _insn(0x62, 0x01, off=4, imm=7)  # *(u32 *)(r1 + 4) = 7
    assert _apply(st, Resolution(orig=4, new=12)) == _insn(0x62, 0x01, off=12, imm=7)
    alu32 = _insn(0x04, 1, imm=-1)  # w1 += -1: an immediate compared as libbpf's u64 is
    assert _apply(alu32, Resolution(orig=(1 << 64) - 1, new=5)) == _insn(0x04, 1, imm=5)
    ld = _insn(0x18, 1, imm=7) + _insn(0)
    big = (3 << 32) | 5
    assert _apply(ld, Resolution(orig=7, new=big)) == _insn(0x18, 1, imm=5) + _insn(0, imm=3)


def test_a_load_of_a_field_whose_size_changed_is_resized():
    ldx = _insn(0x61, 0x21, off=4)  # u32
    out = _apply(ldx, Resolution(orig=4, new=8, orig_size=4, new_size=8))
    assert out == _insn(0x79, 0x21, off=8)  # u64
    # ... unless its type makes that unsafe (a signed integer): the load is poisoned
    out = _apply(ldx, Resolution(orig=4, new=8, orig_size=4, new_size=8, bad_size_change=True))
    assert out == POISON


def test_poisoning():
    assert _apply(_insn(0xB7, 1, imm=4), Resolution(poison=True)) == POISON
    ld = _insn(0x18, 1, imm=7) + _insn(0)
    assert _apply(ld, Resolution(poison=True)) == POISON + POISON


@pytest.mark.parametrize(
    "code, result, message",
    [
        (_insn(0xB7, 1, imm=5), Resolution(orig=4, new=9), "holds 5, not the expected 4"),
        (_insn(0x0F, 0x21), Resolution(orig=0, new=9), "an ALU instruction with a register"),
        (_insn(0x61, 0x21, off=4), Resolution(orig=4, new=1 << 15), "does not fit a load"),
        (_insn(0x61, 0x21, off=3), Resolution(orig=4, new=8), "has offset 3, not the expected"),
        (
            _insn(0x69, 0x21, off=4),
            Resolution(orig=4, new=8, orig_size=4, new_size=8),
            "accesses 2 bytes; the field has 4",
        ),
        (
            _insn(0x61, 0x21, off=4),
            Resolution(orig=4, new=8, orig_size=4, new_size=3),
            "no load or store of 3 bytes",
        ),
        (_insn(0x18, 0x11) + _insn(0), Resolution(), "(ld_imm64) has an unexpected form"),
        (_insn(0x18, 1), Resolution(), "a ld_imm64 cut short"),
        (_insn(0x85), Resolution(), "(opcode 0x85) cannot be relocated"),
    ],
)
def test_instructions_that_do_not_hold_what_the_relocation_expects(code, result, message):
    with pytest.raises(CoreError) as caught:
        _apply(code, result)
    assert message in str(caught.value) and caught.value.section == "sec"


def test_a_relocation_outside_the_program_is_refused():
    with pytest.raises(CoreError, match="instruction 3 is outside the program"):
        _apply(_insn(0xB7), Resolution(), insn=3)


# -- placement in linked programs -----------------------------------------------------------------


def test_relocations_follow_the_linker_into_each_copy_of_a_subprogram(elsewhere, compile_bpf):
    elf = ElfObject(compile_bpf("core/core_elsewhere.c").read_bytes())
    for program in elsewhere.programs:
        assert program.core_relos
        for relo in program.core_relos:
            section = elf.section(relo.section)
            assert section is not None
            at = relo.record.insn * 8
            assert (
                program.instructions[relo.insn * 8 : relo.insn * 8 + 8] == section.data[at : at + 8]
            ), (program.name, relo)
    # the subprogram's relocation is in both programs, at the place it landed in each
    subprogram = [
        {r.record.number for r in p.core_relos if r.section == ".text"} for p in elsewhere.programs
    ]
    assert subprogram[0] and subprogram[0] == subprogram[1]


def test_core_relocations_in_an_android_object_are_refused(compile_bpf):
    from bpfloader.obj.object_btf import read_object_btf

    elf = ElfObject(compile_bpf("core/core_elsewhere.c").read_bytes())
    with pytest.raises(ObjectFormatError, match="supported in libbpf-style objects only"):
        read_object_btf(elf)


def test_a_target_file_without_btf_is_a_one_line_error():
    with pytest.raises(CoreError, match=r"target BTF t\.o: not a 64-bit little-endian ELF file"):
        core.read_target_btf(b"\x7fELF\x01\x01" + bytes(64), "t.o")
    with pytest.raises(CoreError, match="target BTF t: bad magic"):
        core.read_target_btf(bytes(64), "t")
