"""Relocation: give each map-referencing ld_imm64 the fd of its map (and, for global data,
the offset in the map's value)."""

from __future__ import annotations

import struct
from collections.abc import Mapping

from bpfloader.errors import ObjectFormatError, PlanError
from bpfloader.obj.bpftypes import BPF_PSEUDO_MAP_FD, BPF_PSEUDO_MAP_VALUE, INSN_SIZE
from bpfloader.obj.insn import patch
from bpfloader.obj.spec import ProgramSpec


def relocate(
    program: ProgramSpec, map_fds: Mapping[str, int], instructions: bytes | None = None
) -> bytes:
    """The program's instructions (or `instructions`, which CO-RE relocated: obj/core.py) with
    every map reference pointing at `map_fds[name]`."""
    code = bytearray(program.instructions if instructions is None else instructions)
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
