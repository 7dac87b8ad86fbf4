"""Reading a BPF ELF object into an ObjectSpec (pure: bytes in, spec out): Android-format
objects here, libbpf-style ones in libbpf_reader.py."""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bpfloader.errors import LoaderError, ObjectFormatError
from bpfloader.obj import android_2026
from bpfloader.obj.bpftypes import INSN_SIZE, R_BPF_64_32, R_BPF_64_64
from bpfloader.obj.defs import (
    DEFAULT_MAP_DEF_SIZE,
    DEFAULT_PROG_DEF_SIZE,
    MAP_DEF_MIN_SIZE,
    PROG_DEF_MIN_SIZE,
    DefError,
    check_def_size,
    decode_map_def,
    decode_prog_def,
    legacy_def_size,
    legacy_map_symbols,
)
from bpfloader.obj.elf import (
    SHN_UNDEF,
    SHT_NOBITS,
    SHT_REL,
    SHT_RELA,
    SPECIAL_SECTION_INDEXES,
    STT_FUNC,
    STT_OBJECT,
    STT_SECTION,
    ElfObject,
    Symbol,
    section_names,
    section_type_name,
)
from bpfloader.obj.insn import insn_at
from bpfloader.obj.libbpf_reader import read_libbpf_object
from bpfloader.obj.libbpf_sections import SectionDef
from bpfloader.obj.object_btf import read_object_btf
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.sections import SECTION_PREFIXES, program_kind
from bpfloader.obj.spec import (
    DEFAULT_LOADER_MAX,
    DEFAULT_LOADER_MIN,
    PROGRAM_PIN_MODE,
    MapReference,
    MapSpec,
    ObjectSpec,
    ProgramSpec,
)


def read_object(
    data: bytes, path: str, types: Mapping[str, SectionDef] | None = None
) -> ObjectSpec:
    """Parse an object, Android-format or libbpf-style (see `is_libbpf_style`). Every problem
    is an ObjectFormatError naming the file and section. The file is read once, into one
    ElfObject that both readers use. `types`: the program types its policy file gives
    (loader/policy.py), by program name, "" for every program: libbpf-style objects only."""
    try:
        return read_elf(ElfObject(data), path, types or {})
    except LoaderError as e:  # ObjectFormatError, DefError and BtfError among them
        e.where(file=path)
        raise
    except Exception as e:
        # A last resort: ElfObject checks every bound it reads, and each check names its
        # problem. Reaching here is a missing check; tests/obj/test_reader_fuzz.py and `make fuzz`
        # report every input that does.
        raise ObjectFormatError(f"malformed ELF ({type(e).__name__}: {e})", file=path) from e


def read_elf(
    elf: ElfObject, path: str, types: Mapping[str, SectionDef] | None = None
) -> ObjectSpec:
    """The spec of an object already read as ELF: what read_object does once the file is."""
    if is_android_2026(elf):
        if types:
            raise _err(
                "a policy file's program type applies to libbpf-style objects only; an "
                f"Android object's {android_2026.PROGS_SECTION} defs give its types"
            )
        return read_android_2026(elf, path)
    if is_libbpf_style(elf):
        # libbpf gives the kernel an empty license where the object has none (the kernel then
        # refuses GPL-only helpers, and the loader's error says why: kernel_objects.py).
        section = elf.section("license")
        license = decode_license(section.data) if section is not None else ""
        return read_libbpf_object(elf, path, license, types or {})
    if types:
        raise _err(
            "a policy file's program type applies to libbpf-style objects only; "
            "an Android-format object's section prefixes give its types"
        )
    return _Reader(elf, path).read()


# Sections only Android's header emits: their presence settles the format. (`maps` is
# Android's too, but also libbpf's before 1.0: see `is_libbpf_style`.)
ANDROID_SECTIONS = frozenset(
    {
        "progs",
        "critical",
        "bpfloader_min_ver",
        "bpfloader_max_ver",
        "size_of_bpf_map_def",
        "size_of_bpf_prog_def",
    }
)


def is_android_2026(elf: ElfObject) -> bool:
    """Android's 2026 format: `.android_maps` or `.android_progs`. With any of the classic
    format's sections beside them the object is neither, and an error says so."""
    names = {s.name for s in elf.sections}
    new = [n for n in android_2026.SECTIONS if n in names]
    if not new:
        return False
    old = sorted(n for n in names if n in ANDROID_SECTIONS or n == "maps")
    if old:
        raise _err(
            f"mixes Android's 2026 sections ({', '.join(new)}) with the classic format's "
            f"({', '.join(old)}): build it with one header"
        )
    return True


