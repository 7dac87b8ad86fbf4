"""Reader bombs: objects built in Python (no clang) whose size is ordinary but whose shape
made a reader do work or take memory far beyond what their bytes justify (issue 16, item 6).

Each builder returns the object's bytes; `BOMBS` names them, at their full size, and each
takes a `scale` (0 < scale <= 1) for smaller copies of the same shape (the fuzz seeds).
`python -m tests.obj.bombs NAME [--write FILE]` reads one in this process and prints
{"bomb", "bytes", "seconds", "peak_rss_kib", "baseline_rss_kib", "error"} as JSON (the peak
is the reader's: the generator's own is reset first); run it in a subprocess, under the limits
a test or a measurement wants (`--memory-mib`: RLIMIT_AS, from what the process holds then).
"""

from __future__ import annotations

import argparse
import json
import resource
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

EM_BPF = 247
SHT_PROGBITS, SHT_SYMTAB, SHT_STRTAB, SHT_REL = 1, 2, 3, 9
SHF_ALLOC, SHF_EXECINSTR = 0x2, 0x4
STB_LOCAL, STB_GLOBAL = 0, 1
STT_NOTYPE, STT_OBJECT, STT_FUNC, STT_SECTION = 0, 1, 2, 3
R_BPF_64_64, R_BPF_64_32 = 1, 10
BTF_KIND_INT, BTF_KIND_STRUCT, BTF_KIND_TYPEDEF = 1, 4, 8

EXIT = struct.pack("<BBhi", 0x95, 0, 0, 0)
MOV_R0_0 = struct.pack("<BBhi", 0xB7, 0, 0, 0)
CALL_PSEUDO = struct.pack("<BBhi", 0x85, 0x10, 0, -1)  # a bpf-to-bpf call, resolved by reloc
LD_IMM64 = struct.pack("<BBhi", 0x18, 0x01, 0, 0) + bytes(8)  # r1 = address (relocated)


@dataclass
class Sec:
    name: str
    type: int
    data: bytes = b""
    flags: int = 0
    link: int = 0
    info: int = 0
    entsize: int = 0


@dataclass
class Elf:
    """An ELF relocatable BPF object under construction: sections, then symbols."""

    sections: list[Sec] = field(default_factory=list)
    symbols: list[tuple[str, int, int, int, int, int]] = field(default_factory=list)

    def add(self, section: Sec) -> int:
        self.sections.append(section)
        return len(self.sections)  # its index: the null section is 0

    def symbol(self, name: str, kind: int, bind: int, shndx: int, value: int, size: int) -> int:
        self.symbols.append((name, kind, bind, shndx, value, size))
        return len(self.symbols)  # its index: the null symbol is 0

    def build(self, relocations: dict[int, list[tuple[int, int, int]]] | None = None) -> bytes:
        """The bytes: the sections so far, `.rel` tables {section: [(offset, type, symbol)]},
        `.strtab`, `.symtab` (locals first) and `.shstrtab`."""
        sections = list(self.sections)
        symtab_index = len(sections) + len(relocations or {}) + 2
        for target, rels in (relocations or {}).items():
            table = b"".join(struct.pack("<QQ", o, (s << 32) | t) for o, t, s in rels)
            name = ".rel" + sections[target - 1].name
            sections.append(Sec(name, SHT_REL, table, link=symtab_index, info=target, entsize=16))
        strtab, names = _strings([s[0] for s in self.symbols])
        sections.append(Sec(".strtab", SHT_STRTAB, strtab))
        locals_first = sorted(range(len(self.symbols)), key=lambda i: self.symbols[i][2] != 0)
        assert locals_first == list(range(len(self.symbols))), "add local symbols first"
        first_global = next(
            (i + 1 for i, s in enumerate(self.symbols) if s[2] != STB_LOCAL),
            len(self.symbols) + 1,
        )
        symtab = bytes(24) + b"".join(
            struct.pack("<IBBHQQ", names[n], (bind << 4) | kind, 0, shndx, value, size)
            for n, kind, bind, shndx, value, size in self.symbols
        )
        sections.append(
            Sec(".symtab", SHT_SYMTAB, symtab, link=symtab_index - 1, info=first_global, entsize=24)
        )
        assert len(sections) == symtab_index
        shstrtab, section_names = _strings([s.name for s in sections] + [".shstrtab"])
        sections.append(Sec(".shstrtab", SHT_STRTAB, shstrtab))
        out = bytearray(64)
        offsets = []
        for s in sections:
            out += bytes(-len(out) % 8)
            offsets.append(len(out))
            out += s.data
        out += bytes(-len(out) % 8)
        shoff = len(out)
        out += bytes(64)  # the null section
        for s, offset in zip(sections, offsets, strict=True):
            out += struct.pack(
                "<IIQQQQIIQQ",
                section_names[s.name],
                s.type,
                s.flags,
                0,
                offset,
                len(s.data),
                s.link,
                s.info,
                8,
                s.entsize,
            )
        ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
        header = ident + struct.pack(
            "<HHIQQQIHHHHHH", 1, EM_BPF, 1, 0, 0, shoff, 0, 64, 0, 0, 64, len(sections) + 1, 0
        )
        out[:64] = header
        struct.pack_into("<H", out, 0x3E, len(sections))  # .shstrtab, the last
        return bytes(out)


