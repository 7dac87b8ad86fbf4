"""A BPF ELF object as plain values: sections, symbols and relocations (pure).

The loader reads the few ELF tables a BPF object needs itself, in one pass over the file's
bytes, checking each bound as it goes (an untrusted file must not make a loader that runs as
root at boot take long, use much memory or fail with anything but a named reason). Only what
is asked for is read: a section's bytes when its data is used, a relocation table when its
section is linked; `.debug_*` sections and their relocations are never touched. Names are read
one character per byte (latin-1), as the Android reader does, so no byte of a name is lost.

Section types, symbol types and binds are the enums below where this module names the value,
and the plain number where it does not (a processor's or an OS's own): nothing the file says
is lost, and such a number compares unequal to every member. A symbol's section index is the
number the file holds, with the special ones (SHN_UNDEF, ...) as constants.

Every table is indexed once, so that the work is linear in the file (an object of thousands of
sections and a quarter million symbols must not cost sections x symbols): symbols by section
(`symbols_in`), relocations by section and offset (`relocations_by_offset`). The symbol table is
checked whole when the object is read, but a `Symbol` is made only when one is asked for: a
table the readers barely look at costs 4 bytes a symbol, not a few hundred.
"""

from __future__ import annotations

import bisect
import re
import struct
from abc import abstractmethod
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from functools import cached_property
from typing import TypeVar, overload

from bpfloader.errors import ObjectFormatError

SHF_EXECINSTR = 0x4
SHF_COMPRESSED = 0x800
EM_BPF = 247
ELF64_HEADER_SIZE = 64
SECTION_HEADER_SIZE = 64


class SectionType(IntEnum):
    """sh_type, as the ELF specification (and GNU, Sun) name the types: `SHT_` + the name."""

    NULL = 0
    PROGBITS = 1
    SYMTAB = 2
    STRTAB = 3
    RELA = 4
    HASH = 5
    DYNAMIC = 6
    NOTE = 7
    NOBITS = 8
    REL = 9
    SHLIB = 10
    DYNSYM = 11
    INIT_ARRAY = 14
    FINI_ARRAY = 15
    PREINIT_ARRAY = 16
    GROUP = 17
    SYMTAB_SHNDX = 18
    RELR = 19
    SUNW_LDYNSYM = 0x6FFFFFF3
    GNU_HASH = 0x6FFFFFF6
    SUNW_syminfo = 0x6FFFFFFC
    GNU_verdef = 0x6FFFFFFD
    GNU_verneed = 0x6FFFFFFE
    GNU_versym = 0x6FFFFFFF


# The members the loader compares with, also as module constants spelled as the specification
# spells them. They are the same objects (SHT_NOBITS is SectionType.NOBITS), read as plain
# globals: on Python 3.11, naming a member goes through EnumType.__getattr__ and costs several
# times more, once per section or symbol compared, at boot. (So for STT_* and STB_* below.)
SHT_PROGBITS = SectionType.PROGBITS
SHT_SYMTAB = SectionType.SYMTAB
SHT_STRTAB = SectionType.STRTAB
SHT_RELA = SectionType.RELA
SHT_NOBITS = SectionType.NOBITS
SHT_REL = SectionType.REL


class SymbolType(IntEnum):
    """The low nibble of st_info: what a symbol names."""

    NOTYPE = 0
    OBJECT = 1
    FUNC = 2
    SECTION = 3
    FILE = 4
    COMMON = 5
    TLS = 6
    GNU_IFUNC = 10


STT_OBJECT = SymbolType.OBJECT
STT_FUNC = SymbolType.FUNC
STT_SECTION = SymbolType.SECTION


class SymbolBind(IntEnum):
    """The high nibble of st_info: whether other objects see a symbol."""

    LOCAL = 0
    GLOBAL = 1
    WEAK = 2
    GNU_UNIQUE = 10


STB_GLOBAL = SymbolBind.GLOBAL
STB_WEAK = SymbolBind.WEAK


