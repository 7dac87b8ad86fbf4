"""The ELF layer (obj/elf.py) against pyelftools: the loader reads the tables itself, so every
object the tests and examples build is read both ways and must come out the same. And what a
load does not need is not read: debug sections and their relocations stay untouched."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_ST_INFO_BIND, ENUM_ST_INFO_TYPE, ENUM_ST_SHNDX
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection

from bpfloader.obj.elf import (
    SHN_ABS,
    SHN_UNDEF,
    ElfObject,
    SectionType,
    SymbolBind,
    SymbolType,
    section_names,
    section_type_name,
)
from bpfloader.obj.reader import read_elf
from tests.conftest import BPF_SOURCES, EXAMPLES
from tests.libbpf_support import LIBBPF_FLAGS

# Every source, with and without -g (BTF and DWARF sections); two need a kernel version.
SOURCES = sorted(p.name for p in (*EXAMPLES.glob("*.c"), *BPF_SOURCES.glob("*.c")))
DEFINES = {"k_kver.c": ("-DRUN_KVER=0x60000",), "k_variants.c": ("-DSPLIT_KVER=0x60000",)}


def _built(compile_bpf, source: str, debug: bool) -> Path:
    flags = (*(LIBBPF_FLAGS if source.startswith("libbpf_") else ()), *DEFINES.get(source, ()))
    name = f"{Path(source).stem}{'_g' if debug else ''}.o"
    return compile_bpf(source, name, *flags, btf=debug)


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "g"])
@pytest.mark.parametrize("source", SOURCES)
def test_tables_match_pyelftools(compile_bpf, source, debug):
    data = _built(compile_bpf, source, debug).read_bytes()
    ours = ElfObject(data)
    theirs = ELFFile(io.BytesIO(data))
    raw = list(theirs.iter_sections())
    assert [s.name for s in ours.sections] == [s.name for s in raw]
    for section, other in zip(ours.sections, raw, strict=True):
        kind = other["sh_type"]  # pyelftools: a name, or the number of a type it does not name
        assert section_type_name(section.type) == (kind if isinstance(kind, str) else f"{kind:#x}")
        assert (section.flags, section.size) == (other["sh_flags"], other["sh_size"])
        assert (section.link, section.info) == (other["sh_link"], other["sh_info"])
        assert section.data == (b"" if other["sh_type"] == "SHT_NOBITS" else other.data())
    symtab = next(s for s in raw if isinstance(s, SymbolTableSection))
    # pyelftools names the values it knows: back to their numbers, which ours compare equal to.
    assert [(s.name, s.value, s.size, s.type, s.bind, s.shndx) for s in ours.symbols] == [
        (
            s.name,
            s["st_value"],
            s["st_size"],
            ENUM_ST_INFO_TYPE.get(s["st_info"]["type"], s["st_info"]["type"]),
            ENUM_ST_INFO_BIND.get(s["st_info"]["bind"], s["st_info"]["bind"]),
            ENUM_ST_SHNDX.get(s["st_shndx"], s["st_shndx"]),
        )
        for s in symtab.iter_symbols()
    ]
    for table in raw:
        if isinstance(table, RelocationSection):
            target = table["sh_info"]
            expected = [
                (r["r_offset"], r["r_info_type"], r["r_info_sym"])
                for t in raw
                if isinstance(t, RelocationSection) and t["sh_info"] == target
                for r in t.iter_relocations()
            ]
            found = [
                (r.offset, r.type, ours.symbols.index(r.symbol)) for r in ours.relocations(target)
            ]
            assert found == expected, table.name
    assert section_names(data) == {s.name for s in raw[1:]}


@pytest.mark.parametrize(
    "source", ["myschedtp.c", "tc_counter.c", "libbpf_subprogs.c", "libbpf_globals.c"]
)
def test_a_load_reads_no_debug_section(compile_bpf, source):
    path = _built(compile_bpf, source, debug=True)
    elf = ElfObject(path.read_bytes())
    spec = read_elf(elf, str(path))
    assert spec.programs and spec.btf  # BTF is used: -g objects carry it
    debug = [s for s in elf.sections if s.name.startswith((".debug", ".rel.debug"))]
    assert len(debug) >= 5
    # Section.data is cut from the file when first asked for, then kept: never asked, never cut.
    touched = [s.name for s in debug if "data" in vars(s)]
    assert touched == []
    assert "data" in vars(elf.section(".BTF"))


def test_values_no_member_names_keep_their_number(compile_bpf):
    """What compilers do not emit: a type or bind no member names is its plain number, and a
    special section index names no section while any other is taken as an index."""
    data = bytearray(_built(compile_bpf, "myschedtp.c", debug=False).read_bytes())
    elf = ElfObject(bytes(data))
    license = elf.section("license")
    symtab = next(s for s in elf.sections if s.type == SectionType.SYMTAB)
    assert license is not None and symtab.size >= 4 * 24
    sh_type = struct.unpack_from("<Q", data, 0x28)[0] + 64 * license.index + 4
    struct.pack_into("<I", data, sh_type, 0x60000001)  # in SHT_LOOS..SHT_HIOS
    first = symtab.offset + 24  # symbol 0 is the null symbol, in SHN_UNDEF
    data[first + 4] = 0x37  # st_info: bind 3, type 7
    struct.pack_into("<H", data, first + 24 + 6, SHN_ABS)  # st_shndx
    struct.pack_into("<H", data, first + 48 + 6, 0xFF05)  # a processor's own index
    elf = ElfObject(bytes(data))

    kind = elf.sections[license.index].type
    assert kind == 0x60000001 and not isinstance(kind, SectionType)
    assert section_type_name(kind) == "0x60000001"
    assert section_type_name(SectionType.NOBITS) == "SHT_NOBITS"
    null, odd, absolute, reserved = elf.symbols[:4]
    assert (odd.type, odd.bind) == (7, 3)
    assert not isinstance(odd.type, SymbolType) and not isinstance(odd.bind, SymbolBind)
    assert (null.shndx, null.section, absolute.shndx, absolute.section) == (0, None, SHN_ABS, None)
    assert (reserved.shndx, reserved.section) == (0xFF05, 0xFF05)
    assert elf.section_at(0xFF05) is None
    assert elf.symbols_in(SHN_UNDEF) == elf.symbols_in(SHN_ABS) == []
