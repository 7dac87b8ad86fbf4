"""Reading a libbpf-style object: BTF-defined maps, libbpf's section names, several programs
per section, subprograms, global data, and the object's BTF (pure: bytes in, spec out).

Programs are the global functions of the code sections other than `.text`; their pins are
named from the section, followed by the function's name where the section is exactly one of
libbpf's names and carries no name of its own (`socket` -> `socket/measure`). Ownership is
not in the object: maps default to root 0600, programs to root 0440 (a policy file next to
the object may say otherwise, see loader/policy.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.bpftypes import INSN_SIZE, R_BPF_64_32, ProgType
from bpfloader.obj.btf_maps import MAPS_SECTION, read_btf_maps
from bpfloader.obj.core import object_core
from bpfloader.obj.defs import LEGACY_MAPS_SECTION, read_legacy_maps
from bpfloader.obj.elf import (
    SHN_UNDEF,
    SPECIAL_SECTION_INDEXES,
    STB_GLOBAL,
    STB_WEAK,
    STT_FUNC,
    STT_OBJECT,
    STT_SECTION,
    ElfObject,
    Relocation,
    Symbol,
)
from bpfloader.obj.global_data import data_map, is_data_section, kconfig_map
from bpfloader.obj.ksyms import KsymKind
from bpfloader.obj.libbpf_sections import ProgramKind, SectionDef, program_kind, unknown_section
from bpfloader.obj.linker import CodeTarget, Function, LinkedProgram, Linker
from bpfloader.obj.object_btf import read_object_btf
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.spec import (
    PROGRAM_PIN_MODE,
    ExternReference,
    MapReference,
    MapSpec,
    ObjectSpec,
    ObjectStyle,
    ProgramSpec,
)
from bpfloader.obj.struct_ops import SECTIONS as STRUCT_OPS_SECTIONS
from bpfloader.obj.struct_ops import read_struct_ops


def read_libbpf_object(
    elf: ElfObject, path: str, license: str, types: Mapping[str, SectionDef]
) -> ObjectSpec:
    """`types`: program types a policy file gives, by program name ("": every program)."""
    return _Reader(elf, path, types).read(license)


class _Reader:
    def __init__(self, elf: ElfObject, path: str, types: Mapping[str, SectionDef]):
        self.elf = elf
        self.path = path
        self.types = types
        self.object_btf = read_object_btf(elf, core=True, externs=True)
        self.btf = self.object_btf.btf if self.object_btf else None
        self.kconfig = self.object_btf.kconfig if self.object_btf else None
        self.ksyms = self.object_btf.ksyms if self.object_btf else None
        self.kconfig_map = kconfig_map(self.kconfig, path) if self.kconfig else None
        self.kconfig_offsets = self.kconfig.offsets() if self.kconfig else {}
        self.ext = self.object_btf.ext if self.object_btf else None
        self.data_maps: dict[int, MapSpec] = {
            s.index: data_map(s, path, self.btf) for s in elf.sections if is_data_section(s)
        }
        maps_section = elf.section(MAPS_SECTION)
        self.maps_index = maps_section.index if maps_section is not None else None
        self.maps_by_offset: dict[int, str] = {}
        self.btf_maps: list[MapSpec] = []
        if maps_section is not None and maps_section.size:
            symbols = elf.symbols_in(maps_section.index)
            self.btf_maps = read_btf_maps(self.btf, symbols, elf.relocations(maps_section.index))
            names = {m.name for m in self.btf_maps}
            self.maps_by_offset = {
                s.value: s.name for s in symbols if s.type == STT_OBJECT and s.name in names
            }
        # libbpf before 1.0: `struct bpf_map_def`s in `maps` (reader.is_libbpf_style).
        legacy = elf.section(LEGACY_MAPS_SECTION)
        self.legacy_index = legacy.index if legacy is not None else None
        self.legacy_maps = (
            read_legacy_maps(legacy.data, elf.symbols_in(legacy.index), self.object_btf)
            if legacy is not None
            else {}
        )

    def read(self, license: str) -> ObjectSpec:
        maps = (*self.legacy_maps.values(), *self.btf_maps, *self.data_maps.values())
        if self.kconfig_map is not None:
            maps = (*maps, self.kconfig_map)
        functions = self._functions()
        linker = Linker(self.elf, functions, self._classify, self.ext)
        programs = tuple(self._program(fn, linker) for fn in functions if fn.is_program)
        core = None
        if self.btf is not None and self.ext is not None and self.ext.core_relos:
            spans: dict[str, list[int]] = {}
            for section, start, end in sorted(
                {(f.section.name, f.start, f.end) for f in functions}
            ):
                spans.setdefault(section, []).extend((start, end))  # aliases once
            core = object_core(self.btf, self.ext.core_relos, spans)
        maps = (*maps, *self._struct_ops_maps(functions))
        _check_unique_names(maps)
        _check_struct_ops_programs(programs, maps)
        functions_loaded = {p.name for p in programs}
        for spec in self.btf_maps:
            for slot in spec.slots:
                if slot.is_program and slot.target not in functions_loaded:
                    raise ObjectFormatError(
                        f"map '{spec.name}': element {slot.index} names function "
                        f"'{slot.target}', which is not a program of this object",
                        section=MAPS_SECTION,
                    )
        return ObjectSpec(
            path=self.path,
            license=license,
            maps=maps,
            programs=programs,
            style=ObjectStyle.LIBBPF,
            btf=self.object_btf.fixed_up if self.object_btf else None,
            core=core,
            kconfig=self.kconfig,
            ksyms=self.ksyms,
        )

    def _struct_ops_maps(self, functions: list[Function]) -> list[MapSpec]:
        """The variables of `.struct_ops` and `.struct_ops.link`, each a struct_ops map."""
        starts = {(f.section.index, f.start * INSN_SIZE): f.name for f in functions if f.is_program}
        found: list[MapSpec] = []
        for name in STRUCT_OPS_SECTIONS:
            section = self.elf.section(name)
            if section is not None and section.size:
                found += read_struct_ops(
                    self.btf,
                    section,
                    self.elf.symbols_in(section.index),
                    self.elf.relocations(section.index),
                    lambda index, at: starts.get((index, at)),
                )
        return found

    # -- programs -----------------------------------------------------------------------------

    def _functions(self) -> list[Function]:
        functions = []
        for section in self.elf.sections:
            if not section.executable or not section.data:
                continue
            if len(section.data) % INSN_SIZE:
                raise ObjectFormatError(
                    f"code size {len(section.data)} is not a multiple of {INSN_SIZE}",
                    section=section.name,
                )
            found = [s for s in self.elf.symbols_in(section.index) if s.type == STT_FUNC]
            if not found:
                raise ObjectFormatError("code without a function symbol", section=section.name)
            _check_no_overlap(found, section.name)
            for symbol in found:
                start, size = symbol.value, symbol.size
                if (
                    start % INSN_SIZE
                    or size % INSN_SIZE
                    or not 0 < start + size <= len(section.data)
                ):
                    raise ObjectFormatError(
                        f"function '{symbol.name}' (bytes {start}..{start + size}) is not a run "
                        "of whole instructions inside the section",
                        section=section.name,
                    )
                is_program = section.name != ".text" and symbol.bind in (STB_GLOBAL, STB_WEAK)
                functions.append(
                    Function(
                        symbol.name,
                        section,
                        start // INSN_SIZE,
                        (start + size) // INSN_SIZE,
                        is_program,
                    )
                )
        return functions

    def _program(self, fn: Function, linker: Linker) -> ProgramSpec:
        section = fn.section.name
        kind = program_kind(section)
        given = self.types.get(fn.name) or self.types.get("")
        if given is not None:
            kind = ProgramKind(given, kind.own_name if kind is not None else "")
        if kind is None:
            raise ObjectFormatError(unknown_section(section), section=section)
        definition = kind.definition
        if definition.target is not None and not kind.own_name:
            raise ObjectFormatError(
                f"a {definition.name} program names what it attaches to: '{definition.name}/NAME'",
                section=section,
            )
        linked: LinkedProgram = linker.link(fn)
        stem = section if kind.own_name else f"{section}/{fn.name}"
        return ProgramSpec(
            section=section,
            name=fn.name,
            type=definition.type,
            expected_attach_type=definition.attach,
            instructions=linked.instructions,
            map_refs=linked.map_refs,
            owner=Ownership(mode=PROGRAM_PIN_MODE),
            pin_stem=stem,
            func_info=linked.func_info,
            line_info=linked.line_info,
            attach_target=kind.target_name,
            attach_target_kind=definition.target.btf_kind if definition.target is not None else "",
            prog_flags=definition.flags,
            core_relos=linked.core_relos,
            extern_refs=linked.extern_refs,
        )

    def _classify(
        self, reloc: Relocation, addend: int, place: str
    ) -> MapReference | ExternReference | CodeTarget:
        symbol = reloc.symbol
        name = symbol.name or "(unnamed)"
        if symbol.section is None:
            if symbol.shndx == SHN_UNDEF:
                return self._extern(reloc, name, place)
            raise ObjectFormatError(
                f"{place} refers to '{name}' in {SPECIAL_SECTION_INDEXES[symbol.shndx]}"
            )
        target = self.elf.section_at(symbol.section)
        if target is None:
            raise ObjectFormatError(
                f"{place} refers to '{name}' in section {symbol.section}, which does not exist"
            )
        if target.executable:
            return CodeTarget(target.index, symbol.value)
        offset = symbol.value + (addend if symbol.type == STT_SECTION else 0)
        if target.index == self.maps_index:
            map_name = self.maps_by_offset.get(offset)
            if map_name is None:
                raise ObjectFormatError(f"{place} refers to no map ({MAPS_SECTION} + {offset})")
            return MapReference(0, map_name)
        if target.index == self.legacy_index:
            legacy = self.legacy_maps.get(offset)
            if legacy is None:
                raise ObjectFormatError(
                    f"{place} refers to no map ({LEGACY_MAPS_SECTION} + {offset})"
                )
            return MapReference(0, legacy.name)
        data = self.data_maps.get(target.index)
        if data is not None:
            at = symbol.value + addend
            if not 0 <= at < data.value_size:  # the kernel takes no address outside the value
                raise ObjectFormatError(
                    f"{place} refers to byte {at} of '{target.name}', outside its "
                    f"{data.value_size} bytes"
                )
            return MapReference(0, data.name, at)
        raise ObjectFormatError(
            f"{place} refers to '{name}' in section '{target.name}', which holds neither maps "
            "nor global data"
        )

    def _extern(self, reloc: Relocation, name: str, place: str) -> MapReference | ExternReference:
        """A symbol the object does not define: a `__kconfig` variable (an address in the
        kconfig map) or a `__ksym` variable or kfunc, as the object's BTF declares it."""
        offset = self.kconfig_offsets.get(name)
        if offset is not None and self.kconfig_map:
            return MapReference(0, self.kconfig_map.name, offset)  # libbpf ignores the addend
        ksym = self.ksyms.named(name) if self.ksyms is not None else None
        if ksym is not None:
            call = reloc.type == R_BPF_64_32
            if call and ksym.kind is not KsymKind.FUNCTION:
                raise ObjectFormatError(
                    f"{place} calls '{name}', a {ksym.kind.value} of the kernel, not a kfunc"
                )
            return ExternReference(0, name, call)
        raise ObjectFormatError(
            f"{place} refers to '{name}', which the object does not define, and the "
            "object's BTF does not declare it __kconfig or __ksym (build it with `bpfloader "
            "build`, which compiles with -g, or clang -g)"
        )


