"""Where a function starts in an ELF executable or shared object: what a uprobe needs (an
offset in the file).

The binary is untrusted input (any file a user names, however large), read here without an ELF
library and bounded: the ELF header, the section and program headers, then the first
SHT_SYMTAB and the first SHT_DYNSYM (in that order, as libbpf searches them) and their string
tables, CHUNK bytes at a time, so that memory stays a few MiB whatever the size of the file and
time is linear in the tables read. The name is first found in the string table (each place
where it ends with a NUL: a linker shares the tails of names), then the symbols that point
there.

libbpf's rules: a defined function (STT_FUNC or STT_GNU_IFUNC); the first table with one wins;
a global symbol over a weak one; two others at different addresses are ambiguous. Its address
becomes a file offset through the loadable segment that holds it: p_offset + address - p_vaddr.
Both ELF classes and byte orders are read (a 32-bit binary runs on a 64-bit kernel).
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bpfloader.errors import AttachError
from bpfloader.obj.elf import SHN_UNDEF, SectionType, SymbolBind, SymbolType, section_type_name

Read = Callable[[int, int], bytes]  # read(offset, count): the file's bytes there

CHUNK = 1 << 20  # bytes of a table read at a time
MAX_NAME_MATCHES = 1 << 16  # places a name may be in one string table
ET_EXEC, ET_DYN = 2, 3
PT_LOAD = 1
FUNCTION_TYPES = (SymbolType.FUNC, SymbolType.GNU_IFUNC)
SYMBOL_TABLES = (SectionType.SYMTAB, SectionType.DYNSYM)


@dataclass(frozen=True)
class _Class:
    """The layouts of one ELF class, and where the fields read are in each record."""

    header: str  # after e_ident: e_type ... e_shstrndx
    section: str  # Elf_Shdr
    segment: str  # Elf_Phdr
    segment_fields: tuple[int, int, int, int]  # p_type, p_offset, p_vaddr, p_filesz
    symbol: str  # Elf_Sym
    symbol_fields: tuple[int, int, int]  # st_info, st_shndx, st_value


_CLASSES = {
    1: _Class("HHIIIIIHHHHHH", "10I", "8I", (0, 1, 2, 4), "IIIBBH", (3, 5, 1)),  # ELFCLASS32
    2: _Class("HHIQQQIHHHHHH", "IIQQQQIIQQ", "IIQQQQQQ", (0, 2, 3, 5), "IBBHQQ", (1, 3, 4)),
}
_ORDERS = {1: "<", 2: ">"}  # ELFDATA2LSB, ELFDATA2MSB
_IDENT_SIZE = 16
NATIVE_ORDER = "<" if sys.byteorder == "little" else ">"


@dataclass(frozen=True)
class _Table:
    """A section: its type, where its bytes are, its linked section and its entries' size."""

    type: int
    offset: int
    size: int
    link: int
    entsize: int


@dataclass(frozen=True)
class _Segment:
    type: int
    offset: int
    vaddr: int
    filesz: int


class _Binary:
    """An ELF file's headers, read through `read`, each bound checked against its `size`."""

    def __init__(self, read: Read, size: int):
        self._read = read
        self.size = size
        ident = self.bytes_at(0, min(size, _IDENT_SIZE), "the ELF header")
        if ident[:4] != b"\x7fELF":
            raise AttachError("not an ELF file")
        if len(ident) < _IDENT_SIZE or ident[4] not in _CLASSES or ident[5] not in _ORDERS:
            raise AttachError("not an ELF file of a known class and byte order")
        self.layout = _CLASSES[ident[4]]
        self.order = _ORDERS[ident[5]]
        header = struct.Struct(self.order + self.layout.header)
        fields = header.unpack(self.bytes_at(_IDENT_SIZE, header.size, "the ELF header"))
        kind, _, _, _, phoff, shoff, _, _, phentsize, phnum, shentsize, shnum, _ = fields
        if kind not in (ET_EXEC, ET_DYN):
            raise AttachError(f"not an executable or shared object (ELF type {kind})")
        self.sections = [
            _Table(*(record[i] for i in (1, 4, 5, 6, 9)))
            for record in self._records(shoff, shnum, shentsize, self.layout.section, "section")
        ]
        self.segments = [
            _Segment(*(record[i] for i in self.layout.segment_fields))
            for record in self._records(phoff, phnum, phentsize, self.layout.segment, "program")
        ]

    def check_bounds(self, offset: int, count: int, what: str) -> None:
        if offset + count > self.size:
            raise AttachError(
                f"truncated: {what} ends at byte {offset + count}, but the file has "
                f"{self.size} bytes"
            )

    def bytes_at(self, offset: int, count: int, what: str) -> bytes:
        self.check_bounds(offset, count, what)
        data = self._read(offset, count)
        if len(data) != count:
            raise AttachError(f"the file changed while it was read ({what})")
        return data

    def _records(
        self, offset: int, count: int, entsize: int, layout: str, what: str
    ) -> Iterator[tuple[int, ...]]:
        if not count:
            if offset and what == "section":
                raise AttachError("extended section numbering (65280 sections or more)")
            return iter(())
        record = struct.Struct(self.order + layout)
        if entsize != record.size:
            raise AttachError(f"{what} headers of {entsize} bytes; expected {record.size}")
        table = self.bytes_at(offset, count * entsize, f"the {what} header table")
        return record.iter_unpack(table)

    def chunks(
        self, table: _Table, what: str, *, unit: int = 1, overlap: int = 0
    ) -> Iterator[tuple[int, bytes]]:
        """A table's bytes as (offset in the table, bytes), at most CHUNK at a time in whole
        `unit`s; each chunk starts with the last `overlap` bytes of the one before."""
        self.check_bounds(table.offset, table.size, what)
        step = max(unit, CHUNK - CHUNK % unit)
        tail = b""
        done = 0
        while done < table.size:
            count = min(step, table.size - done)
            chunk = tail + self.bytes_at(table.offset + done, count, what)
            yield done - len(tail), chunk
            tail = chunk[max(0, len(chunk) - overlap) :] if overlap else b""
            done += count