# The members by number, to read a field as its member where there is one (its number if not).
_SECTION_TYPES: dict[int, SectionType] = {t.value: t for t in SectionType}
_SYMBOL_TYPES: dict[int, SymbolType] = {t.value: t for t in SymbolType}
_SYMBOL_BINDS: dict[int, SymbolBind] = {b.value: b for b in SymbolBind}

# Section types of executables and shared objects: a relocatable BPF object has none.
LINKED_SECTION_TYPES = frozenset(
    {
        SectionType.HASH,
        SectionType.DYNAMIC,
        SectionType.DYNSYM,
        SectionType.SYMTAB_SHNDX,
        SectionType.RELR,
        SectionType.SUNW_LDYNSYM,
        SectionType.GNU_HASH,
        SectionType.SUNW_syminfo,
        SectionType.GNU_verdef,
        SectionType.GNU_verneed,
        SectionType.GNU_versym,
    }
)

# The special section indexes a symbol's st_shndx may hold instead of a section's index.
SHN_UNDEF = 0  # not defined in this object
SHN_ABS = 0xFFF1  # an absolute value, in no section
SHN_COMMON = 0xFFF2  # a common block not yet allocated
SPECIAL_SECTION_INDEXES = {SHN_UNDEF: "SHN_UNDEF", SHN_ABS: "SHN_ABS", SHN_COMMON: "SHN_COMMON"}

_SECTION_HEADER = struct.Struct("<IIQQQQIIQQ")
_SYMBOL = struct.Struct("<IBBHQQ")  # Elf64_Sym
_REL = struct.Struct("<QQ")  # Elf64_Rel
RELA_SIZE = 24  # Elf64_Rela: refused, never read
# The entry size of each table the loader reads (or refuses), as sh_entsize must say.
ENTRY_SIZES: dict[int, int] = {
    SHT_SYMTAB: _SYMBOL.size,
    SHT_REL: _REL.size,
    SHT_RELA: RELA_SIZE,
}

# Machines a file that is not a BPF object is most likely built for, named in the refusal.
MACHINES = {3: "EM_386", 8: "EM_MIPS", 20: "EM_PPC", 21: "EM_PPC64", 22: "EM_S390",
            40: "EM_ARM", 62: "EM_X86_64", 183: "EM_AARCH64", 243: "EM_RISCV"}  # fmt: skip

# Bounds on what an object may hold, far above what any compiler emits for one BPF object.
MAX_SECTIONS = 4096
MAX_SYMBOLS = 1 << 18
MAX_RELOCATIONS = 1 << 20  # in all relocation sections together
MAX_NAME_LEN = 4096  # a section or symbol name, in bytes
MAX_NOBITS_SIZE = 1 << 28  # a .bss-like section: its zeros are made in memory


def section_type_name(kind: int) -> str:
    """A section type as the ELF specification writes it (`SHT_NOBITS`); one SectionType does
    not name, in hex."""
    try:
        return f"SHT_{SectionType(kind).name}"
    except ValueError:
        return f"{kind:#x}"


def long_name_spans(table: bytes, limit: int) -> list[tuple[int, int]]:
    """The runs of more than `limit` bytes without a NUL in a string table, as (start, end):
    a name may start anywhere but in the last `limit` bytes of one of them (first_bad_name).
    Found in one pass; a table the compiler wrote has none."""
    return [m.span() for m in re.finditer(rb"[^\0]{%d,}" % (limit + 1), table)]


def first_bad_name(
    offsets: Sequence[int], table: bytes, spans: list[tuple[int, int]], limit: int
) -> int | None:
    """The first of `offsets` (0 is no name) that is outside `table` or starts a name longer
    than `limit` (`spans`: long_name_spans(table)), found without making any of the strings;
    None if all are good. Reading the string there raises the reader's own error."""
    if not offsets or (max(offsets) < max(len(table), 1) and not spans):
        return None
    starts = [start for start, _ in spans]
    for offset in offsets:
        if not offset:
            continue
        run = bisect.bisect_right(starts, offset) - 1
        if offset >= len(table) or (run >= 0 and spans[run][1] - offset > limit):
            return offset
    return None


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
    type: SectionType | int  # an int for a type SectionType does not name
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
        if self.type == SHT_NOBITS:
            return b""
        return self.file[self.offset : self.offset + self.size]

    @property
    def executable(self) -> bool:
        return self.type == SHT_PROGBITS and bool(self.flags & SHF_EXECINSTR)


