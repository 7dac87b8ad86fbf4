"""The ELF layer (obj/elf.py) against pyelftools: the loader reads the tables itself, so every
object the tests and examples build is read both ways and must come out the same. And what a
load does not need is not read: debug sections and their relocations stay untouched."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from conftest import BPF_SOURCES, EXAMPLES
from elftools.elf.elffile import ELFFile
from elftools.elf.relocation import RelocationSection
from elftools.elf.sections import SymbolTableSection
from libbpf_support import LIBBPF_FLAGS

from bpfloader.obj.elf import ElfObject, section_names
from bpfloader.obj.reader import read_elf

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
        assert section.type == (kind if isinstance(kind, str) else f"{kind:#x}")
        assert (section.flags, section.size) == (other["sh_flags"], other["sh_size"])
        assert (section.link, section.info) == (other["sh_link"], other["sh_info"])
        assert section.data == (b"" if other["sh_type"] == "SHT_NOBITS" else other.data())
    symtab = next(s for s in raw if isinstance(s, SymbolTableSection))
    assert [(s.name, s.value, s.size, s.type, s.bind, s.shndx) for s in ours.symbols] == [
        (
            s.name,
            s["st_value"],
            s["st_size"],
            s["st_info"]["type"],
            s["st_info"]["bind"],
            s["st_shndx"],
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
