"""BPF instructions as the loader reads and patches them (pure).

An instruction is the kernel's `struct bpf_insn`, 8 little-endian bytes: the opcode, one byte
of two registers (dst_reg in the low nibble, src_reg in the high one), a signed 16-bit offset
and a signed 32-bit immediate. A ld_imm64 takes two such slots, the second holding the upper
half of its immediate (or, for a map value, the offset in the value) with an opcode of 0.

The reader, the linker and relocation look at a few instructions among thousands (those a
relocation names, and calls), at boot: an `Insn` is made only for those, and `pseudo_calls`
finds the calls without decoding the rest.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from bpfloader.obj.bpftypes import BPF_PSEUDO_CALL, INSN_SIZE, OPCODE_CALL, OPCODE_LD_IMM64

_INSN = struct.Struct("<BBhi")
_pack_imm = struct.Struct("<i").pack_into
_pack_off = struct.Struct("<h").pack_into
# Byte offsets in an instruction, of the registers, the offset and the immediate.
_REGS_AT, _OFF_AT, _IMM_AT = 1, 2, 4


@dataclass(frozen=True)
class Insn:
    code: int  # the opcode
    dst: int
    src: int
    off: int
    imm: int

    @property
    def is_ld_imm64(self) -> bool:
        return self.code == OPCODE_LD_IMM64

    @property
    def is_call(self) -> bool:
        return self.code == OPCODE_CALL


def insn_at(code: bytes | bytearray, index: int) -> Insn:
    """Instruction `index` of `code` (the caller has checked that it is inside)."""
    opcode, regs, off, imm = _INSN.unpack_from(code, index * INSN_SIZE)
    return Insn(opcode, regs & 0x0F, regs >> 4, off, imm)


def patch(
    code: bytearray,
    index: int,
    *,
    src: int | None = None,
    off: int | None = None,
    imm: int | None = None,
) -> None:
    """Rewrite instruction `index` of `code` in place: its src_reg (dst_reg kept), its offset,
    its immediate, or any of them. For the second half of a ld_imm64, patch `index + 1`."""
    at = index * INSN_SIZE
    if src is not None:
        code[at + _REGS_AT] = (code[at + _REGS_AT] & 0x0F) | (src << 4)
    if off is not None:
        _pack_off(code, at + _OFF_AT, off)
    if imm is not None:
        _pack_imm(code, at + _IMM_AT, imm)


def pseudo_calls(code: bytes | bytearray) -> Iterator[int]:
    """The index of every bpf-to-bpf call in `code` (a call whose src_reg is BPF_PSEUDO_CALL),
    in order. Every 8-byte slot is looked at, the second half of a ld_imm64 too (its opcode is
    0 in code the verifier takes)."""
    opcodes, regs = code[::INSN_SIZE], code[_REGS_AT::INSN_SIZE]
    index = opcodes.find(OPCODE_CALL)
    while index >= 0:
        if regs[index] >> 4 == BPF_PSEUDO_CALL:
            yield index
        index = opcodes.find(OPCODE_CALL, index + 1)


def calls_subprograms(code: bytes | bytearray) -> bool:
    """Whether a program makes bpf-to-bpf calls (kernels take them since SUBPROGRAM_CALLS)."""
    return next(pseudo_calls(code), None) is not None
