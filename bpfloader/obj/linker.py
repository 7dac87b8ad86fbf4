"""Linking one program: its function, then every subprogram it calls, appended and relocated.

The kernel takes a program as one run of instructions in which bpf-to-bpf calls are relative
jumps. In the object, a program's function calls functions in `.text` (through relocations)
or static functions of its own section (resolved by the compiler, without relocation), and
may take a function's address for a callback (`ld_imm64` with a relocation to code). Each
function called is appended once, at the end, the first time it is met (depth first, as
libbpf does, so that the instructions - and the kernel's tag of them - are the same), and the
calls are rewritten to point at where it landed. The `.BTF.ext` function and line records of
every placed function move with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.bpftypes import BPF_PSEUDO_FUNC, INSN_SIZE, R_BPF_64_32, R_BPF_64_64
from bpfloader.obj.btf import BtfExt, FuncInfo, LineInfo
from bpfloader.obj.elf import ElfObject, Relocation, Section
from bpfloader.obj.insn import Insn, insn_at, patch, pseudo_calls
from bpfloader.obj.spec import MapReference


@dataclass(frozen=True)
class Function:
    name: str
    section: Section
    start: int  # first instruction, as an index in its section
    end: int  # one past the last
    is_program: bool  # a program's entry (a global function outside .text)

    @property
    def code(self) -> bytes:
        return self.section.data[self.start * INSN_SIZE : self.end * INSN_SIZE]


@dataclass(frozen=True)
class CodeTarget:
    """A relocation that points at code: byte `offset` of section `section`."""

    section: int
    offset: int


# What a relocation means - a map's fd, an address in a map's value, or code - given the
# relocation, the instruction's immediate (the addend) and where it is, for messages.
Classifier = Callable[[Relocation, int, str], MapReference | CodeTarget]


@dataclass
class LinkedProgram:
    instructions: bytes
    map_refs: tuple[MapReference, ...]
    func_info: tuple[FuncInfo, ...]
    line_info: tuple[LineInfo, ...]


@dataclass
class _Work:
    code: bytearray
    placed: dict[Function, int] = field(default_factory=dict)  # function -> first instruction
    refs: list[MapReference] = field(default_factory=list)


class Linker:
    """Links the programs of one object. `classify` says what a relocation refers to,
    raising ObjectFormatError for what cannot be loaded."""

    def __init__(
        self,
        elf: ElfObject,
        functions: list[Function],
        classify: Classifier,
        ext: BtfExt | None,
    ):
        self.elf = elf
        self.classify = classify
        self.ext = ext
        self._at: dict[tuple[int, int], Function] = {
            (f.section.index, f.start): f for f in functions
        }

    def link(self, main: Function) -> LinkedProgram:
        work = _Work(bytearray(main.code))
        work.placed[main] = 0
        self._relocate(main, work)
        order = sorted(work.placed.items(), key=lambda item: item[1])
        return LinkedProgram(
            bytes(work.code),
            tuple(work.refs),
            tuple(self._func_info(order)),
            tuple(self._line_info(order)),
        )

    def _relocate(self, fn: Function, work: _Work) -> None:
        """Relocate `fn`, placed at work.placed[fn], and place every function it calls.

        Only the instructions a relocation names and the calls are looked at, in order; they
        are read from the function's own bytes, which work.code holds unchanged until each
        instruction is itself rewritten."""
        at = work.placed[fn]
        section = fn.section
        relocations = self._relocations_in(fn)
        code = fn.code
        for i in sorted(relocations.keys() | set(pseudo_calls(code))):
            insn = insn_at(code, i)
            reloc = relocations.get(i)
            target: int
            if reloc is not None:
                place = f"instruction {fn.start + i} of '{fn.name}'"
                try:
                    _check_relocation(reloc, insn, place)
                    where = self.classify(reloc, insn.imm, place)
                except ObjectFormatError as e:
                    e.where(section=section.name)
                    raise
                if isinstance(where, MapReference):
                    if reloc.type == R_BPF_64_32:
                        raise ObjectFormatError(
                            f"{place} calls '{reloc.symbol.name}', which is not a function",
                            section=section.name,
                        )
                    work.refs.append(MapReference(at + i, where.map_name, where.offset))
                    continue
                callee_section = self.elf.section_at(where.section)
                assert callee_section is not None  # the classifier checked it
                if reloc.type == R_BPF_64_32:
                    target = where.offset // INSN_SIZE + insn.imm + 1
                else:
                    target = (where.offset + insn.imm) // INSN_SIZE
                callee = self._function_at(callee_section, target, fn, i)
            else:  # a call the compiler resolved: to a static function of this section
                callee = self._function_at(section, fn.start + i + insn.imm + 1, fn, i)
            if callee.is_program:
                raise ObjectFormatError(
                    f"instruction {fn.start + i} of '{fn.name}' calls '{callee.name}', the entry "
                    f"of a program (section '{callee.section.name}'); subprograms live in .text "
                    "or are static",
                    section=section.name,
                )
            if callee not in work.placed:
                work.placed[callee] = len(work.code) // INSN_SIZE
                work.code += callee.code
                self._relocate(callee, work)
            patch(
                work.code,
                at + i,
                src=BPF_PSEUDO_FUNC if insn.is_ld_imm64 else None,
                imm=work.placed[callee] - (at + i) - 1,
            )

    def _relocations_in(self, fn: Function) -> dict[int, Relocation]:
        found = {}
        size = len(fn.section.data)
        for reloc in self.elf.relocations(fn.section.index):
            if reloc.offset % INSN_SIZE or reloc.offset + INSN_SIZE > size:
                raise ObjectFormatError(
                    f"relocation at offset {reloc.offset} is not on an instruction",
                    section=fn.section.name,
                )
            index = reloc.offset // INSN_SIZE
            if fn.start <= index < fn.end:
                found[index - fn.start] = reloc
        return found

    def _function_at(self, section: Section, index: int, caller: Function, i: int) -> Function:
        callee = self._at.get((section.index, index))
        if callee is None:
            raise ObjectFormatError(
                f"instruction {caller.start + i} of '{caller.name}' calls instruction {index} "
                f"of section '{section.name}', which does not start a function",
                section=caller.section.name,
            )
        return callee

    def _func_info(self, order: list[tuple[Function, int]]) -> list[FuncInfo]:
        if self.ext is None:
            return []
        return [
            FuncInfo(at + rec.insn - fn.start, rec.type_id)
            for fn, at in order
            for rec in self.ext.func_info.get(fn.section.name, [])
            if fn.start <= rec.insn < fn.end
        ]

    def _line_info(self, order: list[tuple[Function, int]]) -> list[LineInfo]:
        if self.ext is None:
            return []
        return [
            LineInfo(at + rec.insn - fn.start, rec.file_name_off, rec.line_off, rec.line_col)
            for fn, at in order
            for rec in self.ext.line_info.get(fn.section.name, [])
            if fn.start <= rec.insn < fn.end
        ]


def _check_relocation(reloc: Relocation, insn: Insn, place: str) -> None:
    """Code takes two kinds of relocation: a ld_imm64 of an address, a call of a function."""
    if reloc.type == R_BPF_64_64 and insn.is_ld_imm64:
        return
    if reloc.type == R_BPF_64_32 and insn.is_call:
        return
    raise ObjectFormatError(
        f"{place}: relocation type {reloc.type} to '{reloc.symbol.name}' on an instruction "
        f"with opcode {insn.code:#04x} (only ld_imm64 of an address and calls of functions are "
        "relocated)"
    )