def _check_no_overlap(functions: list[Symbol], section: str) -> None:
    """Functions of one section are disjoint runs of instructions (aliases of one run aside):
    else linking the programs would copy the code they share once per program."""
    spans = sorted({(s.value, s.value + s.size): s for s in functions}.items())
    for ((_, end), first), ((start, _), second) in pairwise(spans):
        if start < end:
            raise ObjectFormatError(
                f"functions '{first.name}' and '{second.name}' overlap", section=section
            )


def _check_struct_ops_programs(
    programs: tuple[ProgramSpec, ...], maps: tuple[MapSpec, ...]
) -> None:
    """A struct_ops program is verified as the member of a kernel struct that a struct_ops map
    gives it: one in no such map cannot load (libbpf fails it too)."""
    used = {p for m in maps if m.struct_ops is not None for p in m.struct_ops.programs}
    for program in programs:
        if program.type != ProgType.STRUCT_OPS and program.name in used:
            raise ObjectFormatError(
                f"program '{program.name}' is in a struct_ops map but is not a struct_ops "
                'program (SEC("struct_ops/..."))',
                section=program.section,
            )
    for program in programs:
        if program.type == ProgType.STRUCT_OPS and program.name not in used:
            raise ObjectFormatError(
                f"struct_ops program '{program.name}' is in no struct_ops map (a variable of "
                f"{STRUCT_OPS_SECTIONS[0]} or {STRUCT_OPS_SECTIONS[1]} whose member points at it)",
                section=program.section,
            )


def _check_unique_names(maps: tuple[MapSpec, ...]) -> None:
    seen: dict[str, MapSpec] = {}
    for spec in maps:
        other = seen.get(spec.name)
        if other is not None:
            raise ObjectFormatError(
                f"two maps are named '{spec.name}' (a map and a global data section?): their "
                "pins would collide",
                section=MAPS_SECTION,
            )
        seen[spec.name] = spec
