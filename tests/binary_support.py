"""User binaries for the uprobe symbol reader (bpfloader/client/symbols.py): built by gcc (an
executable with and without PIE, static, a shared library, stripped), and written here byte by
byte (`elf_binary`), for the ELF classes and byte orders gcc does not build on this machine and
for shapes a linker does not make (a weak and a global symbol of one name, two tables, names
sharing a tail)."""

from __future__ import annotations

import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

PROBED_C = """
#include <stdlib.h>
__attribute__((noinline)) int bpfloader_probed(int x) {
    __asm__ volatile("" ::: "memory");
    return x * 2;
}
int main(int argc, char **argv) {
    int total = 0;
    for (int i = 0; i < atoi(argv[1]); i++) total += bpfloader_probed(i);
    return total == -1;
}
"""
LIBRARY_C = """
__attribute__((noinline)) int probe_lib(int x) { return x + 1; }
__attribute__((weak)) int probe_weak(int x) { return x - 1; }
static int probe_static(int x) { return x * 3; }
int (*keep)(int) = probe_static;
"""
# name -> (source, gcc flags, strip after)
GCC_BINARIES: dict[str, tuple[str, list[str], bool]] = {
    "pie": (PROBED_C, ["-O1", "-pie", "-fPIE"], False),
    "no_pie": (PROBED_C, ["-O1", "-no-pie"], False),
    "static": (PROBED_C, ["-O1", "-static"], False),
    "stripped": (PROBED_C, ["-O1", "-rdynamic"], True),  # .dynsym only: -rdynamic exports
    "library.so": (LIBRARY_C, ["-O1", "-shared", "-fPIC"], False),
}


def build_binaries(out: Path, names: tuple[str, ...] = tuple(GCC_BINARIES)) -> dict[str, Path]:
    """The GCC_BINARIES named, built into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    built = {}
    for name in names:
        source, flags, strip = GCC_BINARIES[name]
        c_file, binary = out / f"{name}.c", out / name
        c_file.write_text(source)
        subprocess.run(["gcc", *flags, "-o", str(binary), str(c_file)], check=True)
        if strip:
            subprocess.run(["strip", str(binary)], check=True)
        built[name] = binary
    return built


ET_REL, ET_EXEC, ET_DYN = 1, 2, 3
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_DYNSYM = 1, 2, 3, 11
STB_LOCAL, STB_GLOBAL, STB_WEAK = 0, 1, 2
STT_OBJECT, STT_FUNC, STT_GNU_IFUNC = 1, 2, 10
SHN_UNDEF = 0
TEXT_ADDRESS = 0x401000  # where .text is loaded; the file has it at TEXT_OFFSET
TEXT_SIZE = 0x100
FILLER_NAME = "filler"


@dataclass(frozen=True)
class Sym:
    name: str
    value: int  # an address: TEXT_ADDRESS + something below TEXT_SIZE, for a function there
    type: int = STT_FUNC
    bind: int = STB_GLOBAL
    shndx: int = 1  # .text
    name_offset: int | None = None  # where st_name points, where not at its own string


def elf_binary(
    symtab: list[Sym],
    dynsym: list[Sym] | None = None,
    *,
    bits: int = 64,
    order: str = "<",
    kind: int = ET_EXEC,
    strings: bytes | None = None,
    filler: int = 0,
) -> bytes:
    """An executable of one PT_LOAD segment (`.text`, TEXT_SIZE bytes at TEXT_ADDRESS) with a
    .symtab and, if given, a .dynsym, in the ELF class and byte order asked for. `strings` is
    the symbol tables' string table; by default each name once, in order. `filler`: that many
    more objects named FILLER_NAME at the start of .symtab (a large table, made quickly)."""
    if strings is None:
        listed = [*symtab, *(dynsym or [])]
        strings = b"\0" + b"".join(s.name.encode() + b"\0" for s in listed)
        strings += FILLER_NAME.encode() + b"\0" if filler else b""
    wide = bits == 64
    header_size, phentsize, shentsize = (64, 56, 64) if wide else (52, 32, 40)
    symbol = struct.Struct(order + ("IBBHQQ" if wide else "IIIBBH"))

    def table(symbols: list[Sym], filler: int = 0) -> bytes:
        out = bytes(symbol.size)  # the null symbol
        if filler:
            out += table([Sym(FILLER_NAME, TEXT_ADDRESS, STT_OBJECT)])[symbol.size :] * filler
        for s in symbols:
            own = b"\0" + s.name.encode() + b"\0"  # the name's own string, not a part of another's
            at = s.name_offset if s.name_offset is not None else strings.index(own) + 1
            info = s.bind << 4 | s.type
            fields = (
                (at, info, 0, s.shndx, s.value, 4) if wide else (at, s.value, 4, info, 0, s.shndx)
            )
            out += symbol.pack(*fields)
        return out

    names = b"\0.text\0.symtab\0.strtab\0.dynsym\0.shstrtab\0"
    # (name, type, data, link): the section headers after the null one
    sections = [
        (b".text", SHT_PROGBITS, bytes(TEXT_SIZE), 0),
        (b".symtab", SHT_SYMTAB, table(symtab, filler), 3),
        (b".strtab", SHT_STRTAB, strings, 0),
    ]
    if dynsym is not None:
        sections.append((b".dynsym", SHT_DYNSYM, table(dynsym), 3))
    sections.append((b".shstrtab", SHT_STRTAB, names, 0))
    body = b""
    placed = []
    offset = header_size + phentsize
    for name, kind_, data, link in sections:
        offset += -offset % 16
        placed.append((name, kind_, offset, len(data), link))
        body = body.ljust(offset - header_size - phentsize, b"\0") + data
        offset += len(data)
    shoff = offset + -offset % 16
    body = body.ljust(shoff - header_size - phentsize, b"\0")
    text_offset = placed[0][2]
    if wide:
        segment = struct.pack(order + "IIQQQQQQ", 1, 5, text_offset, TEXT_ADDRESS, TEXT_ADDRESS,
                              TEXT_SIZE, TEXT_SIZE, 0x1000)  # fmt: skip
    else:
        segment = struct.pack(order + "8I", 1, text_offset, TEXT_ADDRESS, TEXT_ADDRESS,
                              TEXT_SIZE, TEXT_SIZE, 5, 0x1000)  # fmt: skip
    headers = bytes(shentsize)
    for name, kind_, at, size, link in placed:
        entsize = symbol.size if kind_ in (SHT_SYMTAB, SHT_DYNSYM) else 0
        fields = (names.index(name), kind_, 0, 0, at, size, link, 1, 8, entsize)
        headers += struct.pack(order + ("IIQQQQIIQQ" if wide else "10I"), *fields)
    ident = b"\x7fELF" + bytes([2 if wide else 1, 1 if order == "<" else 2, 1]) + bytes(9)
    machine = 62 if wide else 3  # EM_X86_64, EM_386
    elf_header = ident + struct.pack(
        order + ("HHIQQQIHHHHHH" if wide else "HHIIIIIHHHHHH"),
        kind, machine, 1, TEXT_ADDRESS, header_size, shoff, 0, header_size,
        phentsize, 1, shentsize, len(placed) + 1, len(placed),
    )  # fmt: skip
    return elf_header + segment + body + headers


def text_offset(data: bytes) -> int:
    """Where an `elf_binary`'s .text starts in the file (its one segment's p_offset)."""
    if data[4] == 2:
        return int(struct.unpack_from(("<" if data[5] == 1 else ">") + "Q", data, 64 + 8)[0])
    return int(struct.unpack_from(("<" if data[5] == 1 else ">") + "I", data, 52 + 4)[0])
