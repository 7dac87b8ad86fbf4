"""The instruction view (obj/insn.py): fields decoded as `struct bpf_insn` lays them out, patches
that change only what they name, and bpf-to-bpf calls found in compiled and linked code as a
plain decode of every slot finds them."""

from __future__ import annotations

import struct

import pytest

from bpfloader.obj.insn import Insn, calls_subprograms, insn_at, patch, pseudo_calls
from bpfloader.obj.reader import read_object
from tests.libbpf_support import libbpf_object

CALL, LD_IMM64, MOV64_IMM, EXIT = 0x85, 0x18, 0xB7, 0x95  # include/uapi/linux/bpf.h


def raw(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, src << 4 | dst, off, imm)


def slow_pseudo_calls(code: bytes) -> list[int]:
    """Every 8-byte slot whose opcode is a call and whose src_reg is 1 (BPF_PSEUDO_CALL)."""
    return [i // 8 for i in range(0, len(code), 8) if code[i] == CALL and code[i + 1] >> 4 == 1]


def test_fields_are_decoded_as_struct_bpf_insn():
    code = raw(MOV64_IMM, dst=3, imm=-5) + raw(0x15, dst=2, src=9, off=-2, imm=0x7FFFFFFF)
    assert insn_at(code, 0) == Insn(MOV64_IMM, 3, 0, 0, -5)
    assert insn_at(code, 1) == Insn(0x15, 2, 9, -2, 0x7FFFFFFF)
    assert insn_at(raw(LD_IMM64, dst=1) + raw(0), 0).is_ld_imm64
    assert insn_at(raw(CALL, imm=1), 0).is_call
    assert not insn_at(raw(EXIT), 0).is_call


def test_a_patch_changes_only_what_it_names():
    code = bytearray(raw(LD_IMM64, dst=7, src=0, off=3, imm=11) + raw(0, imm=12) + raw(EXIT))
    patch(code, 0, src=2, imm=-40)
    assert insn_at(code, 0) == Insn(LD_IMM64, 7, 2, 3, -40)  # dst_reg and off kept
    assert code[8:] == raw(0, imm=12) + raw(EXIT)
    patch(code, 1, imm=99)
    assert insn_at(code, 1) == Insn(0, 0, 0, 0, 99)
    patch(code, 0, src=4)
    assert insn_at(code, 0) == Insn(LD_IMM64, 7, 4, 3, -40)
    with pytest.raises(struct.error):
        patch(code, 0, imm=1 << 31)  # an immediate is a signed 32-bit value


def test_pseudo_calls_are_calls_with_src_reg_1_in_any_slot():
    helper, local = raw(CALL, imm=1), raw(CALL, src=1, imm=2)
    # Every slot is looked at, the second half of a ld_imm64 too (its opcode is 0 here).
    code = helper + local + raw(LD_IMM64, src=4) + local + raw(EXIT) + raw(CALL, src=3)
    assert list(pseudo_calls(code)) == [1, 3]
    assert calls_subprograms(code)
    assert not calls_subprograms(helper + raw(EXIT))
    assert not calls_subprograms(b"")


@pytest.mark.parametrize(
    ("source", "calls"),
    [("libbpf_subprogs.c", True), ("libbpf_globals.c", True), ("libbpf_maps.c", False)],
)
def test_pseudo_calls_of_compiled_and_linked_code(compile_bpf, source, calls):
    path = libbpf_object(compile_bpf, source)
    spec = read_object(path.read_bytes(), str(path))
    for program in spec.programs:
        code = program.instructions
        assert list(pseudo_calls(code)) == slow_pseudo_calls(code)
        assert calls_subprograms(code) == bool(slow_pseudo_calls(code))
    assert any(calls_subprograms(p.instructions) for p in spec.programs) == calls
