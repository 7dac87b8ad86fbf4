"""Reading a BPF ELF object into an ObjectSpec (pure: bytes in, spec out): Android-format
objects here, libbpf-style ones in libbpf_reader.py."""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

from elftools.elf.constants import SH_FLAGS
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import Section, SymbolTableSection

from bpfloader.errors import LoaderError, ObjectFormatError
from bpfloader.obj.bpftypes import (
    INSN_SIZE,
    OPCODE_CALL,
    OPCODE_LD_IMM64,
    R_BPF_64_32,
    R_BPF_64_64,
)
from bpfloader.obj.defs import (
    DEFAULT_MAP_DEF_SIZE,
    DEFAULT_PROG_DEF_SIZE,
    MAP_DEF_MIN_SIZE,
    PROG_DEF_MIN_SIZE,
    DefError,
    check_def_size,
    decode_map_def,
    decode_prog_def,
)
from bpfloader.obj.elf import ElfObject, check_bpf_header, check_layout, string_at
from bpfloader.obj.libbpf_reader import read_libbpf_object
from bpfloader.obj.object_btf import read_object_btf
from bpfloader.obj.sections import SECTION_PREFIXES, program_kind
from bpfloader.obj.spec import (
    DEFAULT_LOADER_MAX,
    DEFAULT_LOADER_MIN,
    PROGRAM_PIN_MODE,
    MapReference,
    MapSpec,
    ObjectSpec,
    Ownership,
    ProgramSpec,
)


def read_object(data: bytes, path: str) -> ObjectSpec:
    """Parse an object, Android-format or libbpf-style (see `is_libbpf_style`). Every problem
    is an ObjectFormatError naming the file and section."""
    if data[:4] != b"\x7fELF":
        raise ObjectFormatError("not an ELF file", file=path)
    try:
        check_layout(data)
        if is_libbpf_style(data):
            elf = ElfObject(data)
            section = elf.section("license")
            return read_libbpf_object(elf, path, decode_license(section.data if section else None))
        return _Reader(data, path).read()
    except LoaderError as e:
        raise e.where(file=path) from None
    except DefError as e:
        raise ObjectFormatError(str(e), file=path) from None
    except Exception as e:
        # A last resort: check_layout validates what pyelftools reads, and each check names
        # its problem. Reaching here is a missing check; tests/test_reader_fuzz.py and
        # `make fuzz` report every input that does.
        raise ObjectFormatError(f"malformed ELF ({type(e).__name__}: {e})", file=path) from None


# Sections only Android's header emits: their presence settles the format.
ANDROID_SECTIONS = frozenset(
    {
        "maps",
        "progs",
        "critical",
        "bpfloader_min_ver",
        "bpfloader_max_ver",
        "size_of_bpf_map_def",
        "size_of_bpf_prog_def",
    }
)


def is_libbpf_style(data: bytes) -> bool:
    """An object without Android's sections that has what only libbpf-style objects have:
    `.maps`, BTF, global data, code in `.text`, or a code section that is none of Android's."""
    try:
        elf = ELFFile(io.BytesIO(data))
        names = {s.name: s for s in elf.iter_sections()}
    except Exception:
        return False  # the Android reader names what is wrong with the file
    if ANDROID_SECTIONS & names.keys():
        return False
    if {".maps", ".BTF"} & names.keys():
        return True
    for name, section in names.items():
        code = section["sh_type"] == "SHT_PROGBITS" and section["sh_flags"] & SH_FLAGS.SHF_EXECINSTR
        if code and section.data_size and (name == ".text" or program_kind(name) is None):
            return True
        if name in (".data", ".rodata", ".bss") or name.startswith((".data.", ".rodata.")):
            return True
    return False


def decode_license(data: bytes | None) -> str:
    """The `license` section's string: required, NUL-terminated, ASCII."""
    if data is None:
        raise _err('no "license" section (declare one with LICENSE("GPL"))')
    text = data.split(b"\0", 1)[0]
    if not text or len(text) == len(data):
        raise _err("license must be a non-empty NUL-terminated string", "license")
    try:
        return text.decode("ascii")
    except UnicodeDecodeError:
        raise _err(f"license is not ASCII: {text!r}", "license") from None


def _err(reason: str, section: str | None = None) -> ObjectFormatError:
    return ObjectFormatError(reason, section=section)


def _truncated(what: str, end: int, size: int, section: str | None = None) -> ObjectFormatError:
    return _err(
        f"truncated file: {what} ends at byte {end}, but the file has {size} bytes", section
    )


