"""Malformed objects: each is an ObjectFormatError whose text is one line naming the file (and the
section, where there is one) and the reason; never any other exception.

Bad objects are compiled from tests/bpf/pure_errors.c and pure_layouts.c with flags, or made by
patching the bytes of a good compiled object.
"""

from __future__ import annotations

import random
import re
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.reader import declares_critical, read_object

PATH = "/etc/bpf/bad.o"
SYM_SIZE = 24  # Elf64_Sym
REL_SIZE = 16  # Elf64_Rel


def refuse(data: bytes, path: str = PATH) -> ObjectFormatError:
    """read_object must raise exactly ObjectFormatError, printable as one line."""
    with pytest.raises(ObjectFormatError) as caught:
        read_object(data, path)
    e = caught.value
    text = str(e)
    assert "\n" not in text and "\r" not in text, text
    assert text.isprintable(), text
    assert e.file == path
    assert text.startswith(f"{path}: ")
    assert e.reason
    return e


def refuse_file(path: Path) -> ObjectFormatError:
    return refuse(path.read_bytes(), str(path))


class Patchable:
    """A compiled object's bytes plus where things are in the file, to patch them."""

    def __init__(self, path: Path):
        self.path = path
        self.data = bytearray(path.read_bytes())
        with path.open("rb") as f:
            elf = ELFFile(f)
            self.shoff = elf.header["e_shoff"]
            self.shentsize = elf.header["e_shentsize"]
            self.sections = {
                s.name: (i, s["sh_offset"], s["sh_size"]) for i, s in enumerate(elf.iter_sections())
            }
            symtab = elf.get_section_by_name(".symtab")
            self.symbols = {
                s.name: (i, symtab["sh_offset"] + i * SYM_SIZE)
                for i, s in enumerate(symtab.iter_symbols())
                if s.name
            }
            self.strtab_offset = elf.get_section_by_name(".strtab")["sh_offset"]

    def section_offset(self, name: str) -> int:
        return self.sections[name][1]

    def section_header(self, name: str) -> int:
        return self.shoff + self.sections[name][0] * self.shentsize

    def put(self, offset: int, value: bytes) -> Patchable:
        self.data[offset : offset + len(value)] = value
        return self

    def refuse(self) -> ObjectFormatError:
        return refuse(bytes(self.data), str(self.path))


@pytest.fixture
def good(compile_bpf) -> Patchable:
    path = compile_bpf("pure_errors.c")
    spec = read_object(path.read_bytes(), str(path))  # the unpatched object is valid
    assert [(r.insn, r.map_name) for r in spec.programs[0].map_refs] == [
        (4, "good_map"),
        (12, "other_map"),
    ]
    return Patchable(path)


# -- not objects at all -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"", b"\x7fEL", b"hello, world\n", b"#!/bin/sh\nexit 0\n", b"\0" * 64]
)
def test_not_an_elf_file(data):
    e = refuse(data)
    assert str(e) == f"{PATH}: not an ELF file"


def test_text_file_named_dot_o(tmp_path):
    path = tmp_path / "notes.o"
    path.write_text("these are not the objects you are looking for\n")
    assert str(refuse_file(path)) == f"{path}: not an ELF file"