def function_offset(binary: str, symbol: str) -> int:
    """The file offset of function `symbol` of `binary` (from its symbol tables): its
    address, moved from the loadable segment that holds it to where that segment is in the
    file."""
    try:
        fd = os.open(binary, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
            return find_function(lambda offset, count: os.pread(fd, count, offset), size, symbol)
        finally:
            os.close(fd)
    except OSError as e:
        raise AttachError(f"cannot read it: {e.strerror}", file=binary) from e
    except AttachError as e:
        e.where(file=binary)
        raise


def find_function(read: Read, size: int, symbol: str) -> int:
    """`function_offset` in the ELF file of `size` bytes that `read` reads (the fuzz contract
    gives it bytes). Raises AttachError."""
    name = os.fsencode(symbol)
    if not name or b"\0" in name:
        raise AttachError(f"{symbol!r} is not a function's name")
    binary = _Binary(read, size)
    for kind in SYMBOL_TABLES:
        # One of each, as the ELF specification allows: the work is bounded by the file's size.
        table = next((t for t in binary.sections if t.type == kind), None)
        address = None if table is None else _address_in(binary, table, name, symbol)
        if address is not None:
            return _file_offset(binary, address, symbol)
    raise AttachError(f"no function {symbol!r} in its symbol tables")


def _address_in(binary: _Binary, table: _Table, name: bytes, symbol: str) -> int | None:
    """The address of function `name` in one symbol table; None if it has none."""
    where = section_type_name(table.type)
    record = struct.Struct(binary.order + binary.layout.symbol)
    if table.entsize != record.size or table.size % record.size:
        raise AttachError(
            f"table of {table.size} bytes with entries of {table.entsize} bytes; expected "
            f"whole entries of {record.size} bytes",
            section=where,
        )
    strings = binary.sections[table.link] if 0 < table.link < len(binary.sections) else None
    if strings is None or strings.type != SectionType.STRTAB:
        raise AttachError(f"linked section {table.link} is not a string table", section=where)
    places = _name_places(binary, strings, name + b"\0", where)
    if not places:
        return None
    info_at, shndx_at, value_at = binary.layout.symbol_fields
    swap = binary.order != NATIVE_ORDER
    found: tuple[int, bool] | None = None  # (address, weak)
    for _, chunk in binary.chunks(table, f"the {where} table", unit=record.size):
        words = array("I", chunk)
        if swap:
            words.byteswap()
        for i, name_offset in enumerate(words[0 :: record.size // 4]):  # st_name: word 0
            if name_offset not in places:
                continue
            fields = record.unpack_from(chunk, i * record.size)
            if fields[info_at] & 0xF not in FUNCTION_TYPES or fields[shndx_at] == SHN_UNDEF:
                continue
            address, weak = fields[value_at], fields[info_at] >> 4 == SymbolBind.WEAK
            if found is None or (found[1] and not weak):
                found = (address, weak)
            elif not weak and not found[1] and address != found[0]:
                raise AttachError(
                    f"more than one function {symbol!r} (at {found[0]:#x} and {address:#x}): "
                    "attach by offset instead",
                    section=where,
                )
    return None if found is None else found[0]


def _name_places(binary: _Binary, strings: _Table, needle: bytes, where: str) -> set[int]:
    """Every offset in a string table where `needle` (a name and its NUL) starts, but 0 (the
    offset of no name)."""
    places: set[int] = set()
    for start, chunk in binary.chunks(
        strings, f"the string table of {where}", overlap=len(needle) - 1
    ):
        at = chunk.find(needle)
        while at >= 0:
            if start + at:
                places.add(start + at)
            if len(places) > MAX_NAME_MATCHES:
                raise AttachError(
                    f"the name is in more than {MAX_NAME_MATCHES} places of its string table",
                    section=where,
                )
            at = chunk.find(needle, at + 1)
    return places


def _file_offset(binary: _Binary, address: int, symbol: str) -> int:
    for segment in binary.segments:
        if segment.type == PT_LOAD and segment.vaddr <= address < segment.vaddr + segment.filesz:
            binary.check_bounds(segment.offset, segment.filesz, f"the segment of {symbol!r}")
            return address - segment.vaddr + segment.offset
    raise AttachError(f"function {symbol!r} is in no loadable segment")