def read_android_2026(elf: ElfObject, path: str) -> ObjectSpec:
    """An object of Android's 2026 format: read as libbpf-style, each program typed by its
    def, then the defs laid over (obj/android_2026.py). Its license is required, as Android's
    loader requires it."""
    section = elf.section("license")
    license = decode_license(section.data if section is not None else None)
    map_defs = android_2026.read_map_defs(elf)
    programs = android_2026.program_defs(elf, android_2026.read_prog_defs(elf))
    spec = read_libbpf_object(elf, path, license, android_2026.section_types(programs))
    return android_2026.lay_over(spec, map_defs, programs)


# What a `maps` section of Android's holds when the object says no other size (no
# size_of_bpf_map_def: Android's first layout).
ANDROID_MARKERLESS_DEF_SIZE = DEFAULT_MAP_DEF_SIZE


def is_libbpf_style(elf: ElfObject) -> bool:
    """An object without Android's sections that has what only libbpf-style objects have:
    `.maps`, global data, code in `.text`, a code section that is none of Android's, or (with
    no `maps` section) BTF.

    A `maps` section without any of Android's other sections is Android's first format or
    libbpf's before 1.0 (`struct bpf_map_def`, 20 bytes, or another header's size): it is
    libbpf's when its defs are not Android's 32 bytes (the section's size over its symbols,
    as libbpf 0.x sized them; Android's loader reads a marker-less object's defs as 32 bytes
    and would refuse any other size), or when the object shows any other libbpf sign above.
    BTF is no sign here: Android-format objects compiled with -g have it."""
    names = {s.name: s for s in elf.sections}
    if ANDROID_SECTIONS & names.keys():
        return False
    maps = names.get("maps")
    if maps is not None:
        count = len(legacy_map_symbols(elf.symbols_in(maps.index)))
        if count and legacy_def_size(maps.size, count) != ANDROID_MARKERLESS_DEF_SIZE:
            return True
    elif ".BTF" in names:
        return True
    if ".maps" in names:
        return True
    for name, section in names.items():
        if section.executable and section.size and (name == ".text" or program_kind(name) is None):
            return True
        if name in (".data", ".rodata", ".bss") or name.startswith((".data.", ".rodata.")):
            return True
    return False


def decode_license(data: bytes | None) -> str:
    """The `license` section's string: required (in Android-format objects), NUL-terminated,
    ASCII."""
    if data is None:
        raise _err('no "license" section (declare one with LICENSE("GPL"))')
    text = data.split(b"\0", 1)[0]
    if not text or len(text) == len(data):
        raise _err("license must be a non-empty NUL-terminated string", "license")
    try:
        return text.decode("ascii")
    except UnicodeDecodeError as e:
        raise _err(f"license is not ASCII: {text!r}", "license") from e


def _err(reason: str, section: str | None = None) -> ObjectFormatError:
    return ObjectFormatError(reason, section=section)


