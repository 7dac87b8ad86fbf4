"""What the reader refuses, or now survives, once its tables are indexed and its output bounded
(issue 16 item 6): each a small object built with tests/obj/bombs.py's ELF writer, each refusal
one line naming the file and the section."""

from __future__ import annotations

import dataclasses
import struct

import pytest

from bpfloader.errors import ObjectFormatError
from bpfloader.obj import linker
from bpfloader.obj.btf import BtfError, parse_btf, parse_btf_ext
from bpfloader.obj.elf import ElfObject
from bpfloader.obj.reader import read_object
from bpfloader.obj.relocate import relocate
from bpfloader.obj.spec import MapReference
from tests.libbpf_support import libbpf_object
from tests.obj.bombs import (
    CALL_PSEUDO,
    EXIT,
    LD_IMM64,
    MOV_R0_0,
    R_BPF_64_32,
    R_BPF_64_64,
    SHF_ALLOC,
    SHF_EXECINSTR,
    SHT_PROGBITS,
    STB_GLOBAL,
    STB_LOCAL,
    STT_FUNC,
    STT_OBJECT,
    Elf,
    Sec,
)

PATH = "/etc/bpf/limits.o"
CODE = SHF_ALLOC | SHF_EXECINSTR


def refused(data: bytes) -> ObjectFormatError:
    with pytest.raises(ObjectFormatError) as caught:
        read_object(data, PATH)
    text = str(caught.value)
    assert text.startswith(PATH + ": ") and "\n" not in text and "malformed ELF" not in text
    return caught.value


def globals_object(imm: int) -> bytes:
    """One program reading a global variable at byte `imm` of an 8-byte .data."""
    elf = Elf()
    elf.add(Sec("license", SHT_PROGBITS, b"GPL\0", SHF_ALLOC))
    data = elf.add(Sec(".data", SHT_PROGBITS, bytes(8), SHF_ALLOC | 1))
    ld = bytearray(LD_IMM64)
    struct.pack_into("<i", ld, 4, imm)
    xdp = elf.add(Sec("xdp", SHT_PROGBITS, bytes(ld) + EXIT, CODE))
    var = elf.symbol("counter", STT_OBJECT, STB_LOCAL, data, 0, 8)
    elf.symbol("prog", STT_FUNC, STB_GLOBAL, xdp, 0, 24)
    return elf.build({xdp: [(0, R_BPF_64_64, var)]})


def test_a_global_variable_outside_its_section_is_refused():
    assert read_object(globals_object(4), PATH).programs[0].map_refs[0].offset == 4
    e = refused(globals_object(8))
    assert e.section == "xdp" and "refers to byte 8 of '.data', outside its 8 bytes" in e.reason
    assert "byte -1 of '.data'" in refused(globals_object(-1)).reason


def test_relocate_refuses_an_offset_that_does_not_fit_on_one_line():
    program = read_object(globals_object(0), PATH).programs[0]
    far = dataclasses.replace(program, map_refs=(MapReference(0, "data", 1 << 40),))
    with pytest.raises(ObjectFormatError) as caught:
        relocate(far, {"data": 3})
    assert str(caught.value) == (
        "xdp: instruction 0: offset 1099511627776 in map 'data' does not fit a ld_imm64"
    )
    assert isinstance(caught.value.__cause__, struct.error)
    stray = dataclasses.replace(program, map_refs=(MapReference(2, "data", 0),))
    with pytest.raises(ObjectFormatError, match="instruction 2, which is not a ld_imm64"):
        relocate(stray, {"data": 3})


def test_overlapping_functions_are_refused():
    elf = Elf()
    elf.add(Sec("license", SHT_PROGBITS, b"GPL\0", SHF_ALLOC))
    xdp = elf.add(Sec("xdp", SHT_PROGBITS, MOV_R0_0 * 3 + EXIT, CODE))
    elf.symbol("whole", STT_FUNC, STB_GLOBAL, xdp, 0, 32)
    elf.symbol("tail", STT_FUNC, STB_GLOBAL, xdp, 16, 16)
    e = refused(elf.build())
    assert e.section == "xdp" and e.reason == "functions 'whole' and 'tail' overlap"