@dataclass(frozen=True, slots=True)
class Symbol:
    name: str
    value: int
    size: int
    type: SymbolType | int  # an int for a type SymbolType does not name
    bind: SymbolBind | int  # ... and for a bind SymbolBind does not name
    shndx: int  # st_shndx: the index of its section, or SHN_UNDEF, SHN_ABS, SHN_COMMON

    @property
    def section(self) -> int | None:
        """The index of the symbol's section; None for SHN_UNDEF, SHN_ABS and SHN_COMMON, which
        name none. Any other number is taken as a section's index, the reserved ones too
        (SHN_LORESERVE..SHN_HIRESERVE, e.g. SHN_XINDEX, whose table BPF objects cannot have):
        the section it names then does not exist, and ElfObject.section_at says so."""
        return None if self.shndx in SPECIAL_SECTION_INDEXES else self.shndx


@dataclass(frozen=True, slots=True)
class Relocation:
    offset: int  # byte offset in the section relocated
    type: int
    symbol: Symbol


_T = TypeVar("_T")


class LazySequence(Sequence[_T]):
    """A table whose entries are made when read: subclasses say how many (`__len__`) and how
    one is made (`_item`, given an index the sequence has checked)."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def _item(self, index: int) -> _T: ...

    @overload
    def __getitem__(self, index: int) -> _T: ...

    @overload
    def __getitem__(self, index: slice) -> list[_T]: ...

    def __getitem__(self, index: int | slice) -> _T | list[_T]:
        if isinstance(index, slice):
            return [self._item(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._item(index)

    def __iter__(self) -> Iterator[_T]:
        return (self._item(i) for i in range(len(self)))


class SymbolTable(LazySequence[Symbol]):
    """The symbol table, checked whole (every name offset) when read, each `Symbol` made when
    asked for. A symbol asked for by index (as relocations name them) is kept for the next
    time; iterating makes each afresh and keeps none."""

    def __init__(self, table: bytes, strings: bytes):
        self._table = table
        self._strings = strings
        self._made: dict[int, Symbol] = {}
        spans = long_name_spans(strings, MAX_NAME_LEN)
        bad = first_bad_name(memoryview(table).cast("I")[0::6], strings, spans, MAX_NAME_LEN)
        if bad is not None:
            string_at(strings, bad)  # raises, naming the problem
        self._shndx = memoryview(table).cast("H")[3::12]

    def __len__(self) -> int:
        return len(self._table) // _SYMBOL.size

    def _item(self, index: int) -> Symbol:
        found = self._made.get(index)
        if found is None:
            found = self._made[index] = self.decode(index)
        return found

    def __iter__(self) -> Iterator[Symbol]:
        return (self.decode(i) for i in range(len(self)))

    def of_type(self, kind: SymbolType) -> Iterator[Symbol]:
        """The symbols of one type, in table order: the others are not made at all."""
        infos = memoryview(self._table)[4 :: _SYMBOL.size]
        return (self.decode(i) for i, info in enumerate(infos) if info & 0xF == kind)

    def by_section(self) -> dict[int, array[int]]:
        """{st_shndx: indexes of its symbols, in table order}, in one pass."""
        found: dict[int, array[int]] = {}
        for i, shndx in enumerate(self._shndx):
            group = found.get(shndx)
            if group is None:
                group = found[shndx] = array("I")
            group.append(i)
        return found

    def decode(self, index: int) -> Symbol:
        """Symbol `index`, made afresh (and not kept)."""
        name_off, info, _, shndx, value, size = _SYMBOL.unpack_from(
            self._table, index * _SYMBOL.size
        )
        return Symbol(
            string_at(self._strings, name_off) if name_off else "",
            value,
            size,
            _SYMBOL_TYPES.get(info & 0xF, info & 0xF),
            _SYMBOL_BINDS.get(info >> 4, info >> 4),
            shndx,
        )


class Relocations:
    """The relocations aimed at one section, ordered by offset once (file order where two
    share an offset), so that a function finds its own by bisection."""

    def __init__(self, offsets: array[int], infos: array[int], symbols: SymbolTable):
        self.offsets = offsets
        self._infos = infos
        self._symbols = symbols

    def __len__(self) -> int:
        return len(self.offsets)

    def between(self, start: int, end: int) -> Iterator[Relocation]:
        """The relocations at byte offsets start..end (end excluded), by offset."""
        lo = bisect.bisect_left(self.offsets, start)
        hi = bisect.bisect_left(self.offsets, end, lo)
        for i in range(lo, hi):
            r_info = self._infos[i]
            yield Relocation(self.offsets[i], r_info & 0xFFFFFFFF, self._symbols[r_info >> 32])


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
                _SECTION_TYPES.get(kind, kind),
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
        self._symbols_by_section: dict[int, array[int]] | None = None
        self._sorted_relocations: dict[int, Relocations] = {}
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
        """The symbols defined in section `index` (a special index is no section: none)."""
        if index in SPECIAL_SECTION_INDEXES:
            return []
        if self._symbols_by_section is None:
            self._symbols_by_section = self.symbols.by_section()
        return [self.symbols.decode(i) for i in self._symbols_by_section.get(index, ())]

    def relocation_tables(self, index: int) -> list[Section]:
        """The relocation sections aimed at section `index`, in file order."""
        return self._relocation_tables.get(index, [])

    def relocations(self, index: int) -> Iterator[Relocation]:
        """The relocations that apply to section `index`, in file order (read on request, and
        made one at a time as they are iterated; every symbol they name is checked first)."""
        self._check_relocations(index)
        return (
            Relocation(offset, r_info & 0xFFFFFFFF, self.symbols[r_info >> 32])
            for table in self.relocation_tables(index)
            for offset, r_info in _REL.iter_unpack(table.data)
        )

    def relocations_by_offset(self, index: int) -> Relocations:
        """The relocations that apply to section `index`, ordered by offset: read and sorted
        once, however many functions of the section ask."""
        found = self._sorted_relocations.get(index)
        if found is not None:
            return found
        self._check_relocations(index)
        offsets: array[int] = array("Q")
        infos: array[int] = array("Q")
        for table in self.relocation_tables(index):
            fields = memoryview(table.data).cast("Q")
            offsets.extend(fields[0::2])
            infos.extend(fields[1::2])
        if any(offsets[i] > offsets[i + 1] for i in range(len(offsets) - 1)):
            order = sorted(range(len(offsets)), key=offsets.__getitem__)  # stable
            offsets = array("Q", [offsets[i] for i in order])
            infos = array("Q", [infos[i] for i in order])
        found = self._sorted_relocations[index] = Relocations(offsets, infos, self.symbols)
        return found

    def _check_relocations(self, index: int) -> None:
        """Every relocation aimed at section `index` names a symbol that exists (the first
        that does not, in file order, is the error)."""
        count = len(self.symbols)
        for table in self.relocation_tables(index):
            symbols = memoryview(table.data).cast("I")[3::4]
            if not symbols or max(symbols) < count:
                continue
            for offset, r_info in _REL.iter_unpack(table.data):
                if r_info >> 32 >= count:
                    raise ObjectFormatError(
                        f"relocation at offset {offset} names symbol {r_info >> 32}, "
                        "which does not exist",
                        section=table.name,
                    )

    def _read_symbols(self, symtab: Section | None) -> SymbolTable:
        if symtab is None:
            return SymbolTable(b"", b"")
        return SymbolTable(symtab.data, self.sections[symtab.link].data)


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
            f"{section_type_name(kind)} sections belong to executables and shared "
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
