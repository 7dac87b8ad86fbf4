"""`__ksym` externs in the pure object layer: read from an object's BTF, its `.ksyms` rewritten
as the kernel takes it, resolved against a target BTF of our own with kernel modules (split
BTF built here: vmlinux and two modules), the instruction patches and the programs' fd_array,
/proc/kallsyms read; and a CI-sized run of the fuzz contract on mutated `__ksym` objects."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import pytest

from bpfloader.errors import ObjectFormatError
from bpfloader.obj import ksyms
from bpfloader.obj.btf import Kind, parse_btf
from bpfloader.obj.core import TargetBtf
from bpfloader.obj.elf import ElfObject
from bpfloader.obj.ksyms import KsymKind, KsymPatch, KsymValue
from bpfloader.obj.object_btf import read_object_btf
from bpfloader.obj.reader import read_object
from bpfloader.obj.relocate import relocate
from fuzz.contract import SAMPLE_KALLSYMS, check, findings_of_mutations
from tests.core_support import core_flags, generate_vmlinux_h

MODULES = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;   /* vmlinux */
extern int bpfloader_mod_b(int x) __ksym;              /* module b */
extern int bpfloader_mod_a(int x) __ksym;              /* module a */
extern int bpfloader_mod_a2(int x) __ksym;             /* module a again: one fd_array slot */
extern const int bpfloader_mod_var __ksym;             /* a variable of module b */
extern int bpfloader_nowhere(int x) __ksym __weak;
SEC("tc")
int modules(struct __sk_buff *skb)
{
    long v = (long)bpf_cast_to_kern_ctx(skb) + bpfloader_mod_b(1) + bpfloader_mod_a(2);
    v += bpfloader_mod_a2(3) + (long)&bpfloader_mod_var;
    if (bpfloader_nowhere)
        v += bpfloader_nowhere(4);
    return v;
}
char LICENSE[] SEC("license") = "GPL";
"""


class BtfWriter:
    """BTF bytes built type by type; with `base`, split BTF over it (ids and string offsets
    continue the base's)."""

    def __init__(self, first_id: int = 1, strings_base: int = 0):
        self.types = bytearray()
        self.strings = bytearray(b"\0") if not strings_base else bytearray()
        self.next_id = first_id
        self.strings_base = strings_base

    def name(self, text: str) -> int:
        offset = self.strings_base + len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def add(
        self, name: str, kind: Kind, size_or_type: int, extra: bytes = b"", vlen: int = 0
    ) -> int:
        name_off = self.name(name) if name else 0
        self.types += struct.pack("<III", name_off, kind << 24 | vlen, size_or_type) + extra
        self.next_id += 1
        return self.next_id - 1

    def int_type(self) -> int:
        return self.add("int", Kind.INT, 4, struct.pack("<I", 1 << 24 | 32))  # signed, 32 bits

    def proto(self, ret: int, params: list[int]) -> int:
        extra = b"".join(struct.pack("<II", self.name("x"), p) for p in params)
        return self.add("", Kind.FUNC_PROTO, ret, extra, len(params))

    def raw(self) -> bytes:
        header = struct.pack(
            "<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types), len(self.strings)
        )
        return header + bytes(self.types) + bytes(self.strings)


def target_with_modules() -> TargetBtf:
    base = BtfWriter()
    int_id = base.int_type()
    ptr = base.add("", Kind.PTR, 0)
    base.add("bpf_cast_to_kern_ctx", Kind.FUNC, base.proto(ptr, [ptr]), vlen=1)
    vmlinux = parse_btf(base.raw())
    modules = []
    for name, funcs in (
        ("bpfloader_a", ["bpfloader_mod_a", "bpfloader_mod_a2"]),
        ("bpfloader_b", ["bpfloader_mod_b"]),
    ):
        split = BtfWriter(vmlinux.end_id, len(vmlinux.strings))
        proto = split.proto(int_id, [int_id])
        for func in funcs:
            split.add(func, Kind.FUNC, proto, vlen=1)
        if name == "bpfloader_b":
            split.add("bpfloader_mod_var", Kind.VAR, int_id, struct.pack("<I", 1))
        modules.append((name, split.raw()))
    return TargetBtf("test", vmlinux, tuple(modules))


@pytest.fixture(scope="module")
def modules_obj(compile_bpf) -> Path:
    return compile_bpf(MODULES, "ksyms_modules.o", "-g")


@pytest.fixture(scope="module")
def vmlinux_dir(build_dir: Path) -> Path:
    directory = build_dir / "vmlinux_obj_ksyms"
    generate_vmlinux_h(directory)
    return directory


