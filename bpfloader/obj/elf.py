"""A BPF ELF object as plain values: sections, symbols and relocations, read once (pure).

pyelftools does the parsing; names are read from the string tables' bytes, one character
per byte (latin-1), as the Android reader does, so no byte of a name is ever lost.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import Section as ElfSection
from elftools.elf.sections import SymbolTableSection

from bpfloader.errors import ObjectFormatError

SHF_EXECINSTR = 0x4


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
    end = table.find(b"\0", offset)
    return table[offset : end if end >= 0 else len(table)].decode("latin-1")


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
