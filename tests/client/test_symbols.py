"""The uprobe symbol reader (client/symbols.py), pure: offsets against pyelftools' reading of the
same binaries (gcc's, the system's, and ones written here in each ELF class and byte order),
libbpf's rules for which symbol is the function, one-line refusals of malformed files, bounds
on time and memory for a large table, and a CI-sized run of its fuzz contract
(fuzz/contract.py check_symbols). The uprobes attached by symbol that fire are in
test_attach_tracing.py."""

from __future__ import annotations

import io
import random
import struct
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from bpfloader.client import symbols
from bpfloader.client.symbols import MAX_NAME_MATCHES, find_function, function_offset
from bpfloader.errors import AttachError
from fuzz.contract import check_symbols, memory_budget, mutate, time_limit
from tests.binary_support import (
    ET_REL,
    FILLER_NAME,
    GCC_BINARIES,
    SHN_UNDEF,
    STB_WEAK,
    STT_GNU_IFUNC,
    STT_OBJECT,
    TEXT_ADDRESS,
    TEXT_SIZE,
    Sym,
    build_binaries,
    elf_binary,
    text_offset,
)

SYSTEM_BINARIES = ["/usr/bin/bash", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
SYSTEM_SAMPLE = 400  # names checked in each system binary (every k-th, sorted)


@pytest.fixture(scope="module")
def binaries(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_binaries(tmp_path_factory.mktemp("binaries"))


def lookup(data: bytes, name: str) -> int:
    return find_function(lambda offset, count: data[offset : offset + count], len(data), name)


def expected_offsets(data: bytes) -> dict[str, int | None]:
    """Every function name of a binary -> its file offset, read with pyelftools and libbpf's
    rules (None: ambiguous): the first of .symtab and .dynsym that defines it, a global over a
    weak symbol, the segment's p_offset + address - p_vaddr."""
    elf = ELFFile(io.BytesIO(data))
    loads = [s.header for s in elf.iter_segments() if s.header.p_type == "PT_LOAD"]
    found: dict[str, int | None] = {}
    for table_name in (".symtab", ".dynsym"):
        table = elf.get_section_by_name(table_name)
        if table is None:
            continue
        candidates: dict[str, list[tuple[int, bool]]] = {}
        for sym in table.iter_symbols():
            kind, shndx = sym["st_info"]["type"], sym["st_shndx"]
            if sym.name and kind in ("STT_FUNC", "STT_GNU_IFUNC") and shndx != "SHN_UNDEF":
                weak = sym["st_info"]["bind"] == "STB_WEAK"
                candidates.setdefault(sym.name, []).append((sym["st_value"], weak))
        for name, defined in candidates.items():
            if name in found:
                continue
            strong = {address for address, weak in defined if not weak}
            if len(strong) > 1:
                found[name] = None
                continue
            address = strong.pop() if strong else defined[0][0]
            (load,) = [h for h in loads if h.p_vaddr <= address < h.p_vaddr + h.p_filesz]
            found[name] = address - load.p_vaddr + load.p_offset
    return found


def check_against_pyelftools(data: bytes, names: list[str] | None = None) -> int:
    expected = expected_offsets(data)
    for name in names if names is not None else sorted(expected):
        offset = expected[name]
        if offset is None:
            with pytest.raises(AttachError, match=f"more than one function '{name}'"):
                lookup(data, name)
        else:
            assert lookup(data, name) == offset, name
    return len(expected)


@pytest.mark.parametrize("name", GCC_BINARIES)
def test_offsets_of_gccs_binaries_are_pyelftools(binaries: dict[str, Path], name: str) -> None:
    data = binaries[name].read_bytes()
    assert check_against_pyelftools(data) >= 2
    probed = "probe_lib" if name == "library.so" else "bpfloader_probed"
    assert function_offset(str(binaries[name]), probed) == expected_offsets(data)[probed]


@pytest.mark.parametrize("path", SYSTEM_BINARIES)
def test_offsets_of_system_binaries_are_pyelftools(path: str) -> None:
    data = Path(path).read_bytes()
    names = sorted(expected_offsets(data))
    sample = names[:: max(1, len(names) // SYSTEM_SAMPLE)]
    assert len(sample) >= SYSTEM_SAMPLE
    check_against_pyelftools(data, sample)


@pytest.mark.parametrize("bits", [32, 64])
@pytest.mark.parametrize("order", ["<", ">"])
def test_every_elf_class_and_byte_order(bits: int, order: str) -> None:
    data = elf_binary(
        [Sym("f", TEXT_ADDRESS + 0x10), Sym("g", TEXT_ADDRESS + 0x20)],
        [Sym("h", TEXT_ADDRESS + 0x30)],
        bits=bits,
        order=order,
    )
    start = text_offset(data)
    assert [lookup(data, n) for n in "fgh"] == [start + 0x10, start + 0x20, start + 0x30]
    check_against_pyelftools(data)


@pytest.mark.parametrize("chunk", [16, 40, 1000])
def test_names_and_symbols_across_chunk_boundaries(
    binaries: dict[str, Path], chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read CHUNK bytes at a time, a name may span two chunks (the overlap keeps it whole) and
    a chunk of symbols always holds whole symbols, even where one is larger than CHUNK."""
    monkeypatch.setattr(symbols, "CHUNK", chunk)
    long_name = "a_name_longer_than_a_chunk_of_the_string_table"
    functions = [
        Sym("x", TEXT_ADDRESS),
        Sym(long_name, TEXT_ADDRESS + 8),
        Sym("y", TEXT_ADDRESS + 12),
    ]
    for bits in (32, 64):
        data = elf_binary(functions, bits=bits)
        assert check_against_pyelftools(data) == 3
    assert check_against_pyelftools(binaries["library.so"].read_bytes()) >= 2


A, B = TEXT_ADDRESS + 0x10, TEXT_ADDRESS + 0x20


@pytest.mark.parametrize(
    "symtab, dynsym, at",
    [
        ([Sym("f", A, bind=STB_WEAK), Sym("f", B)], None, B),  # a global over a weak one
        ([Sym("f", A), Sym("f", B, bind=STB_WEAK)], None, A),
        ([Sym("f", A, bind=STB_WEAK), Sym("f", B, bind=STB_WEAK)], None, A),  # the first weak
        ([Sym("f", A), Sym("f", A)], None, A),  # aliases of one address
        ([Sym("f", A)], [Sym("f", B)], A),  # .symtab before .dynsym
        ([Sym("f", B, shndx=SHN_UNDEF), Sym("g", A)], [Sym("f", B)], B),  # undefined: next table
        ([Sym("f", B, type=STT_OBJECT)], [Sym("f", A)], A),  # not a function
        ([Sym("f", A, type=STT_GNU_IFUNC)], None, A),  # an ifunc's resolver is a function
    ],
)
def test_which_symbol_is_the_function(symtab: list[Sym], dynsym: list[Sym] | None, at: int) -> None:
    data = elf_binary(symtab, dynsym)
    assert lookup(data, "f") == text_offset(data) + at - TEXT_ADDRESS


def test_two_global_functions_of_one_name_are_ambiguous() -> None:
    data = elf_binary([Sym("f", A), Sym("f", B)])
    with pytest.raises(AttachError) as e:
        lookup(data, "f")
    assert str(e.value) == (
        "SHT_SYMTAB: more than one function 'f' (at 0x401010 and 0x401020): attach by offset "
        "instead"
    )


def test_a_name_is_found_where_it_is_the_tail_of_another() -> None:
    strings = b"\0my_probe\0"
    data = elf_binary([Sym("my_probe", A), Sym("probe", B, name_offset=4)], strings=strings)
    assert lookup(data, "probe") == text_offset(data) + 0x20
    assert lookup(data, "my_probe") == text_offset(data) + 0x10
    only_long = elf_binary([Sym("my_probe", A)])
    with pytest.raises(AttachError, match="no function 'probe' in its symbol tables"):
        lookup(only_long, "probe")
    nameless = elf_binary([Sym("f", A, name_offset=0)], strings=b"f\0")  # st_name 0: no name
    with pytest.raises(AttachError, match="no function 'f'"):
        lookup(nameless, "f")


def patched(data: bytes, offset: int, fmt: str, *values: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, *values)
    return bytes(out)


def section_header(data: bytes, index: int) -> int:
    """Where section header `index` of a 64-bit little-endian binary is."""
    return int(struct.unpack_from("<Q", data, 0x28)[0]) + 64 * index


GOOD = elf_binary([Sym("f", A)])
MALFORMED: list[tuple[str, Callable[[], bytes], str]] = [
    ("text", lambda: b"int main() {}\n", "not an ELF file"),
    ("empty", lambda: b"", "not an ELF file"),
    ("class", lambda: patched(GOOD, 4, "B", 3), "not an ELF file of a known class"),
    ("header", lambda: GOOD[:40], "truncated: the ELF header ends at byte 64, but the file has 40"),
    ("type", lambda: elf_binary([Sym("f", A)], kind=ET_REL), "(ELF type 1)"),
    (
        "section headers",
        lambda: patched(GOOD, 0x28, "<Q", len(GOOD)),
        "truncated: the section header table ends at byte",
    ),
    ("shentsize", lambda: patched(GOOD, 0x3A, "<H", 40), "section headers of 40 bytes"),
    ("extended", lambda: patched(GOOD, 0x3C, "<H", 0), "extended section numbering"),
    (
        "entsize",
        lambda: patched(GOOD, section_header(GOOD, 2) + 56, "<Q", 16),
        "SHT_SYMTAB: table of 48 bytes with entries of 16 bytes; expected whole entries of 24",
    ),
    (
        "table",
        lambda: patched(GOOD, section_header(GOOD, 2) + 32, "<Q", 24 << 30),
        "truncated: the SHT_SYMTAB table ends at byte",
    ),
    (
        "link",
        lambda: patched(GOOD, section_header(GOOD, 2) + 40, "<I", 1),
        "SHT_SYMTAB: linked section 1 is not a string table",
    ),
    (
        "strings",
        lambda: patched(GOOD, section_header(GOOD, 3) + 32, "<Q", 1 << 20),
        "truncated: the string table of SHT_SYMTAB ends at byte",
    ),
    (
        "segment",
        lambda: elf_binary([Sym("f", TEXT_ADDRESS + TEXT_SIZE)]),
        "function 'f' is in no loadable segment",
    ),
    (
        "segment size",
        lambda: patched(GOOD, 64 + 32, "<Q", 1 << 30),  # p_filesz
        "truncated: the segment of 'f' ends at byte",
    ),
]


@pytest.mark.parametrize("make, says", [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_files_are_refused_on_one_line(make: Callable[[], bytes], says: str) -> None:
    with pytest.raises(AttachError) as e:
        lookup(make(), "f")
    assert says in str(e.value) and "\n" not in str(e.value)


def test_a_file_is_named_in_its_errors(tmp_path: Path) -> None:
    obj = tmp_path / "x.o"
    obj.write_bytes(elf_binary([Sym("f", A)], kind=ET_REL))
    with pytest.raises(AttachError) as e:
        function_offset(str(obj), "f")
    assert str(e.value) == f"{obj}: not an executable or shared object (ELF type 1)"
    with pytest.raises(AttachError) as e:
        function_offset(str(tmp_path / "missing"), "f")
    assert str(e.value) == f"{tmp_path}/missing: cannot read it: No such file or directory"
    for name in ("", "a\0b"):
        with pytest.raises(AttachError, match="is not a function's name"):
            function_offset(str(obj), name)


def test_a_large_table_is_read_in_bounded_time_and_memory() -> None:
    """A million symbols (24 MiB): the name is looked up in a few tenths of a second (0.2 s
    measured; 0.7 s when every symbol has the name, each then decoded), in a few MiB beyond the
    file's bytes (under 1 MiB measured: the tables are read CHUNK at a time)."""
    data = elf_binary([Sym("f", A)], filler=1 << 20)
    for name, seconds in (("f", 2.0), (FILLER_NAME, 5.0)):
        started = time.monotonic()
        with memory_budget(8):
            try:
                lookup(data, name)
            except AttachError as e:
                assert str(e) == f"no function '{FILLER_NAME}' in its symbol tables"
        assert time.monotonic() - started < seconds, name


def test_a_name_in_too_many_places_is_refused() -> None:
    strings = b"\0" + b"f\0" * (MAX_NAME_MATCHES + 1)
    with pytest.raises(AttachError, match=f"in more than {MAX_NAME_MATCHES} places"):
        lookup(elf_binary([Sym("f", A, name_offset=1)], strings=strings), "f")


MUTATIONS = 1500
SEED = 20261207
PER_INPUT_SECONDS = 2
PER_INPUT_MIB = 64


def test_mutated_binaries_keep_the_symbol_readers_contract(binaries: dict[str, Path]) -> None:
    seeds = [binaries[name].read_bytes() for name in ("pie", "no_pie", "stripped", "library.so")]
    seeds += [
        elf_binary([Sym("f", A), Sym("f", B, bind=STB_WEAK)], [Sym("g", B)], bits=bits, order=o)
        for bits in (32, 64)
        for o in "<>"
    ]
    rng = random.Random(SEED)
    for _ in range(MUTATIONS):
        data = mutate(rng.choice(seeds), rng)
        with time_limit(PER_INPUT_SECONDS), memory_budget(PER_INPUT_MIB):
            check_symbols(data)  # raises ContractViolation on any other outcome


def test_the_seeds_keep_the_contract(binaries: dict[str, Path]) -> None:
    for binary in binaries.values():
        check_symbols(binary.read_bytes())