def test_externs_are_read_with_their_kind_weakness_and_type(modules_obj):
    spec = read_object(modules_obj.read_bytes(), str(modules_obj))
    assert spec.ksyms is not None
    found = [(k.name, k.kind, k.weak) for k in spec.ksyms.externs]
    assert found == [  # libbpf's order: by name
        ("bpf_cast_to_kern_ctx", KsymKind.FUNCTION, False),
        ("bpfloader_mod_a", KsymKind.FUNCTION, False),
        ("bpfloader_mod_a2", KsymKind.FUNCTION, False),
        ("bpfloader_mod_b", KsymKind.FUNCTION, False),
        ("bpfloader_mod_var", KsymKind.VARIABLE, False),
        ("bpfloader_nowhere", KsymKind.FUNCTION, True),
    ]
    (program,) = spec.programs
    calls = {r.name for r in program.extern_refs if r.call}
    assert calls == {k.name for k in spec.ksyms.externs if k.kind is KsymKind.FUNCTION}
    loads = [r.name for r in program.extern_refs if not r.call]
    assert loads == ["bpfloader_mod_var", "bpfloader_nowhere"]


def test_ksyms_are_rewritten_as_the_kernel_takes_them(modules_obj):
    """Every `.ksyms` entry a 4-byte global int VAR (kfuncs: `dummy_ksym`, appended), every
    kfunc a global FUNC whose parameters have names."""
    spec = read_object(modules_obj.read_bytes(), str(modules_obj))
    assert spec.btf is not None and spec.ksyms is not None
    fixed = parse_btf(spec.btf)
    assert fixed.end_id == spec.ksyms.btf.end_id + 1
    dummy = fixed.type(fixed.end_id - 1)
    assert (dummy.kind, dummy.name, dummy.linkage) == (Kind.VAR, "dummy_ksym", 1)
    assert fixed.type(dummy.size_or_type).kind is Kind.INT
    datasec = fixed.datasec(".ksyms")
    assert datasec is not None and datasec.size_or_type == 4 * len(datasec.sec_vars)
    for i, entry in enumerate(datasec.sec_vars):
        var = fixed.type(entry.type)
        assert (var.kind, var.linkage, entry.offset, entry.size) == (Kind.VAR, 1, 4 * i, 4)
        assert fixed.type(var.size_or_type).kind is Kind.INT
    for func in fixed.of_kind(Kind.FUNC):
        assert func.linkage in (0, 1), func.name  # static or global, never extern
        names = [n for n, _ in fixed.param_records(fixed.type(func.size_or_type))]
        assert all(names), func.name


def test_externs_resolve_in_vmlinux_then_in_modules(modules_obj):
    spec = read_object(modules_obj.read_bytes(), str(modules_obj))
    assert spec.ksyms is not None
    target = target_with_modules()
    values = ksyms.resolve(spec.ksyms, target, {})
    assert values["bpf_cast_to_kern_ctx"] == KsymValue(True, btf_id=4)
    assert values["bpfloader_mod_a"].module == values["bpfloader_mod_a2"].module == "bpfloader_a"
    assert values["bpfloader_mod_b"].module == values["bpfloader_mod_var"].module == "bpfloader_b"
    assert values["bpfloader_nowhere"] == KsymValue()
    # One fd_array slot per module, from index 1, in the externs' order.
    assert ksyms.fd_array_modules(spec.ksyms, values) == ("bpfloader_a", "bpfloader_b")
    patches = ksyms.patches(spec.ksyms, values, {"bpfloader_a": 40, "bpfloader_b": 41})
    assert patches["bpf_cast_to_kern_ctx"].call_off == 0
    assert patches["bpfloader_mod_a"].call_off == patches["bpfloader_mod_a2"].call_off == 1
    assert patches["bpfloader_mod_b"].call_off == 2
    var = patches["bpfloader_mod_var"]  # a module's variable: its BTF fd in the second half
    assert (var.load_src, var.load_lo, var.load_hi) == (3, values["bpfloader_mod_var"].btf_id, 41)
    assert patches["bpfloader_nowhere"] == KsymPatch(0, 0, 0)
    (program,) = spec.programs
    code = relocate(program, {}, None, patches)
    for ref in program.extern_refs:
        _, regs, off, imm = struct.unpack_from("<BBhi", code, ref.insn * 8)
        patch = patches[ref.name]
        if ref.call:
            assert (regs >> 4, off, imm) == (2, patch.call_off, patch.call_imm), ref
        else:
            hi = struct.unpack_from("<i", code, ref.insn * 8 + 12)[0]
            assert (regs >> 4, imm, hi) == (patch.load_src, patch.load_lo, patch.load_hi), ref


def test_a_strong_extern_the_target_lacks_is_an_error_naming_it(modules_obj):
    spec = read_object(modules_obj.read_bytes(), str(modules_obj))
    assert spec.ksyms is not None
    bare = TargetBtf("bare", target_with_modules().vmlinux)  # no modules
    with pytest.raises(ObjectFormatError) as caught:
        ksyms.resolve(spec.ksyms, bare, {})
    assert caught.value.reason == (
        "extern 'bpfloader_mod_a' (.ksyms): not in the BTF of bare and not __weak"
    )