def _strings(names: list[str]) -> tuple[bytes, dict[str, int]]:
    table = bytearray(b"\0")
    offsets: dict[str, int] = {"": 0}
    for name in names:
        if name not in offsets:
            offsets[name] = len(table)
            table += name.encode("latin-1") + b"\0"
    return bytes(table), offsets


def _license(elf: Elf) -> None:
    elf.add(Sec("license", SHT_PROGBITS, b"GPL\0", SHF_ALLOC))


def _btf(types: bytes, strings: bytes) -> bytes:
    header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return header + types + strings


# -- the bombs --------------------------------------------------------------------------------


def libbpf_calls(scale: float = 1.0, misplaced: bool = False) -> bytes:
    """200 programs in one section whose 1M calls into `.text` are relocations (24 MB): the
    linker used to read every relocation of the section again for each function. `misplaced`:
    the last relocation is not on an instruction (the object is refused)."""
    programs, calls = 200, int(1_000_000 * scale) // 200 * 200
    elf = Elf()
    _license(elf)
    text = elf.add(Sec(".text", SHT_PROGBITS, MOV_R0_0 + EXIT, SHF_ALLOC | SHF_EXECINSTR))
    per = calls // programs
    body = CALL_PSEUDO * per + EXIT
    xdp = elf.add(Sec("xdp", SHT_PROGBITS, body * programs, SHF_ALLOC | SHF_EXECINSTR))
    sub = elf.symbol("sub", STT_FUNC, STB_LOCAL, text, 0, 16)
    for p in range(programs):
        elf.symbol(f"prog{p}", STT_FUNC, STB_GLOBAL, xdp, p * len(body), len(body))
    rels = [(p * len(body) + 8 * i, R_BPF_64_32, sub) for p in range(programs) for i in range(per)]
    if misplaced:
        rels[-1] = (rels[-1][0] + 3, R_BPF_64_32, sub)
    return elf.build({xdp: rels})


def libbpf_globals(scale: float = 1.0) -> bytes:
    """200 programs in one section with 1M ld_imm64s of a global variable (32 MB): the same
    shape as libbpf_calls, each relocation a map reference the spec keeps."""
    programs, refs = 200, int(1_000_000 * scale) // 200 * 200
    elf = Elf()
    _license(elf)
    data = elf.add(Sec(".data", SHT_PROGBITS, bytes(8), SHF_ALLOC | 1))
    per = refs // programs
    body = LD_IMM64 * per + EXIT
    xdp = elf.add(Sec("xdp", SHT_PROGBITS, body * programs, SHF_ALLOC | SHF_EXECINSTR))
    var = elf.symbol("counter", STT_OBJECT, STB_LOCAL, data, 0, 8)
    for p in range(programs):
        elf.symbol(f"prog{p}", STT_FUNC, STB_GLOBAL, xdp, p * len(body), len(body))
    rels = [(p * len(body) + 16 * i, R_BPF_64_64, var) for p in range(programs) for i in range(per)]
    return elf.build({xdp: rels})


