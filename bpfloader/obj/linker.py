"""Linking one program: its function, then every subprogram it calls, appended and relocated.

The kernel takes a program as one run of instructions in which bpf-to-bpf calls are relative
jumps. In the object, a program's function calls functions in `.text` (through relocations)
or static functions of its own section (resolved by the compiler, without relocation), and
may take a function's address for a callback (`ld_imm64` with a relocation to code). Each
function called is appended once, at the end, the first time it is met (depth first, as
libbpf does, so that the instructions - and the kernel's tag of them - are the same), and the
calls are rewritten to point at where it landed. The `.BTF.ext` function and line records of
every placed function move with it, and so do its CO-RE relocations (applied to the linked
program once the target BTF is known: obj/core.py).

Work is linear in the object: a section's relocations are read and ordered once and each
function takes its own by bisection (200 programs in one section with a million relocations
must not cost 200 million), as do its function and line records. Call chains are followed
with a stack of our own, not Python's. A program is refused once linked past the kernel's
limit of instructions, and an object whose programs add up to more than MAX_LINKED_INSNS: a
small subprogram called by thousands of programs is copied into each.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from operator import itemgetter
from typing import TypeVar

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.bpftypes import BPF_PSEUDO_FUNC, INSN_SIZE, R_BPF_64_32, R_BPF_64_64
from bpfloader.obj.btf import BtfExt, CoreReloRecord
from bpfloader.obj.core import CoreRelocation
from bpfloader.obj.elf import ElfObject, Relocation, Relocations, Section
from bpfloader.obj.insn import Insn, insn_at, patch, pseudo_calls
from bpfloader.obj.spec import ExternReference, FuncInfo, LineInfo, MapReference

MAX_PROGRAM_INSNS = 1_000_000  # BPF_COMPLEXITY_LIMIT_INSNS: the kernel loads none longer
MAX_LINKED_INSNS = 1 << 22  # every program of an object, linked (32 MiB of instructions)


@dataclass(frozen=True, eq=False)  # one object per function: hashed by identity, not by value
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


# What a relocation means - a map's fd, an address in a map's value, a kernel symbol, or
# code - given the relocation, the instruction's immediate (the addend) and where it is.
Classifier = Callable[[Relocation, int, str], MapReference | ExternReference | CodeTarget]


@dataclass
class LinkedProgram:
    instructions: bytes
    map_refs: tuple[MapReference, ...]
    func_info: tuple[FuncInfo, ...]
    line_info: tuple[LineInfo, ...]
    core_relos: tuple[CoreRelocation, ...] = ()
    extern_refs: tuple[ExternReference, ...] = ()


@dataclass
class _Work:
    code: bytearray
    placed: dict[Function, int] = field(default_factory=dict)  # function -> first instruction
    refs: list[MapReference] = field(default_factory=list)
    externs: list[ExternReference] = field(default_factory=list)


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
        self._relocations: dict[int, Relocations] = {}
        self._linked = 0  # instructions of the programs linked so far

    def link(self, main: Function) -> LinkedProgram:
        work = _Work(bytearray(main.code))
        work.placed[main] = 0
        # Depth first, as a recursion would (and libbpf does): a function's callee is placed
        # and relocated, with its own callees, before the rest of the function.
        stack = [self._relocate(main, work)]
        while stack:
            callee = next(stack[-1], None)
            if callee is None:
                stack.pop()
            else:
                stack.append(self._relocate(callee, work))
        self._linked += len(work.code) // INSN_SIZE
        if self._linked > MAX_LINKED_INSNS:
            raise ObjectFormatError(
                f"its programs come to more than {MAX_LINKED_INSNS} instructions once linked "
                f"(with '{main.name}')",
                section=main.section.name,
            )
        order = sorted(work.placed.items(), key=lambda item: item[1])
        return LinkedProgram(
            bytes(work.code),
            tuple(work.refs),
            tuple(self._func_info(order)),
            tuple(self._line_info(order)),
            tuple(self._core_relos(order)),
            tuple(work.externs),
        )

    def _relocate(self, fn: Function, work: _Work) -> Iterator[Function]:
        """Relocate `fn`, placed at work.placed[fn], and place every function it calls,
        yielding each newly placed one to be relocated before `fn` goes on.

        Only the instructions a relocation names and the calls are looked at, in order; they
        are read from the function's own bytes, which work.code holds unchanged until each
        instruction is itself rewritten."""
        at = work.placed[fn]
        section = fn.section
        code = fn.code
        for i, reloc in self._instructions(fn, code):
            insn = insn_at(code, i)
            target: int
            if reloc is not None:
                place = f"instruction {fn.start + i} of '{fn.name}'"
                try:
                    _check_relocation(reloc, insn, place)
                    where = self.classify(reloc, insn.imm, place)
                except ObjectFormatError as e:
                    e.where(section=section.name)
                    raise
                if isinstance(where, ExternReference):
                    work.externs.append(ExternReference(at + i, where.name, where.call))
                    continue
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
            placed = callee not in work.placed
            if placed:
                work.placed[callee] = len(work.code) // INSN_SIZE
                work.code += callee.code
                if len(work.code) // INSN_SIZE > MAX_PROGRAM_INSNS:
                    raise ObjectFormatError(
                        f"program '{next(iter(work.placed)).name}' is longer than the kernel's "
                        f"limit of {MAX_PROGRAM_INSNS} instructions once linked",
                        section=section.name,
                    )
            patch(
                work.code,
                at + i,
                src=BPF_PSEUDO_FUNC if insn.is_ld_imm64 else None,
                imm=work.placed[callee] - (at + i) - 1,
            )
            if placed:
                yield callee

    def _instructions(self, fn: Function, code: bytes) -> Iterator[tuple[int, Relocation | None]]:
        """The instructions of `fn` to look at, in order, as (index in `fn`, its relocation):
        those a relocation names (the last in file order, where two name one) and the calls.
        Both come in order, merged as they come: nothing is held per instruction."""
        relocations = self._relocations_of(fn.section).between(
            fn.start * INSN_SIZE, fn.end * INSN_SIZE
        )
        merged = heapq.merge(
            ((r.offset // INSN_SIZE - fn.start, r) for r in relocations),
            ((i, None) for i in pseudo_calls(code)),
            key=itemgetter(0),
        )
        for i, group in groupby(merged, key=itemgetter(0)):
            found = None
            for _, reloc in group:
                found = reloc or found
            yield i, found

    def _relocations_of(self, section: Section) -> Relocations:
        """The section's relocations, read, ordered and checked once."""
        relocations = self._relocations.get(section.index)
        if relocations is None:
            relocations = self.elf.relocations_by_offset(section.index)
            size = len(section.data)
            offsets = relocations.offsets
            if offsets and (offsets[-1] + INSN_SIZE > size or any(o % INSN_SIZE for o in offsets)):
                bad = next(o for o in offsets if o % INSN_SIZE or o + INSN_SIZE > size)
                raise ObjectFormatError(
                    f"relocation at offset {bad} is not on an instruction", section=section.name
                )
            self._relocations[section.index] = relocations
        return relocations

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
            for rec in _within(self.ext.func_info.get(fn.section.name, ()), fn)
        ]

    def _line_info(self, order: list[tuple[Function, int]]) -> list[LineInfo]:
        if self.ext is None:
            return []
        return [
            LineInfo(at + rec.insn - fn.start, rec.file_name_off, rec.line_off, rec.line_col)
            for fn, at in order
            for rec in _within(self.ext.line_info.get(fn.section.name, ()), fn)
        ]

    def _core_relos(self, order: list[tuple[Function, int]]) -> list[CoreRelocation]:
        if self.ext is None or not self.ext.core_relos:
            return []
        return [
            CoreRelocation(at + rec.insn - fn.start, fn.section.name, rec)
            for fn, at in order
            for rec in _within(self.ext.core_relos.get(fn.section.name, ()), fn)
        ]


_Record = TypeVar("_Record", FuncInfo, LineInfo, CoreReloRecord)


def _within(records: Sequence[_Record], fn: Function) -> Sequence[_Record]:
    """The records of `fn`'s instructions, by bisection: a section's records are in the order
    of their instructions (parse_btf_ext refuses them otherwise)."""
    lo = bisect.bisect_left(records, fn.start, key=_insn)
    return records[lo : bisect.bisect_left(records, fn.end, lo, key=_insn)]


def _insn(record: FuncInfo | LineInfo | CoreReloRecord) -> int:
    return record.insn


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
