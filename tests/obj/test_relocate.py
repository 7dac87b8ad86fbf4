"""relocate(): each map-referencing ld_imm64 gets src_reg=BPF_PSEUDO_MAP_FD and imm=fd; nothing else
changes."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from bpfloader.errors import PlanError
from bpfloader.obj.reader import read_object
from bpfloader.obj.relocate import relocate
from bpfloader.obj.spec import MapReference, ProgramSpec

BPF_PSEUDO_MAP_FD = 1  # include/uapi/linux/bpf.h
LD_IMM64 = 0x18


def insn(code: bytes, index: int) -> tuple[int, int, int, int, int]:
    """struct bpf_insn: (opcode, dst_reg, src_reg, off, imm), little-endian bitfields."""
    opcode, regs, off, imm = struct.unpack_from("<BBhi", code, index * 8)
    return opcode, regs & 0x0F, regs >> 4, off, imm


def programs(compile_bpf, source: str, *flags: str) -> dict[str, ProgramSpec]:
    path = compile_bpf(source, None, *flags)
    return {p.section: p for p in read_object(path.read_bytes(), str(path)).programs}


@pytest.fixture(scope="module")
def every_prog(compile_bpf) -> ProgramSpec:
    return programs(compile_bpf, "pure_every_field.c")["schedcls/every_field"]


def test_exactly_the_referenced_instructions_change(every_prog):
    fds = {"plain_map": 7, "ro_map": 300, "ugm_map": 0x7FFFFFFF, "first_map": 99}
    before = every_prog.instructions
    after = relocate(every_prog, fds)
    assert len(after) == len(before)
    refs = {r.insn: r.map_name for r in every_prog.map_refs}
    assert len(refs) == 3
    changed = [
        i for i in range(len(before) // 8) if before[i * 8 : i * 8 + 8] != after[i * 8 : i * 8 + 8]
    ]
    assert changed == sorted(refs)
    for index, name in refs.items():
        opcode, dst, src, off, imm = insn(before, index)
        assert (opcode, src, off, imm) == (LD_IMM64, 0, 0, 0)
        assert insn(after, index) == (LD_IMM64, dst, BPF_PSEUDO_MAP_FD, 0, fds[name])
        # The second half of the ld_imm64 (upper 32 bits of the constant) stays 0.
        assert after[index * 8 + 8 : index * 8 + 16] == before[index * 8 + 8 : index * 8 + 16]
        assert insn(after, index + 1) == (0, 0, 0, 0, 0)
    # The spec itself is a value: relocating gave new bytes and left the spec untouched.
    assert every_prog.instructions == before


def test_relocation_keeps_the_destination_register(every_prog):
    after = relocate(every_prog, {"plain_map": 3, "ro_map": 4, "ugm_map": 5})
    for ref in every_prog.map_refs:
        assert after[ref.insn * 8 + 1] == (BPF_PSEUDO_MAP_FD << 4) | 1  # dst r1, src 1


def test_each_reference_gets_its_own_map_fd(compile_bpf):
    prog = programs(compile_bpf, "pure_layouts.c", "-DMAP_DEF_SIZE=28")[
        "tracepoint/sched/sched_switch"
    ]
    assert [(r.insn, r.map_name) for r in prog.map_refs] == [(4, "second_map"), (12, "first_map")]
    after = relocate(prog, {"first_map": 11, "second_map": 22})
    assert insn(after, 4)[2:] == (BPF_PSEUDO_MAP_FD, 0, 22)
    assert insn(after, 12)[2:] == (BPF_PSEUDO_MAP_FD, 0, 11)


def test_program_without_map_references_is_unchanged(compile_bpf):
    prog = programs(compile_bpf, "pure_every_field.c")["xdp/optional"]
    assert prog.map_refs == ()
    assert relocate(prog, {"plain_map": 3}) == prog.instructions
    assert relocate(prog, {}) == prog.instructions


def test_unknown_map_name_is_a_plan_error(every_prog):
    with pytest.raises(PlanError) as caught:
        relocate(every_prog, {"plain_map": 3, "ugm_map": 5})
    e = caught.value
    assert e.section == "schedcls/every_field"
    assert "'ro_map'" in e.reason
    assert str(e) == (
        "schedcls/every_field: uses map 'ro_map', which is not loaded here (skipped by its gates?)"
    )


def test_reference_to_a_name_no_map_has(every_prog):
    bogus = dataclasses.replace(
        every_prog, map_refs=(*every_prog.map_refs, MapReference(insn=4, map_name="nope"))
    )
    with pytest.raises(PlanError, match="'nope'"):
        relocate(bogus, {"plain_map": 3, "ro_map": 4, "ugm_map": 5})
