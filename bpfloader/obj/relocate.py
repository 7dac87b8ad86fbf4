"""Relocation: give each map-referencing ld_imm64 the fd of its map (and, for global data,
the offset in the map's value)."""

from __future__ import annotations

import struct
from collections.abc import Mapping

from bpfloader.errors import PlanError
from bpfloader.obj.spec import ProgramSpec

BPF_PSEUDO_MAP_FD = 1
BPF_PSEUDO_MAP_VALUE = 2


def relocate(program: ProgramSpec, map_fds: Mapping[str, int]) -> bytes:
    """The program's instructions with every map reference pointing at `map_fds[name]`."""
    code = bytearray(program.instructions)
    for ref in program.map_refs:
        fd = map_fds.get(ref.map_name)
        if fd is None:
            raise PlanError(
                f"uses map '{ref.map_name}', which is not loaded here (skipped by its gates?)",
                section=program.section,
            )
        offset = ref.insn * 8
        pseudo = BPF_PSEUDO_MAP_FD if ref.offset is None else BPF_PSEUDO_MAP_VALUE
        regs = code[offset + 1]
        code[offset + 1] = (regs & 0x0F) | (pseudo << 4)  # src_reg is the high nibble
        struct.pack_into("<i", code, offset + 4, fd)
        if ref.offset is not None:  # the second half of the ld_imm64: the offset in the value
            struct.pack_into("<i", code, offset + 12, ref.offset)
    return bytes(code)