def android_symbols(scale: float = 1.0) -> bytes:
    """An Android-format object of 4000 program sections and 262k symbols (6.6 MB): the
    symbols of each section used to be found by a scan of every symbol."""
    sections, symbols = int(4000 * scale) or 1, int(262_000 * scale)
    elf = Elf()
    _license(elf)
    indexes = [
        elf.add(Sec(f"skfilter/p{i}", SHT_PROGBITS, MOV_R0_0 + EXIT, SHF_ALLOC | SHF_EXECINSTR))
        for i in range(sections)
    ]
    for n in range(symbols - sections):  # labels inside the code, as compilers emit
        elf.symbol(f"l{n}", STT_NOTYPE, STB_LOCAL, indexes[n % sections], 8, 0)
    for i, index in enumerate(indexes):
        elf.symbol(f"p{i}", STT_FUNC, STB_GLOBAL, index, 0, 16)
    return elf.build()


def _btf_object(btf: bytes) -> bytes:
    """A libbpf-style object of one program, with `btf` as its .BTF."""
    elf = Elf()
    _license(elf)
    code = elf.add(Sec("socket", SHT_PROGBITS, MOV_R0_0 + EXIT, SHF_ALLOC | SHF_EXECINSTR))
    elf.add(Sec(".BTF", SHT_PROGBITS, btf))
    elf.symbol("prog", STT_FUNC, STB_GLOBAL, code, 0, 16)
    return elf.build()


def btf_types(scale: float = 1.0, dangling: bool = False) -> bytes:
    """BTF of 1M types (a typedef chain of distinct names, 20 MB): each type used to cost
    some 300 bytes. `dangling`: the last one refers to a type that does not exist (refused)."""
    count = int(1_000_000 * scale) or 1
    strings = bytearray(b"\0int\0")
    types = bytearray(struct.pack("<III", 1, BTF_KIND_INT << 24, 4) + struct.pack("<I", 32))
    for i in range(2, count + 1):
        target = count + 5 if dangling and i == count else i - 1
        types += struct.pack("<III", len(strings), BTF_KIND_TYPEDEF << 24, target)
        strings += b"t%d\0" % i
    return _btf_object(_btf(bytes(types), bytes(strings)))


def btf_members(scale: float = 1.0) -> bytes:
    """BTF of structs of 65535 members each, 2.6M members in all (31 MB): each member used to
    cost some 170 bytes."""
    members = int(2_600_000 * scale) or 1
    strings = b"\0int\0member\0"
    types = bytearray(struct.pack("<III", 1, BTF_KIND_INT << 24, 4) + struct.pack("<I", 32))
    item = struct.pack("<III", 5, 1, 0)
    while members:
        vlen = min(members, 0xFFFF)
        types += struct.pack("<III", 0, (BTF_KIND_STRUCT << 24) | vlen, 4) + item * vlen
        members -= vlen
    return _btf_object(_btf(bytes(types), strings))


BOMBS: dict[str, Callable[[float], bytes]] = {
    "libbpf_calls": libbpf_calls,
    "libbpf_globals": libbpf_globals,
    "android_symbols": android_symbols,
    "btf_types": btf_types,
    "btf_members": btf_members,
    # Invalid objects of the same shapes: refused on one line, as quickly.
    "libbpf_calls_misplaced": lambda scale: libbpf_calls(scale, misplaced=True),
    "btf_types_dangling": lambda scale: btf_types(scale, dangling=True),
}


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bomb", choices=BOMBS)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--write", help="write the object here instead of reading it")
    parser.add_argument(
        "--memory-mib", type=int, help="a hard limit (RLIMIT_AS) on what the read may add"
    )
    args = parser.parse_args()
    data = BOMBS[args.bomb](args.scale)
    if args.write:
        with open(args.write, "wb") as f:
            f.write(data)
        return
    from bpfloader.errors import LoaderError
    from bpfloader.obj.reader import read_object

    # The generator's own peak is behind us: the reader's is measured from here, by the
    # high-water mark, reset (Linux: writing 5 to clear_refs resets VmHWM).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    baseline = _status_kib("VmRSS")
    if args.memory_mib is not None:
        limit = (_status_kib("VmSize") + args.memory_mib * 1024) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    start = time.monotonic()
    error = None
    try:
        read_object(data, f"/etc/bpf/{args.bomb}.o")
    except LoaderError as e:
        error = str(e)
    seconds = time.monotonic() - start
    peak = _status_kib("VmHWM")
    result = {
        "bomb": args.bomb,
        "bytes": len(data),
        "seconds": round(seconds, 3),
        "peak_rss_kib": peak,
        "baseline_rss_kib": baseline,
        "error": error,
    }
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