class _Reader:
    def __init__(self, data: bytes, path: str):
        self.path = path
        self.elf = ELFFile(io.BytesIO(data))
        # Names are read from the string tables' bytes, one character per byte (latin-1):
        # pyelftools would decode them as UTF-8 and lose any byte that is not.
        self._shstrtab: bytes = self.elf.get_section(self.elf["e_shstrndx"]).data()
        self.sections: dict[str, tuple[int, Section]] = {}
        for index, section in enumerate(self.elf.iter_sections()):
            end = section["sh_offset"] + section["sh_size"]
            if section["sh_type"] != "SHT_NOBITS" and end > len(data):
                raise _truncated("the section's data", end, len(data), self._section_name(section))
            self.sections.setdefault(self._section_name(section), (index, section))
        self.symtab = self._symbol_table()
        self._strtab: bytes = (
            self.elf.get_section(self.symtab["sh_link"]).data() if self.symtab else b""
        )
        # Compiled with -g, an Android-format object has BTF too: its programs then get their
        # source lines in verifier logs, as libbpf-style ones do.
        self.object_btf = read_object_btf(ElfObject(data)) if ".BTF" in self.sections else None

    def _section_name(self, section: Section) -> str:
        return string_at(self._shstrtab, section["sh_name"])

    def _symbol_name(self, symbol: Any) -> str:
        return string_at(self._strtab, symbol["st_name"])

    def read(self) -> ObjectSpec:
        check_bpf_header(self.elf)
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

    def _symbol_table(self) -> SymbolTableSection | None:
        for section in self.elf.iter_sections():
            if isinstance(section, SymbolTableSection) and section["sh_type"] == "SHT_SYMTAB":
                return section
        return None

    def _data(self, name: str) -> bytes | None:
        found = self.sections.get(name)
        if found is None or found[1]["sh_type"] == "SHT_NOBITS":
            return None
        data: bytes = found[1].data()
        return data

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

    def _symbols_in(self, section_index: int) -> list[tuple[str, Any]]:
        """(name, symbol) of the objects and functions defined in a section."""
        if self.symtab is None:
            return []
        return [
            (self._symbol_name(s), s)
            for s in self.symtab.iter_symbols()
            if s["st_shndx"] == section_index and s["st_info"]["type"] in ("STT_OBJECT", "STT_FUNC")
        ]

    # -- maps -----------------------------------------------------------------------------

    def _def_section(
        self, name: str, size_section: str, default_size: int, min_size: int, what: str
    ) -> tuple[int, bytes, int] | None:
        """A `maps` or `progs` section: its index, its bytes, and the def size it was built with."""
        found = self.sections.get(name)
        if found is None:
            return None
        index, section = found
        size = self._u32_section(size_section, default_size)
        try:
            check_def_size(size, min_size, what)
        except DefError as e:
            raise _err(str(e), size_section) from None
        data: bytes = section.data()
        return index, data, size

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
        for name, symbol in self._symbols_in(index):
            offset = symbol["st_value"]
            if offset % size or offset >= len(data):
                raise _err(f"map symbol '{name}' at offset {offset} is not on a def", "maps")
            if offset in names:
                raise _err(f"maps '{names[offset]}' and '{name}' share one def", "maps")
            names[offset] = name
        placed = []
        for offset in range(0, len(data), size):
            if offset not in names:
                raise _err(f"the map def at offset {offset} has no symbol naming it", "maps")
            try:
                fields = decode_map_def(data[offset : offset + size])
            except DefError as e:
                raise _err(f"map '{names[offset]}': {e}", "maps") from None
            placed.append(_PlacedMap(offset, MapSpec(name=names[offset], **fields)))  # type: ignore[arg-type]
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
        for name, symbol in self._symbols_in(index):
            offset = symbol["st_value"]
            if offset % size or offset + size > len(data):
                raise _err(f"program def '{name}' at offset {offset} is out of place", "progs")
            if name.endswith("_def"):
                defs[name[: -len("_def")]] = data[offset : offset + size]
        return defs

    def _programs(self, maps_by_offset: dict[int, MapSpec]) -> tuple[ProgramSpec, ...]:
        defs = self._prog_defs()
        maps_index = self.sections["maps"][0] if "maps" in self.sections else None
        programs = []
        for index, section in enumerate(self.elf.iter_sections()):
            if (
                section["sh_type"] != "SHT_PROGBITS"
                or not section["sh_flags"] & SH_FLAGS.SHF_EXECINSTR
            ):
                continue
            if self._section_name(section) == ".text" or section.data_size == 0:
                continue  # .text holds subprograms; a call into it is refused at its relocation
            name = self._section_name(section)
            kind = program_kind(name)
            if kind is None:
                known = ", ".join(p for p, _, _ in SECTION_PREFIXES)
                raise _err(f"unknown program type prefix (known: {known})", name)
            code: bytes = section.data()
            if len(code) % INSN_SIZE:
                raise _err(f"code size {len(code)} is not a multiple of {INSN_SIZE}", name)
            function = self._function_at_start(index, name)
            fields: dict[str, Any] = {"owner": Ownership(mode=PROGRAM_PIN_MODE)}
            if function in defs:
                try:
                    fields = decode_prog_def(defs[function])
                except DefError as e:
                    raise _err(str(e), name) from None
            refs = self._map_refs(index, name, code, maps_index, maps_by_offset)
            if self.object_btf is not None:
                fields["func_info"], fields["line_info"] = self.object_btf.records(
                    name, 0, len(code) // INSN_SIZE
                )
            programs.append(
                ProgramSpec(
                    section=name,
                    function=function,
                    type=kind[0],
                    expected_attach_type=kind[1],
                    instructions=code,
                    map_refs=refs,
                    **fields,
                )
            )
        return tuple(programs)

    def _function_at_start(self, index: int, section: str) -> str:
        for name, symbol in self._symbols_in(index):
            if symbol["st_info"]["type"] == "STT_FUNC" and symbol["st_value"] == 0:
                return name
        raise _err("no function symbol at the start of the section", section)

    def _map_refs(
        self,
        index: int,
        section: str,
        code: bytes,
        maps_index: int | None,
        maps_by_offset: dict[int, MapSpec],
    ) -> tuple[MapReference, ...]:
        rel = next(
            (
                s
                for s in self.elf.iter_sections()
                if s["sh_type"] in ("SHT_REL", "SHT_RELA") and s["sh_info"] == index
            ),
            None,
        )
        if rel is None:
            self._check_no_relocations(section)
            return ()
        if rel["sh_type"] == "SHT_RELA" or not isinstance(rel, RelocationSection):
            raise _err("RELA relocations are not used by BPF objects", self._section_name(rel))
        if self.symtab is None:
            raise _err("relocations but no symbol table", self._section_name(rel))
        refs = []
        for reloc in rel.iter_relocations():
            offset, kind = reloc["r_offset"], reloc["r_info_type"]
            insn = offset // INSN_SIZE
            if offset % INSN_SIZE or offset + INSN_SIZE > len(code):
                raise _err(f"relocation at offset {offset} is not on an instruction", section)
            if not 0 <= reloc["r_info_sym"] < self.symtab.num_symbols():
                raise _err(
                    f"relocation at offset {offset} names symbol {reloc['r_info_sym']}, "
                    "which does not exist",
                    self._section_name(rel),
                )
            symbol = self.symtab.get_symbol(reloc["r_info_sym"])
            target = self._symbol_name(symbol) or "(unnamed)"
            shndx = symbol["st_shndx"]
            if isinstance(shndx, int) and not 0 < shndx < self.elf.num_sections():
                raise _err(
                    f"instruction {insn} refers to '{target}' in section {shndx}, "
                    "which does not exist",
                    section,
                )
            if symbol["st_info"]["type"] == "STT_SECTION" and isinstance(shndx, int):
                target = self._section_name(self.elf.get_section(shndx))  # e.g. a call into .text
            opcode = code[offset]
            if kind == R_BPF_64_32 and opcode == OPCODE_CALL:
                raise _err(
                    f"instruction {insn} calls '{target}': bpf-to-bpf calls are not supported "
                    "in Android-format objects (mark helpers static inline)",
                    section,
                )
            if kind != R_BPF_64_64:
                raise _err(f"instruction {insn}: unsupported relocation type {kind}", section)
            if opcode != OPCODE_LD_IMM64:
                raise _err(
                    f"relocation to '{target}' at instruction {insn} is not on a ld_imm64 "
                    f"instruction (opcode {opcode:#04x})",
                    section,
                )
            if shndx == "SHN_UNDEF":
                raise _err(f"instruction {insn} refers to unknown symbol '{target}'", section)
            if shndx != maps_index:
                where = (
                    shndx
                    if isinstance(shndx, str)
                    else self._section_name(self.elf.get_section(shndx))
                )
                raise _err(
                    f"instruction {insn} refers to '{target}' in section '{where}'; "
                    'only maps in the "maps" section can be referenced',
                    section,
                )
            map_offset = symbol["st_value"]
            if symbol["st_info"]["type"] == "STT_SECTION":
                map_offset += struct.unpack_from("<i", code, offset + 4)[0]
            spec = maps_by_offset.get(map_offset)
            if spec is None:
                raise _err(
                    f"instruction {insn} refers to no map def (offset {map_offset})", section
                )
            refs.append(MapReference(insn=insn, map_name=spec.name))
        return tuple(refs)

    def _check_no_relocations(self, section: str) -> None:
        """No relocation section targets `section`: then none may be named for it either.

        Android's loader finds a section's relocations by name (`.rel<section>`); one so named
        that is not a relocation section, or that targets another section, would leave this
        code unrelocated, and the verifier would be blamed for a corrupt header."""
        found = self.sections.get(".rel" + section)
        if found is None:
            return
        header = found[1]
        kind = header["sh_type"]
        if kind in ("SHT_REL", "SHT_RELA"):
            raise _err(
                f"relocations for section {header['sh_info']}, not for '{section}'",
                ".rel" + section,
            )
        shown = f"{kind:#x}" if isinstance(kind, int) else kind
        raise _err(f"section type {shown} is not SHT_REL", ".rel" + section)


@dataclass(frozen=True)
class _PlacedMap:
    """A map spec with the offset of its def in the maps section (how relocations find it)."""

    offset: int
    spec: MapSpec


def declares_critical(data: bytes) -> bool:
    """Best effort for a file that failed to parse: does it still show a `critical` section?

    A critical object that is corrupt must fail the run as loudly as one that is refused.
    """
    try:
        return ELFFile(io.BytesIO(data)).get_section_by_name("critical") is not None
    except Exception:
        return False