def test_an_incompatible_prototype_is_an_error_unless_weak(compile_bpf):
    source = MODULES.replace(
        "void *bpf_cast_to_kern_ctx(void *obj)", "void *bpf_cast_to_kern_ctx(int a, int b)"
    ).replace("bpf_cast_to_kern_ctx(skb)", "bpf_cast_to_kern_ctx(1, 2)")
    spec = read_object(compile_bpf(source, "ksyms_proto.o", "-g").read_bytes(), "p.o")
    assert spec.ksyms is not None
    with pytest.raises(ObjectFormatError, match=r"extern .bpf_cast_to_kern_ctx. .*its prototype"):
        ksyms.resolve(spec.ksyms, target_with_modules(), {})
    weak = source.replace(
        "bpf_cast_to_kern_ctx(int a, int b) __ksym;",
        "bpf_cast_to_kern_ctx(int a, int b) __ksym __weak;",
    )
    spec = read_object(compile_bpf(weak, "ksyms_proto_weak.o", "-g").read_bytes(), "w.o")
    assert spec.ksyms is not None
    values = ksyms.resolve(spec.ksyms, target_with_modules(), {})
    assert values["bpf_cast_to_kern_ctx"] == KsymValue()


def test_kallsyms_addresses():
    text = (
        "ffffffff81000000 T _text\n"
        "ffffffff81000100 t helper\t[mod_x]\n"
        "ffffffff81000200 T other\n"
        "ffffffff81000000 T _text\n"  # the same address twice: not ambiguous
    )
    assert ksyms.kallsyms_addresses(text, {"_text", "helper", "absent"}) == {
        "_text": 0xFFFFFFFF81000000,
        "helper": 0xFFFFFFFF81000100,
    }
    with pytest.raises(ObjectFormatError, match=r"extern 'helper' .*two symbols of that name"):
        ksyms.kallsyms_addresses(text + "ffffffff81000300 t helper\n", {"helper"})


def test_a_hidden_address_is_an_error_for_a_strong_extern(compile_bpf, vmlinux_dir):
    obj = compile_bpf("ksyms/ksyms_loadable.c", None, *core_flags(vmlinux_dir))
    spec = read_object(obj.read_bytes(), str(obj))
    assert spec.ksyms is not None
    with pytest.raises(ObjectFormatError, match=r"extern ._text. .*kptr_restrict"):
        ksyms.resolve(spec.ksyms, None, {"_text": 0})
    values = ksyms.resolve(spec.ksyms, None, {"_text": 0xFFFFFFFF81000000})
    assert values["_text"].address == 0xFFFFFFFF81000000
    assert "bpf_cast_to_kern_ctx" not in values  # no target: typed externs left out


def test_externs_are_refused_where_the_reader_takes_none(modules_obj):
    """Android's format has no externs: its reader asks for the BTF without them."""
    with pytest.raises(ObjectFormatError) as caught:
        read_object_btf(ElfObject(modules_obj.read_bytes()))
    assert caught.value.reason == (
        "extern 'bpf_cast_to_kern_ctx' (.ksyms): externs are supported in libbpf-style objects only"
    )


SEED = 23
MUTATIONS = 300
PER_INPUT_SECONDS = 5


def test_mutated_ksym_objects_keep_the_contract(compile_bpf, modules_obj, vmlinux_dir):
    seeds = [modules_obj.read_bytes()]
    for source in ("ksyms/ksyms_loadable.c", "ksyms/ksyms_typed.c"):
        seeds.append(compile_bpf(source, None, *core_flags(vmlinux_dir)).read_bytes())
    for seed in seeds:
        assert check(seed) is None  # each seed resolves against its own BTF
    findings = findings_of_mutations(seeds, _btf_word, MUTATIONS, SEED, PER_INPUT_SECONDS)
    assert findings == {}, "inputs that only the catch-all turned into ObjectFormatError"
    assert SAMPLE_KALLSYMS  # the contract resolves typeless externs against it


def _btf_word(data: bytes, rng: random.Random) -> bytes:
    """A random 4-byte word of .BTF set to a value the `.ksyms` reader looks at."""
    section = ElfObject(data).section(".BTF")
    assert section is not None
    out = bytearray(data)
    at = section.offset + rng.randrange(0, max(section.size - 4, 1)) // 4 * 4
    value = rng.choice((0, 1, 2, 3, 12, 13, 14, 15, 0x0C000001, 0x0E000000, 0xFFFF, 0xFFFFFFFF))
    out[at : at + 4] = value.to_bytes(4, "little")
    return bytes(out)
