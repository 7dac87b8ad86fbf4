"""A BPF ELF object as plain values: sections, symbols and relocations, read once (pure).

pyelftools does the parsing; names are read from the string tables' bytes, one character
per byte (latin-1), as the Android reader does, so no byte of a name is ever lost.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_E_MACHINE
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import Section as ElfSection
from elftools.elf.sections import SymbolTableSection

from bpfloader.errors import ObjectFormatError

SHF_EXECINSTR = 0x4
SHF_COMPRESSED = 0x800
EM_BPF = 247
ELF64_HEADER_SIZE = 64
SECTION_HEADER_SIZE = 64
SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 2, 3, 4, 8, 9
SYMBOL_SIZE = 24
REL_SIZE = 16
RELA_SIZE = 24
# Section types of executables and shared objects, which pyelftools links to other sections
# as it builds them: a relocatable BPF object has none, so they are refused before that.
LINKED_SECTION_TYPES = {
    5: "SHT_HASH",
    6: "SHT_DYNAMIC",
    11: "SHT_DYNSYM",
    18: "SHT_SYMTAB_SHNDX",
    19: "SHT_RELR",
    0x6FFFFFF3: "SHT_SUNW_LDYNSYM",
    0x6FFFFFF6: "SHT_GNU_HASH",
    0x6FFFFFFC: "SHT_SUNW_syminfo",
    0x6FFFFFFD: "SHT_GNU_verdef",
    0x6FFFFFFE: "SHT_GNU_verneed",
    0x6FFFFFFF: "SHT_GNU_versym",
}

# Bounds on what an object may hold, far above what any compiler emits for one BPF object:
# an untrusted file must not make the loader, which runs as root at boot, take long or use
# much memory.
MAX_SECTIONS = 4096
MAX_SYMBOLS = 1 << 18
MAX_RELOCATIONS = 1 << 20  # in all relocation sections together
MAX_NAME_LEN = 4096  # a section or symbol name, in bytes
MAX_NOBITS_SIZE = 1 << 28  # a .bss-like section: its zeros are made in memory

_MACHINE_NAMES = {number: name for name, number in ENUM_E_MACHINE.items() if name != "_default_"}


def check_bpf_header(elf: ELFFile) -> None:
    """Refuse what is not a 64-bit little-endian BPF object."""
    machine = elf.header["e_machine"]
    if machine not in ("EM_BPF", 247):
        raise ObjectFormatError(f"not a BPF object (ELF machine {machine})")
    if not elf.little_endian:
        raise ObjectFormatError(
            "big-endian BPF objects are not supported on this little-endian host"
        )
    if elf.elfclass != 64:
        raise ObjectFormatError("not a 64-bit ELF file")


def string_at(table: bytes, offset: int) -> str:
    if not 0 <= offset < len(table):
        raise ObjectFormatError(
            f"name offset {offset} is outside its string table ({len(table)} bytes)"
        )
    end = table.find(b"\0", offset, offset + MAX_NAME_LEN + 1)
    if end < 0 and len(table) - offset > MAX_NAME_LEN:
        raise ObjectFormatError(f"name at offset {offset} is longer than {MAX_NAME_LEN} bytes")
    return table[offset : end if end >= 0 else len(table)].decode("latin-1")


def check_layout(data: bytes) -> None:
    """Check the ELF header and section header table before pyelftools reads them, so that
    every inconsistency is named here (file, section, reason) and bounded: a BPF object,
    64-bit little-endian, its section headers, names, data, symbol and relocation tables
    inside the file and within MAX_SECTIONS, MAX_SYMBOLS, MAX_RELOCATIONS."""
    if len(data) < 20:
        raise ObjectFormatError(f"truncated file: {len(data)} bytes is shorter than the ELF header")
    big = data[5] == 2
    machine: int = struct.unpack_from(">H" if big else "<H", data, 18)[0]
    if machine != EM_BPF:
        raise ObjectFormatError(
            f"not a BPF object (ELF machine {_MACHINE_NAMES.get(machine, machine)})"
        )
    if data[5] != 1:
        raise ObjectFormatError(
            "big-endian BPF objects are not supported on this little-endian host"
            if big
            else f"unknown ELF data encoding {data[5]}"
        )
    if data[4] != 2:
        raise ObjectFormatError("not a 64-bit ELF file")
    if len(data) < ELF64_HEADER_SIZE:
        raise _truncated("the ELF header", ELF64_HEADER_SIZE, len(data))
    shoff: int = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    if shnum == 0:
        raise ObjectFormatError("no section header table (or extended section numbering)")
    if shnum > MAX_SECTIONS:
        raise ObjectFormatError(f"{shnum} sections is more than the limit of {MAX_SECTIONS}")
    if shentsize != SECTION_HEADER_SIZE:
        raise ObjectFormatError(
            f"section header size {shentsize} is not {SECTION_HEADER_SIZE} bytes"
        )
    if shoff + shentsize * shnum > len(data):
        raise _truncated("the section header table", shoff + shentsize * shnum, len(data))
    headers = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + SECTION_HEADER_SIZE * i)
        for i in range(shnum)
    ]
    if not 0 < shstrndx < shnum or headers[shstrndx][1] != SHT_STRTAB:
        raise ObjectFormatError(f"section name table index {shstrndx} is not a string table")
    names_at, names_size = headers[shstrndx][4], headers[shstrndx][5]
    if names_at + names_size > len(data):
        raise _truncated("the section name table", names_at + names_size, len(data))
    names = data[names_at : names_at + names_size]
    symbols = relocations = 0
    for index, header in enumerate(headers):
        name_off, kind, flags, _, offset, size, link, info, _, entsize = header
        name = string_at(names, name_off) if index else ""
        if kind == SHT_NOBITS and size > MAX_NOBITS_SIZE:
            raise ObjectFormatError(
                f"{size} bytes is more than the limit of {MAX_NOBITS_SIZE} bytes", section=name
            )
        if kind != SHT_NOBITS and offset + size > len(data):
            raise ObjectFormatError(
                f"truncated file: the section's data ends at byte {offset + size}, "
                f"but the file has {len(data)} bytes",
                section=name,
            )
        if kind in LINKED_SECTION_TYPES:
            raise ObjectFormatError(
                f"{LINKED_SECTION_TYPES[kind]} sections belong to executables and shared "
                "objects, not to BPF objects",
                section=name,
            )
        if flags & SHF_COMPRESSED:
            raise ObjectFormatError("compressed sections are not supported", section=name)
        entry = {SHT_SYMTAB: SYMBOL_SIZE, SHT_REL: REL_SIZE, SHT_RELA: RELA_SIZE}.get(kind)
        if entry is None:
            continue
        if entsize != entry or size % entry:
            raise ObjectFormatError(
                f"table of {size} bytes with entries of {entsize} bytes; expected whole "
                f"entries of {entry} bytes",
                section=name,
            )
        linked = SHT_STRTAB if kind == SHT_SYMTAB else SHT_SYMTAB
        if not 0 < link < shnum or headers[link][1] != linked:
            raise ObjectFormatError(f"linked section {link} is not usable", section=name)
        if kind != SHT_SYMTAB and not 0 < info < shnum:
            # The Android reader finds a section's relocations by their target: relocations
            # aimed at no section would be dropped silently, leaving its code unrelocated.
            raise ObjectFormatError(
                f"relocations for section {info}, which does not exist", section=name
            )
        if kind == SHT_SYMTAB:
            symbols += size // entry
            if symbols > MAX_SYMBOLS:
                raise ObjectFormatError(
                    f"more than the limit of {MAX_SYMBOLS} symbols", section=name
                )
        else:
            relocations += size // entry
            if relocations > MAX_RELOCATIONS:
                raise ObjectFormatError(
                    f"more than the limit of {MAX_RELOCATIONS} relocations", section=name
                )


def _truncated(what: str, end: int, size: int) -> ObjectFormatError:
    return ObjectFormatError(
        f"truncated file: {what} ends at byte {end}, but the file has {size} bytes"
    )


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: str  # "SHT_PROGBITS", "SHT_NOBITS", ...
    flags: int
    size: int
    data: bytes  # empty for SHT_NOBITS (.bss): its size says how many zero bytes

    @property
    def executable(self) -> bool:
        return self.type == "SHT_PROGBITS" and bool(self.flags & SHF_EXECINSTR)


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int
    size: int
    type: str  # "STT_FUNC", "STT_OBJECT", "STT_SECTION", "STT_NOTYPE", ...
    bind: str  # "STB_GLOBAL", "STB_LOCAL", "STB_WEAK"
    shndx: int | str  # the index of its section, or "SHN_UNDEF", "SHN_ABS", ...

    @property
    def section(self) -> int | None:
        return self.shndx if isinstance(self.shndx, int) else None


@dataclass(frozen=True)
class Relocation:
    offset: int  # byte offset in the section relocated
    type: int
    symbol: Symbol


class ElfObject:
    """Every section, symbol and relocation of an object. Raises ObjectFormatError."""

    def __init__(self, data: bytes):
        self.elf = ELFFile(io.BytesIO(data))
        check_bpf_header(self.elf)
        shstrtab: bytes = self.elf.get_section(self.elf["e_shstrndx"]).data()
        self.sections: list[Section] = []
        raw_sections: list[ElfSection] = list(self.elf.iter_sections())
        for index, raw in enumerate(raw_sections):
            name = string_at(shstrtab, raw["sh_name"]) if index else ""
            nobits = raw["sh_type"] == "SHT_NOBITS"
            end = raw["sh_offset"] + raw["sh_size"]
            if not nobits and end > len(data):
                raise ObjectFormatError(
                    f"truncated file: the section's data ends at byte {end}, "
                    f"but the file has {len(data)} bytes",
                    section=name,
                )
            self.sections.append(
                Section(
                    index,
                    name,
                    raw["sh_type"],
                    raw["sh_flags"],
                    raw["sh_size"],
                    b"" if nobits else raw.data(),
                )
            )
        self._by_name: dict[str, Section] = {}
        for section in self.sections:
            self._by_name.setdefault(section.name, section)
        self.symbols = self._read_symbols(raw_sections)
        self._relocations = self._read_relocations(raw_sections)

    def section(self, name: str) -> Section | None:
        return self._by_name.get(name)

    def section_at(self, index: int) -> Section | None:
        return self.sections[index] if 0 < index < len(self.sections) else None

    def symbols_in(self, index: int) -> list[Symbol]:
        return [s for s in self.symbols if s.section == index]

    def relocations(self, index: int) -> list[Relocation]:
        """The relocations that apply to section `index`, in file order."""
        return self._relocations.get(index, [])

    def _read_symbols(self, raw_sections: list[ElfSection]) -> list[Symbol]:
        symtab = next((s for s in raw_sections if s["sh_type"] == "SHT_SYMTAB"), None)
        if not isinstance(symtab, SymbolTableSection):
            return []
        strtab: bytes = self.elf.get_section(symtab["sh_link"]).data()
        symbols = []
        for raw in symtab.iter_symbols():
            symbols.append(
                Symbol(
                    string_at(strtab, raw["st_name"]) if raw["st_name"] else "",
                    raw["st_value"],
                    raw["st_size"],
                    raw["st_info"]["type"],
                    raw["st_info"]["bind"],
                    raw["st_shndx"],
                )
            )
        return symbols

    def _read_relocations(self, raw_sections: list[ElfSection]) -> dict[int, list[Relocation]]:
        found: dict[int, list[Relocation]] = {}
        for index, raw in enumerate(raw_sections):
            if raw["sh_type"] == "SHT_RELA":
                raise ObjectFormatError(
                    "RELA relocations are not used by BPF objects",
                    section=self.sections[index].name,
                )
            if raw["sh_type"] != "SHT_REL" or not isinstance(raw, RelocationSection):
                continue
            name = self.sections[index].name
            if not self.symbols:
                raise ObjectFormatError("relocations but no symbol table", section=name)
            target = raw["sh_info"]
            if not 0 < target < len(self.sections):
                raise ObjectFormatError(
                    f"relocations for section {target}, which does not exist", section=name
                )
            relocations = []
            for rel in raw.iter_relocations():
                sym = rel["r_info_sym"]
                if not 0 <= sym < len(self.symbols):
                    raise ObjectFormatError(
                        f"relocation at offset {rel['r_offset']} names symbol {sym}, "
                        f"which does not exist",
                        section=name,
                    )
                relocations.append(
                    Relocation(rel["r_offset"], rel["r_info_type"], self.symbols[sym])
                )
            found.setdefault(target, []).extend(relocations)
        return found