def test_truncated_elf(compile_bpf):
    data = compile_bpf("pure_every_field.c").read_bytes()
    cuts = [4, 5, 16, 52, 63, 64, 65, 200, len(data) // 3, len(data) // 2, len(data) - 64]
    cuts += [len(data) - 1]
    for cut in cuts:
        e = refuse(data[:cut])
        assert e.reason != "", cut


def test_non_bpf_elf_executable():
    e = refuse(Path("/bin/true").read_bytes(), "/etc/bpf/true.o")
    assert str(e) == "/etc/bpf/true.o: not a BPF object (ELF machine EM_X86_64)"


def test_non_bpf_elf_relocatable(compile_bpf):
    path = compile_bpf("pure_errors.c", "x86.o", "-target", "x86_64-linux-gnu")
    with path.open("rb") as f:
        assert ELFFile(f).header["e_machine"] == "EM_X86_64"  # precondition
    assert str(refuse_file(path)) == f"{path}: not a BPF object (ELF machine EM_X86_64)"


def test_big_endian_bpf_object(compile_bpf):
    path = compile_bpf("pure_errors.c", "eb.o", "-target", "bpfeb")
    e = refuse_file(path)
    assert "big-endian" in e.reason


def test_32_bit_class(good):
    good.put(4, b"\x01")  # EI_CLASS = ELFCLASS32
    good.refuse()


# -- object-wide sections -----------------------------------------------------------------------


def test_missing_license(compile_bpf):
    path = compile_bpf("pure_errors.c", None, "-DNO_LICENSE")
    e = refuse_file(path)
    assert e.section is None
    assert str(e) == f'{path}: no "license" section (declare one with LICENSE("GPL"))'


def test_missing_license_of_a_critical_object_is_still_seen_as_critical(compile_bpf):
    data = compile_bpf("pure_errors.c", None, "-DNO_LICENSE", "-DMAKE_CRITICAL").read_bytes()
    refuse(data)
    assert declares_critical(data) is True
    assert (
        declares_critical(compile_bpf("pure_errors.c", None, "-DNO_LICENSE").read_bytes()) is False
    )
    assert declares_critical(data[:100]) is False
    assert declares_critical(b"text") is False


def test_license_not_nul_terminated(good):
    offset, size = good.section_offset("license"), good.sections["license"][2]
    assert bytes(good.data[offset : offset + size]) == b"GPL\0"
    e = good.put(offset + 3, b"X").refuse()
    assert e.section == "license"
    assert str(e) == f"{good.path}: license: license must be a non-empty NUL-terminated string"


def test_empty_license(good):
    e = good.put(good.section_offset("license"), b"\0").refuse()
    assert e.section == "license"
    assert "non-empty" in e.reason


def test_license_not_ascii(good):
    e = good.put(good.section_offset("license") + 1, b"\xff").refuse()
    assert e.section == "license"
    assert "not ASCII" in e.reason


# -- code sections ------------------------------------------------------------------------------


def test_unknown_section_prefix(compile_bpf):
    path = compile_bpf("pure_errors.c", None, "-DUNKNOWN_PREFIX")
    e = refuse_file(path)
    assert e.section == "bogus/thing"
    assert str(e).startswith(f"{path}: bogus/thing: unknown program type prefix (known: kprobe/, ")


def test_section_name_with_control_characters_stays_on_one_line(compile_bpf):
    # Without BTF, whose strings name the section too: the first "bogus/thing" is its name.
    patched = Patchable(compile_bpf("pure_errors.c", None, "-DUNKNOWN_PREFIX", btf=False))
    at = bytes(patched.data).index(b"bogus/thing\0")
    patched.put(at + len("bogus/"), b"\n")  # the section is now named "bogus/\nhing"
    e = patched.refuse()
    assert e.section == "bogus/\nhing"
    assert "bogus/" in str(e) and "hing" in str(e)


def test_code_size_not_a_multiple_of_8(good):
    header = good.section_header("tracepoint/sched/sched_switch")
    good.put(header + 32, struct.pack("<Q", 20))  # sh_size
    e = good.refuse()
    assert e.section == "tracepoint/sched/sched_switch"
    assert "code size 20 is not a multiple of 8" in e.reason


# -- maps and defs ------------------------------------------------------------------------------


def test_maps_section_not_a_multiple_of_the_def_size(compile_bpf):
    path = compile_bpf("pure_layouts.c", None, "-DMAP_DEF_SIZE=48", "-DSIZE_OF_MAP_DEF=64")
    e = refuse_file(path)
    assert str(e) == f"{path}: maps: 96 bytes is not a whole number of 64-byte map defs"


@pytest.mark.parametrize("size", [0, 7, 24, 30, 8192])
def test_impossible_map_def_size(compile_bpf, size):
    path = compile_bpf("pure_layouts.c", None, f"-DSIZE_OF_MAP_DEF={size}")
    e = refuse_file(path)
    assert e.section == "size_of_bpf_map_def"
    assert re.fullmatch(rf"map def size {size} is impossible \(.*\)", e.reason), e.reason


@pytest.mark.parametrize("size", [0, 16, 22])
def test_impossible_prog_def_size(compile_bpf, size):
    path = compile_bpf("pure_layouts.c", None, f"-DSIZE_OF_PROG_DEF={size}")
    e = refuse_file(path)
    assert e.section == "size_of_bpf_prog_def"
    assert re.fullmatch(rf"program def size {size} is impossible \(.*\)", e.reason), e.reason


def test_map_symbol_between_defs(good):
    _, at = good.symbols["other_map"]
    good.put(at + 8, struct.pack("<Q", 4))  # st_value
    e = good.refuse()
    assert str(e) == f"{good.path}: maps: map symbol 'other_map' at offset 4 is not on a def"


def test_two_map_symbols_on_one_def(good):
    _, good_at = good.symbols["good_map"]
    _, other_at = good.symbols["other_map"]
    good.put(other_at + 8, bytes(good.data[good_at + 8 : good_at + 16]))
    e = good.refuse()
    assert e.section == "maps"
    assert re.fullmatch(r"maps '(good|other)_map' and '(good|other)_map' share one def", e.reason)


def test_map_mode_beyond_0777(good):
    _, at = good.symbols["good_map"]
    offset = good.section_offset("maps") + struct.unpack_from("<Q", good.data, at + 8)[0]
    good.put(offset + 28, struct.pack("<I", 0o4755))
    e = good.refuse()
    assert e.section == "maps"
    assert "mode 0o4755 has bits beyond 0777" in e.reason
    assert "good_map" in e.reason


def test_map_selinux_context_not_ascii(good):
    _, at = good.symbols["other_map"]
    offset = good.section_offset("maps") + struct.unpack_from("<Q", good.data, at + 8)[0]
    good.put(offset + 48, b"\xc3\xa9t\xc3\xa9\0")
    e = good.refuse()
    assert e.section == "maps"
    assert "selinux_context is not ASCII" in e.reason


# -- relocations --------------------------------------------------------------------------------


def test_relocation_to_an_unknown_symbol(compile_bpf):
    path = compile_bpf("pure_errors.c", None, "-DEXTERN_MAP")
    e = refuse_file(path)
    assert e.section == "tracepoint/sched/sched_switch"
    assert re.fullmatch(r"instruction \d+ refers to unknown symbol 'missing_map'", e.reason)


def relocation(good: Patchable, index: int) -> int:
    """File offset of relocation `index` of the program's .rel section."""
    return good.section_offset(".reltracepoint/sched/sched_switch") + index * REL_SIZE


def test_relocation_on_a_non_ld_imm64_instruction(good):
    code = good.section_offset("tracepoint/sched/sched_switch")
    assert good.data[code + 4 * 8] == 0x18  # insn 4: the ld_imm64 of good_map
    good.put(code + 4 * 8, b"\xb7")  # now: mov64 r1, imm
    e = good.refuse()
    assert str(e) == (
        f"{good.path}: tracepoint/sched/sched_switch: relocation to 'good_map' at instruction 4 "
        "is not on a ld_imm64 instruction (opcode 0xb7)"
    )


def test_relocation_not_on_an_instruction_boundary(good):
    good.put(relocation(good, 0), struct.pack("<Q", 4 * 8 + 3))  # r_offset
    e = good.refuse()
    assert e.section == "tracepoint/sched/sched_switch"
    assert "relocation at offset 35 is not on an instruction" in e.reason


def test_relocation_past_the_code(good):
    good.put(relocation(good, 1), struct.pack("<Q", 8 * 10_000))
    e = good.refuse()
    assert "relocation at offset 80000 is not on an instruction" in e.reason


def test_relocation_to_something_that_is_not_a_map(good):
    index, _ = good.symbols["_license"]
    good.put(relocation(good, 0) + 8, struct.pack("<Q", (index << 32) | 1))  # r_info
    e = good.refuse()
    assert e.section == "tracepoint/sched/sched_switch"
    assert e.reason == (
        "instruction 4 refers to '_license' in section 'license'; "
        'only maps in the "maps" section can be referenced'
    )


def test_unsupported_relocation_type(good):
    index, _ = good.symbols["good_map"]
    good.put(relocation(good, 0) + 8, struct.pack("<Q", (index << 32) | 3))
    e = good.refuse()
    assert e.reason == "instruction 4: unsupported relocation type 3"


@pytest.mark.parametrize("storage", ["", "static"])
def test_bpf_to_bpf_call_into_text(compile_bpf, storage):
    path = compile_bpf("pure_errors.c", None, f"-DTEXT_CALL={storage}")
    e = refuse_file(path)
    assert e.section == "tracepoint/sched/sched_switch"
    assert "bpf-to-bpf calls are not supported" in e.reason
    callee = "helper_in_text" if storage == "" else ".text"
    assert re.match(rf"instruction \d+ calls '{re.escape(callee)}'", e.reason), e.reason


# -- file names in messages ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/etc/bpf/evil\nname.o", "/etc/bpf/evil\\nname.o"),
        ("/etc/bpf/tab\there.o", "/etc/bpf/tab\\there.o"),
        # A name that is not UTF-8 reaches Python as surrogate escapes: printing it raw would fail.
        (b"/etc/bpf/latin\xe9.o".decode("utf-8", "surrogateescape"), "/etc/bpf/latin\\udce9.o"),
    ],
)
def test_file_name_with_control_characters_stays_on_one_line(compile_bpf, path, shown):
    for data in (b"not elf", compile_bpf("pure_errors.c", None, "-DNO_LICENSE").read_bytes()):
        with pytest.raises(ObjectFormatError) as caught:
            read_object(data, path)
        text = str(caught.value)
        assert text.startswith(f"{shown}: ")
        assert text.isprintable()
        text.encode("utf-8")  # printable on any UTF-8 console


# -- corrupt bytes anywhere ---------------------------------------------------------------------


def test_random_corruption_is_only_ever_an_object_format_error(good):
    """Flip bytes in the headers, section headers and symbols: parse or ObjectFormatError."""
    original = bytes(good.data)
    hot = list(range(64))
    hot += range(good.shoff, len(original))
    sym_off = good.section_offset(".symtab")
    hot += range(sym_off, sym_off + good.sections[".symtab"][2])
    rng = random.Random(20240611)
    refused = 0
    for _ in range(400):
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            data[rng.choice(hot)] = rng.randrange(256)
        try:
            read_object(bytes(data), PATH)
        except ObjectFormatError as e:
            refused += 1
            assert str(e).isprintable() and str(e).startswith(f"{PATH}: ")
    assert refused > 100  # the corruption did reach the reader