def chain(depth: int) -> bytes:
    """A program calling a chain of `depth` subprograms in .text, each calling the next."""
    elf = Elf()
    elf.add(Sec("license", SHT_PROGBITS, b"GPL\0", SHF_ALLOC))
    text = elf.add(Sec(".text", SHT_PROGBITS, (CALL_PSEUDO + EXIT) * depth, CODE))
    xdp = elf.add(Sec("xdp", SHT_PROGBITS, CALL_PSEUDO + EXIT, CODE))
    subs = [elf.symbol(f"f{i}", STT_FUNC, STB_LOCAL, text, 16 * i, 16) for i in range(depth)]
    elf.symbol("prog", STT_FUNC, STB_GLOBAL, xdp, 0, 16)
    calls = [(16 * i, R_BPF_64_32, subs[i + 1]) for i in range(depth - 1)]
    return elf.build({text: calls, xdp: [(0, R_BPF_64_32, subs[0])]})


def test_a_deep_call_chain_is_linked_without_recursion():
    (program,) = read_object(chain(5000), PATH).programs
    assert program.insn_count == 2 * 5001


def test_a_program_linked_past_the_kernels_limit_is_refused(monkeypatch):
    monkeypatch.setattr(linker, "MAX_PROGRAM_INSNS", 100)
    e = refused(chain(60))
    assert e.section == ".text"
    assert "program 'prog' is longer than the kernel's limit of 100 instructions" in e.reason


def test_programs_that_add_up_past_the_object_limit_are_refused(monkeypatch):
    monkeypatch.setattr(linker, "MAX_LINKED_INSNS", 50)
    elf = Elf()
    elf.add(Sec("license", SHT_PROGBITS, b"GPL\0", SHF_ALLOC))
    text = elf.add(Sec(".text", SHT_PROGBITS, MOV_R0_0 * 19 + EXIT, CODE))
    xdp = elf.add(Sec("xdp", SHT_PROGBITS, (CALL_PSEUDO + EXIT) * 3, CODE))
    sub = elf.symbol("big", STT_FUNC, STB_LOCAL, text, 0, 160)
    for p in range(3):
        elf.symbol(f"p{p}", STT_FUNC, STB_GLOBAL, xdp, 16 * p, 16)
    e = refused(elf.build({xdp: [(16 * p, R_BPF_64_32, sub) for p in range(3)]}))
    assert e.section == "xdp"
    assert e.reason == "its programs come to more than 50 instructions once linked (with 'p2')"


def test_line_records_out_of_instruction_order_are_refused(compile_bpf):
    # The linker finds a function's records by bisection: they must be in instruction order.
    obj = libbpf_object(compile_bpf, "libbpf_subprogs.c")
    elf = ElfObject(obj.read_bytes())
    btf_section, ext_section = elf.section(".BTF"), elf.section(".BTF.ext")
    assert btf_section is not None and ext_section is not None
    btf = parse_btf(btf_section.data)
    ext = bytearray(ext_section.data)
    hdr_len, line_off = struct.unpack_from("<I", ext, 4)[0], struct.unpack_from("<I", ext, 16)[0]
    at = hdr_len + line_off
    rec_size = struct.unpack_from("<I", ext, at)[0]
    at += 4
    name_off, count = struct.unpack_from("<II", ext, at)
    while count < 2:  # the first section with two records
        at += 8 + count * rec_size
        name_off, count = struct.unpack_from("<II", ext, at)
    first, second = at + 8, at + 8 + rec_size
    a, b = struct.unpack_from("<I", ext, first)[0], struct.unpack_from("<I", ext, second)[0]
    struct.pack_into("<I", ext, first, b)
    struct.pack_into("<I", ext, second, a)
    with pytest.raises(BtfError) as caught:
        parse_btf_ext(bytes(ext), btf)
    section = btf.name_at(name_off)
    assert str(caught.value) == (
        f"the line records of section '{section}' are not in the order of its instructions"
    )