class _Reader:
    def __init__(self, elf: ElfObject, path: str):
        self.path = path
        self.elf = elf
        # Compiled with -g, an Android-format object has BTF too: its programs then get their
        # source lines in verifier logs, as libbpf-style ones do.
        self.object_btf = read_object_btf(elf)

    def read(self) -> ObjectSpec:
        maps = self._maps()
        programs = self._programs({m.offset: m.spec for m in maps})
        return ObjectSpec(
            path=self.path,
            license=self._license(),
            maps=tuple(m.spec for m in maps),
            programs=programs,
            critical=self._text_section("critical"),
            min_loader=self._u32_section("bpfloader_min_ver", DEFAULT_LOADER_MIN),
            max_loader=self._u32_section("bpfloader_max_ver", DEFAULT_LOADER_MAX),
            btf=self.object_btf.fixed_up if self.object_btf else None,
        )

    # -- small sections -------------------------------------------------------------------

    def _data(self, name: str) -> bytes | None:
        section = self.elf.section(name)
        if section is None or section.type == SHT_NOBITS:
            return None
        return section.data

    def _u32_section(self, name: str, default: int) -> int:
        data = self._data(name)
        if data is None:
            return default
        # Written as unsigned int or as size_t (8 bytes on the bpf target) by different headers.
        if len(data) == 4 or (len(data) == 8 and data[4:] == b"\0" * 4):
            value: int = struct.unpack_from("<I", data)[0]
            return value
        raise _err(f"expected a 4-byte unsigned value, found {len(data)} bytes", name)

    def _text_section(self, name: str) -> str | None:
        data = self._data(name)
        if data is None:
            return None
        return data.split(b"\0", 1)[0].decode("utf-8", errors="backslashreplace")

    def _license(self) -> str:
        return decode_license(self._data("license"))

    def _symbols_in(self, section_index: int) -> list[Symbol]:
        """The objects and functions defined in a section."""
        return [s for s in self.elf.symbols_in(section_index) if s.type in (STT_OBJECT, STT_FUNC)]

    # -- maps -----------------------------------------------------------------------------

    def _def_section(
        self, name: str, size_section: str, default_size: int, min_size: int, what: str
    ) -> tuple[int, bytes, int] | None:
        """A `maps` or `progs` section: its index, its bytes, and the def size it was built with."""
        section = self.elf.section(name)
        if section is None:
            return None
        size = self._u32_section(size_section, default_size)
        try:
            check_def_size(size, min_size, what)
        except DefError as e:
            raise _err(str(e), size_section) from e
        return section.index, section.data, size

    def _maps(self) -> list[_PlacedMap]:
        found = self._def_section(
            "maps", "size_of_bpf_map_def", DEFAULT_MAP_DEF_SIZE, MAP_DEF_MIN_SIZE, "map def"
        )
        if found is None:
            return []
        index, data, size = found
        if len(data) % size:
            raise _err(f"{len(data)} bytes is not a whole number of {size}-byte map defs", "maps")
        names: dict[int, str] = {}
        for symbol in self._symbols_in(index):
            name, offset = symbol.name, symbol.value
            if offset % size or offset >= len(data):
                raise _err(f"map symbol '{name}' at offset {offset} is not on a def", "maps")
            if offset in names:
                raise _err(f"maps '{names[offset]}' and '{name}' share one def", "maps")
            names[offset] = name
        placed = []
        for offset in range(0, len(data), size):
            if offset not in names:
                raise _err(f"the map def at offset {offset} has no symbol naming it", "maps")
            name = names[offset]
            try:
                fields = decode_map_def(data[offset : offset + size])
            except DefError as e:
                raise _err(f"map '{name}': {e}", "maps") from e
            if self.object_btf is not None:
                key_size, value_size = fields["key_size"], fields["value_size"]
                assert isinstance(key_size, int) and isinstance(value_size, int)
                key_type, value_type = self.object_btf.map_types(name, key_size, value_size)
                fields.update(btf_key_type_id=key_type, btf_value_type_id=value_type)
            placed.append(_PlacedMap(offset, MapSpec(name=name, **fields)))  # type: ignore[arg-type]
        return placed

    # -- programs -------------------------------------------------------------------------

    def _prog_defs(self) -> dict[str, bytes]:
        found = self._def_section(
            "progs", "size_of_bpf_prog_def", DEFAULT_PROG_DEF_SIZE, PROG_DEF_MIN_SIZE, "program def"
        )
        if found is None:
            return {}
        index, data, size = found
        defs = {}
        for symbol in self._symbols_in(index):
            name, offset = symbol.name, symbol.value
            if offset % size or offset + size > len(data):
                raise _err(f"program def '{name}' at offset {offset} is out of place", "progs")
            if name.endswith("_def"):
                defs[name[: -len("_def")]] = data[offset : offset + size]
        return defs

    def _programs(self, maps_by_offset: dict[int, MapSpec]) -> tuple[ProgramSpec, ...]:
        defs = self._prog_defs()
        maps = self.elf.section("maps")
        maps_index = maps.index if maps is not None else None
        programs = []
        for section in self.elf.sections:
            if not section.executable or section.name == ".text" or section.size == 0:
                continue  # .text holds subprograms; a call into it is refused at its relocation
            name = section.name
            kind = program_kind(name)
            if kind is None:
                known = ", ".join(p for p, _, _ in SECTION_PREFIXES)
                raise _err(f"unknown program type prefix (known: {known})", name)
            code = section.data
            if len(code) % INSN_SIZE:
                raise _err(f"code size {len(code)} is not a multiple of {INSN_SIZE}", name)
            function = self._function_at_start(section.index, name)
            fields: dict[str, Any] = {"owner": Ownership(mode=PROGRAM_PIN_MODE)}
            if function in defs:
                try:
                    fields = decode_prog_def(defs[function])
                except DefError as e:
                    raise _err(str(e), name) from e
            refs = self._map_refs(section.index, name, code, maps_index, maps_by_offset)
            if self.object_btf is not None:
                fields["func_info"], fields["line_info"] = self.object_btf.records(
                    name, 0, len(code) // INSN_SIZE
                )
            programs.append(
                ProgramSpec(
                    section=name,
                    name=function,
                    type=kind[0],
                    expected_attach_type=kind[1],
                    instructions=code,
                    map_refs=refs,
                    **fields,
                )
            )
        return tuple(programs)

    def _function_at_start(self, index: int, section: str) -> str:
        for symbol in self._symbols_in(index):
            if symbol.type == STT_FUNC and symbol.value == 0:
                return symbol.name
        raise _err("no function symbol at the start of the section", section)

    def _map_refs(
        self,
        index: int,
        section: str,
        code: bytes,
        maps_index: int | None,
        maps_by_offset: dict[int, MapSpec],
    ) -> tuple[MapReference, ...]:
        if not self.elf.relocation_tables(index):
            self._check_no_relocations(section)
            return ()
        refs = []
        for reloc in self.elf.relocations(index):
            offset, kind, symbol = reloc.offset, reloc.type, reloc.symbol
            index = offset // INSN_SIZE
            if offset % INSN_SIZE or offset + INSN_SIZE > len(code):
                raise _err(f"relocation at offset {offset} is not on an instruction", section)
            target = symbol.name or "(unnamed)"
            shndx, in_section = symbol.shndx, symbol.section
            if in_section is not None and self.elf.section_at(in_section) is None:
                raise _err(
                    f"instruction {index} refers to '{target}' in section {shndx}, "
                    "which does not exist",
                    section,
                )
            if symbol.type == STT_SECTION and in_section is not None:
                target = self.elf.sections[in_section].name  # e.g. a call into .text
            insn = insn_at(code, index)
            if kind == R_BPF_64_32 and insn.is_call:
                raise _err(
                    f"instruction {index} calls '{target}': bpf-to-bpf calls are not supported "
                    "in Android-format objects (mark helpers static inline)",
                    section,
                )
            if kind != R_BPF_64_64:
                raise _err(f"instruction {index}: unsupported relocation type {kind}", section)
            if not insn.is_ld_imm64:
                raise _err(
                    f"relocation to '{target}' at instruction {index} is not on a ld_imm64 "
                    f"instruction (opcode {insn.code:#04x})",
                    section,
                )
            if shndx == SHN_UNDEF:
                raise _err(f"instruction {index} refers to unknown symbol '{target}'", section)
            if shndx != maps_index:
                where = (
                    SPECIAL_SECTION_INDEXES[shndx]
                    if in_section is None
                    else self.elf.sections[in_section].name
                )
                raise _err(
                    f"instruction {index} refers to '{target}' in section '{where}'; "
                    'only maps in the "maps" section can be referenced',
                    section,
                )
            map_offset = symbol.value
            if symbol.type == STT_SECTION:
                map_offset += insn.imm
            spec = maps_by_offset.get(map_offset)
            if spec is None:
                raise _err(
                    f"instruction {index} refers to no map def (offset {map_offset})", section
                )
            refs.append(MapReference(insn=index, map_name=spec.name))
        return tuple(refs)

    def _check_no_relocations(self, section: str) -> None:
        """No relocation section targets `section`: then none may be named for it either.

        Android's loader finds a section's relocations by name (`.rel<section>`); one so named
        that is not a relocation section, or that targets another section, would leave this
        code unrelocated, and the verifier would be blamed for a corrupt header."""
        found = self.elf.section(".rel" + section)
        if found is None:
            return
        if found.type in (SHT_REL, SHT_RELA):
            raise _err(f"relocations for section {found.info}, not for '{section}'", found.name)
        raise _err(f"section type {section_type_name(found.type)} is not SHT_REL", found.name)


@dataclass(frozen=True)
class _PlacedMap:
    """A map spec with the offset of its def in the maps section (how relocations find it)."""

    offset: int
    spec: MapSpec


def declares_critical(data: bytes) -> bool:
    """Best effort for a file that failed to parse: does it still show a `critical` section?

    A critical object that is corrupt must fail the run as loudly as one that is refused.
    """
    return "critical" in section_names(data)
