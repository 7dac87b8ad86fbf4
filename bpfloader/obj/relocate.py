"""Relocation: give each map-referencing ld_imm64 the fd of its map (and, for global data,
the offset in the map's value), and each use of a kernel symbol what it resolved to."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING

from bpfloader.errors import ObjectFormatError, PlanError
from bpfloader.obj.bpftypes import (
    BPF_PSEUDO_KFUNC_CALL,
    BPF_PSEUDO_MAP_FD,
    BPF_PSEUDO_MAP_VALUE,
    INSN_SIZE,
)
from bpfloader.obj.insn import patch
from bpfloader.obj.spec import ProgramSpec

if TYPE_CHECKING:
    from bpfloader.obj.ksyms import KsymPatch


def relocate(
    program: ProgramSpec,
    map_fds: Mapping[str, int],
    instructions: bytes | None = None,
    externs: Mapping[str, KsymPatch] | None = None,
) -> bytes:
    """The program's instructions (or `instructions`, which CO-RE relocated: obj/core.py) with
    every map reference pointing at `map_fds[name]` and every kernel symbol given its
    `externs[name]` (obj/ksyms.py)."""
    code = bytearray(program.instructions if instructions is None else instructions)
    _externs(program, code, externs or {})
    for ref in program.map_refs:
        fd = map_fds.get(ref.map_name)
        if fd is None:
            raise PlanError(
                f"uses map '{ref.map_name}', which is not loaded here (skipped by its gates?)",
                section=program.section,
            )
        pseudo = BPF_PSEUDO_MAP_FD if ref.offset is None else BPF_PSEUDO_MAP_VALUE
        if not 0 <= ref.insn < len(code) // INSN_SIZE - 1:  # a ld_imm64 takes two slots
            raise ObjectFormatError(
                f"map '{ref.map_name}' is referred to at instruction {ref.insn}, which is not "
                "a ld_imm64 of the program",
                section=program.section,
            )
        try:
            patch(code, ref.insn, src=pseudo, imm=fd)
            if ref.offset is not None:  # the second half of the ld_imm64: the offset in the value
                patch(code, ref.insn + 1, imm=ref.offset)
        except struct.error as e:
            raise ObjectFormatError(
                f"instruction {ref.insn}: offset {ref.offset} in map '{ref.map_name}' does not "
                "fit a ld_imm64",
                section=program.section,
            ) from e
    return bytes(code)


def _externs(program: ProgramSpec, code: bytearray, externs: Mapping[str, KsymPatch]) -> None:
    count = len(code) // INSN_SIZE
    for ref in program.extern_refs:
        value = externs.get(ref.name)
        if value is None:
            raise PlanError(f"extern '{ref.name}' was not resolved", section=program.section)
        if not 0 <= ref.insn < count - (0 if ref.call else 1):
            raise ObjectFormatError(
                f"extern '{ref.name}' is used at instruction {ref.insn}, outside the program",
                section=program.section,
            )
        if ref.call:
            patch(code, ref.insn, src=BPF_PSEUDO_KFUNC_CALL, off=value.call_off, imm=value.call_imm)
        else:
            patch(code, ref.insn, src=value.load_src, imm=_s32(value.load_lo))
            patch(code, ref.insn + 1, imm=_s32(value.load_hi))


def _s32(value: int) -> int:
    """A u32 as the signed immediate an instruction holds."""
    return value - (1 << 32) if value >= 1 << 31 else value
