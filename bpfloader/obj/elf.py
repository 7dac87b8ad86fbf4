"""A BPF ELF object as plain values: sections, symbols and relocations (pure).

The loader reads the few ELF tables a BPF object needs itself, in one pass over the file's
bytes, checking each bound as it goes (an untrusted file must not make a loader that runs as
root at boot take long, use much memory or fail with anything but a named reason). Only what
is asked for is read: a section's bytes when its data is used, a relocation table when its
section is linked; `.debug_*` sections and their relocations are never touched. Names are read
one character per byte (latin-1), as the Android reader does, so no byte of a name is lost.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import cached_property

from bpfloader.errors import ObjectFormatError

SHF_EXECINSTR = 0x4
SHF_COMPRESSED = 0x800
EM_BPF = 247
ELF64_HEADER_SIZE = 64
SECTION_HEADER_SIZE = 64
SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 2, 3, 4, 8, 9
_SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")
_SYMBOL = struct.Struct("<IBBHQQ")  # Elf64_Sym
_REL = struct.Struct("<QQ")  # Elf64_Rel
RELA_SIZE = 24  # Elf64_Rela: refused, never read
# The entry size of each table the loader reads (or refuses), as sh_entsize must say.
ENTRY_SIZES = {SHT_SYMTAB: _SYMBOL.size, SHT_REL: _REL.size, SHT_RELA: RELA_SIZE}

# The section types named as the ELF specification does; any other is shown in hex.
SECTION_TYPES = {
    0: "SHT_NULL",
    1: "SHT_PROGBITS",
    2: "SHT_SYMTAB",
    3: "SHT_STRTAB",
    4: "SHT_RELA",
    5: "SHT_HASH",
    6: "SHT_DYNAMIC",
    7: "SHT_NOTE",
    8: "SHT_NOBITS",
    9: "SHT_REL",
    10: "SHT_SHLIB",
    11: "SHT_DYNSYM",
    14: "SHT_INIT_ARRAY",
    15: "SHT_FINI_ARRAY",
    16: "SHT_PREINIT_ARRAY",
    17: "SHT_GROUP",
    18: "SHT_SYMTAB_SHNDX",
    19: "SHT_RELR",
}
# Section types of executables and shared objects: a relocatable BPF object has none.
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
SYMBOL_TYPES = {
    0: "STT_NOTYPE",
    1: "STT_OBJECT",
    2: "STT_FUNC",
    3: "STT_SECTION",
    4: "STT_FILE",
    5: "STT_COMMON",
    6: "STT_TLS",
    10: "STT_GNU_IFUNC",
}
SYMBOL_BINDS = {0: "STB_LOCAL", 1: "STB_GLOBAL", 2: "STB_WEAK", 10: "STB_GNU_UNIQUE"}
SPECIAL_SECTION_INDEXES = {0: "SHN_UNDEF", 0xFFF1: "SHN_ABS", 0xFFF2: "SHN_COMMON"}
# Machines a file that is not a BPF object is most likely built for, named in the refusal.
MACHINES = {3: "EM_386", 8: "EM_MIPS", 20: "EM_PPC", 21: "EM_PPC64", 22: "EM_S390",
            40: "EM_ARM", 62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV"}  # fmt: skip

# Bounds on what an object may hold, far above what any compiler emits for one BPF object.
MAX_SECTIONS = 4096
MAX_SYMBOLS = 1 << 18
MAX_RELOCATIONS = 1 << 20  # in all relocation sections together
MAX_NAME_LEN = 4096  # a section or symbol name, in bytes
MAX_NOBITS_SIZE = 1 << 28  # a .bss-like section: its zeros are made in memory


def string_at(table: bytes, offset: int) -> str:
    if not 0 <= offset < len(table):
        raise ObjectFormatError(
            f"name offset {offset} is outside its string table ({len(table)} bytes)"
        )
    end = table.find(b"\0", offset, offset + MAX_NAME_LEN + 1)
    if end < 0 and len(table) - offset > MAX_NAME_LEN:
        raise ObjectFormatError(f"name at offset {offset} is longer than {MAX_NAME_LEN} bytes")
    return table[offset : end if end >= 0 else len(table)].decode("latin-1")


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: str  # "SHT_PROGBITS", "SHT_NOBITS", ... (an unnamed type in hex)
    flags: int
    size: int
    offset: int
    link: int
    info: int  # for a relocation section: the index of the section it relocates
    file: bytes = field(repr=False, compare=False)

    @cached_property
    def data(self) -> bytes:
        """The section's bytes, cut from the file when first asked for; empty for SHT_NOBITS
        (.bss): its size says how many zero bytes."""
        if self.type == "SHT_NOBITS":
            return b""
        return self.file[self.offset : self.offset + self.size]

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
    shndx: int | str  # the index of its section, or "SHN_UNDEF", "SHN_ABS", "SHN_COMMON"

    @property
    def section(self) -> int | None:
        return self.shndx if isinstance(self.shndx, int) else None


@dataclass(frozen=True)
class Relocation:
    offset: int  # byte offset in the section relocated
    type: int
    symbol: Symbol


class ElfObject:
    """Every section and symbol of an object, and the relocations of any section on request.
    Raises ObjectFormatError, naming the section where there is one."""

    def __init__(self, data: bytes):
        headers, shstrndx = _section_headers(data)
        names = _section_names(data, headers[shstrndx])
        self.sections: list[Section] = []
        self._by_name: dict[str, Section] = {}
        self._relocation_tables: dict[int, list[Section]] = {}
        symtab: Section | None = None
        symbols = relocations = 0
        for index, header in enumerate(headers):
            name_off, kind, flags, _, offset, size, link, info, _, entsize = header
            name = string_at(names, name_off) if index else ""
            section = Section(
                index,
                name,
                SECTION_TYPES.get(kind) or f"{kind:#x}",
                flags,
                size,
                offset,
                link,
                info,
                data,
            )
            _check_section(section, kind, len(data))
            self.sections.append(section)
            self._by_name.setdefault(name, section)
            entry = ENTRY_SIZES.get(kind)
            if entry is None:
                continue
            if entsize != entry or size % entry:
                raise ObjectFormatError(
                    f"table of {size} bytes with entries of {entsize} bytes; expected whole "
                    f"entries of {entry} bytes",
                    section=name,
                )
            linked = SHT_STRTAB if kind == SHT_SYMTAB else SHT_SYMTAB
            if not 0 < link < len(headers) or headers[link][1] != linked:
                raise ObjectFormatError(f"linked section {link} is not usable", section=name)
            if kind == SHT_SYMTAB:
                symbols += size // entry
                if symbols > MAX_SYMBOLS:
                    raise ObjectFormatError(
                        f"more than the limit of {MAX_SYMBOLS} symbols", section=name
                    )
                symtab = symtab or section
                continue
            if not 0 < info < len(headers):
                # Relocations aimed at no section would be dropped silently, leaving the code
                # they belong to unrelocated.
                raise ObjectFormatError(
                    f"relocations for section {info}, which does not exist", section=name
                )
            relocations += size // entry
            if relocations > MAX_RELOCATIONS:
                raise ObjectFormatError(
                    f"more than the limit of {MAX_RELOCATIONS} relocations", section=name
                )
            if kind == SHT_RELA:
                raise ObjectFormatError(
                    "RELA relocations are not used by BPF objects", section=name
                )
            self._relocation_tables.setdefault(info, []).append(section)
        self.symbols = self._read_symbols(symtab)
        if self._relocation_tables and not self.symbols:
            first = min(s.index for tables in self._relocation_tables.values() for s in tables)
            raise ObjectFormatError(
                "relocations but no symbol table", section=self.sections[first].name
            )

    def section(self, name: str) -> Section | None:
        return self._by_name.get(name)

    def section_at(self, index: int) -> Section | None:
        return self.sections[index] if 0 < index < len(self.sections) else None

    def symbols_in(self, index: int) -> list[Symbol]:
        return [s for s in self.symbols if s.shndx == index]

    def relocation_tables(self, index: int) -> list[Section]:
        """The relocation sections aimed at section `index`, in file order."""
        return self._relocation_tables.get(index, [])

    def relocations(self, index: int) -> list[Relocation]:
        """The relocations that apply to section `index`, in file order (read on request)."""
        found = []
        for table in self.relocation_tables(index):
            for offset, r_info in _REL.iter_unpack(table.data):
                sym = r_info >> 32
                if sym >= len(self.symbols):
                    raise ObjectFormatError(
                        f"relocation at offset {offset} names symbol {sym}, which does not exist",
                        section=table.name,
                    )
                found.append(Relocation(offset, r_info & 0xFFFFFFFF, self.symbols[sym]))
        return found

    def _read_symbols(self, symtab: Section | None) -> list[Symbol]:
        if symtab is None:
            return []
        strtab = self.sections[symtab.link].data
        symbols = []
        for name_off, info, _, shndx, value, size in _SYMBOL.iter_unpack(symtab.data):
            symbols.append(
                Symbol(
                    string_at(strtab, name_off) if name_off else "",
                    value,
                    size,
                    SYMBOL_TYPES.get(info & 0xF) or f"STT_{info & 0xF}",
                    SYMBOL_BINDS.get(info >> 4) or f"STB_{info >> 4}",
                    SPECIAL_SECTION_INDEXES.get(shndx, shndx),
                )
            )
        return symbols


def _section_headers(data: bytes) -> tuple[list[tuple[int, ...]], int]:
    """The section header table of a 64-bit little-endian BPF object (within MAX_SECTIONS),
    and the index of its section name table."""
    if data[:4] != b"\x7fELF":
        raise ObjectFormatError("not an ELF file")
    if len(data) < 20:
        raise ObjectFormatError(f"truncated file: {len(data)} bytes is shorter than the ELF header")
    big = data[5] == 2
    machine: int = struct.unpack_from(">H" if big else "<H", data, 18)[0]
    if machine != EM_BPF:
        raise ObjectFormatError(f"not a BPF object (ELF machine {MACHINES.get(machine, machine)})")
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
        _SECTION_HEADER.unpack_from(data, shoff + SECTION_HEADER_SIZE * i) for i in range(shnum)
    ]
    if not 0 < shstrndx < shnum or headers[shstrndx][1] != SHT_STRTAB:
        raise ObjectFormatError(f"section name table index {shstrndx} is not a string table")
    return headers, shstrndx


def _section_names(data: bytes, header: tuple[int, ...]) -> bytes:
    names_at, names_size = header[4], header[5]
    if names_at + names_size > len(data):
        raise _truncated("the section name table", names_at + names_size, len(data))
    return data[names_at : names_at + names_size]


def _check_section(section: Section, kind: int, file_size: int) -> None:
    if kind == SHT_NOBITS and section.size > MAX_NOBITS_SIZE:
        raise ObjectFormatError(
            f"{section.size} bytes is more than the limit of {MAX_NOBITS_SIZE} bytes",
            section=section.name,
        )
    end = section.offset + section.size
    if kind != SHT_NOBITS and end > file_size:
        raise ObjectFormatError(
            f"truncated file: the section's data ends at byte {end}, "
            f"but the file has {file_size} bytes",
            section=section.name,
        )
    if kind in LINKED_SECTION_TYPES:
        raise ObjectFormatError(
            f"{LINKED_SECTION_TYPES[kind]} sections belong to executables and shared "
            "objects, not to BPF objects",
            section=section.name,
        )
    if section.flags & SHF_COMPRESSED:
        raise ObjectFormatError("compressed sections are not supported", section=section.name)


def section_names(data: bytes) -> set[str]:
    """Best effort for a file that failed to parse: the names its section headers still show."""
    try:
        headers, shstrndx = _section_headers(data)
        names = _section_names(data, headers[shstrndx])
    except ObjectFormatError:
        return set()
    found = set()
    for header in headers[1:]:
        try:
            found.add(string_at(names, header[0]))
        except ObjectFormatError:
            continue
    return found


def _truncated(what: str, end: int, size: int) -> ObjectFormatError:
    return ObjectFormatError(
        f"truncated file: {what} ends at byte {end}, but the file has {size} bytes"
    )
