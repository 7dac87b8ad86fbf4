"""struct_ops maps in the pure object layer: read from `.struct_ops` / `.struct_ops.link` (the
variable's bytes, members and the program each function pointer holds), laid out against a
kernel BTF of our own (a C file that declares the kernel's struct and its
`bpf_struct_ops_NAME`, compiled with -g: members matched by name, as libbpf does), and every
way an object and a kernel can disagree, each on one line naming the map and the member."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfloader.errors import LoaderError, ObjectFormatError
from bpfloader.obj import struct_ops
from bpfloader.obj.bpftypes import BPF_F_LINK, MapType, ProgType
from bpfloader.obj.btf import Btf, Kind
from bpfloader.obj.elf import ElfObject
from bpfloader.obj.object_btf import read_object_btf
from bpfloader.obj.reader import read_object
from bpfloader.obj.spec import ObjectSpec

# The object: its own view of `struct my_ops` (what a vmlinux.h of some kernel says).
OBJECT = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
char _license[] SEC("license") = "GPL";
struct my_ops {
    int (*first)(void *ctx);
    int (*second)(void *ctx);
#ifdef LOCAL_EXTRA
    int (*extra)(void *ctx);
#endif
#ifdef SHORT_FLAGS
    short flags;
#else
    int flags;
#endif
    char name[8];
};
SEC("struct_ops/one") int one(void *ctx) { return 1; }
SEC("struct_ops/two") int two(void *ctx) { return 2; }
#ifdef NOT_STRUCT_OPS
SEC("tc") int plain(void *ctx) { return 0; }
#define SECOND plain
#else
#define SECOND two
#endif
SEC(SECTION) struct my_ops ops = {
    .first = (void *)one,
    .second = (void *)SECOND,
#ifdef LOCAL_EXTRA
    .extra = (void *)EXTRA_PROGRAM,
#endif
    .flags = FLAGS,
    .name = "mine",
};
#ifdef SECOND_MAP
SEC(SECTION) struct my_ops other = { .first = (void *)SECOND_MAP, .name = "other" };
#endif
#ifdef UNUSED_PROGRAM
SEC("struct_ops/three") int three(void *ctx) { return 3; }
#endif
"""

# The kernel: its `struct my_ops` in another order, with a member the object lacks, and the
# value type the kernel's struct_ops maps take.
KERNEL = """
struct my_ops {
    char name[8];
    int (*second)(void *ctx);
    long reserved;
    int (*first)(void *ctx);
    int flags;
};
struct bpf_struct_ops_my_ops {
    int refcnt;
    int state;
    long pad[7];
    struct my_ops data;
};
#ifdef NO_VALUE_TYPE
struct my_ops kernel_ops;
#else
struct bpf_struct_ops_my_ops kernel_value;
#endif
"""

BASE = 64  # where `data` is in bpf_struct_ops_my_ops (4 + 4 + 7 * 8)


def build(compile_bpf, *flags: str, section: str = ".struct_ops.link", value: int = 7) -> Path:
    defines = (f'-DSECTION="{section}"', f"-DFLAGS={value}", *flags)
    return compile_bpf(OBJECT, f"ops_{abs(hash(defines))}.o", *defines)


def read(path: Path) -> ObjectSpec:
    return read_object(path.read_bytes(), "/etc/bpf/ops.o")


def kernel(compile_bpf, *flags: str) -> Btf:
    """The BTF of KERNEL's types, as a kernel's."""
    path = compile_bpf(KERNEL, f"kernel_{abs(hash(flags))}.o", *flags)
    found = read_object_btf(ElfObject(path.read_bytes()))
    assert found is not None
    return found.btf


def refuse(path: Path) -> str:
    with pytest.raises(ObjectFormatError) as caught:
        read(path)
    text = str(caught.value)
    assert "\n" not in text and text.startswith("/etc/bpf/ops.o: "), text
    return text


def resolve_error(spec: ObjectSpec, btf: Btf) -> str:
    (ops,) = [m for m in spec.maps if m.struct_ops is not None]
    assert ops.struct_ops is not None
    with pytest.raises(LoaderError) as caught:
        struct_ops.resolve(ops.name, ops.struct_ops, btf)
    text = str(caught.value)
    assert "\n" not in text, text
    return text


@pytest.mark.parametrize("section", [".struct_ops", ".struct_ops.link"])
def test_a_variable_of_the_section_is_a_map_of_its_struct(compile_bpf, section):
    spec = read(build(compile_bpf, section=section))
    (ops,) = [m for m in spec.maps if m.struct_ops is not None]
    assert (ops.name, ops.type, ops.key_size, ops.max_entries) == ("ops", MapType.STRUCT_OPS, 4, 1)
    assert ops.flags == (BPF_F_LINK if section.endswith(".link") else 0)
    assert ops.struct_ops is not None
    assert ops.struct_ops.type_name == "my_ops"
    assert ops.struct_ops.link is section.endswith(".link")
    assert ops.struct_ops.programs == ("one", "two")
    members = {m.name: m for m in ops.struct_ops.members}
    assert [(m.offset, m.size, m.kind) for m in members.values()] == [
        (0, 8, Kind.PTR),
        (8, 8, Kind.PTR),
        (16, 4, Kind.INT),
        (20, 8, Kind.ARRAY),
    ]
    assert ops.struct_ops.data[16:20] == (7).to_bytes(4, "little")
    assert ops.struct_ops.data[20:28] == b"mine\0\0\0\0"
    programs = {p.name: p for p in spec.programs}
    assert programs["one"].type == ProgType.STRUCT_OPS
    assert programs["one"].pin_section == "struct_ops/one"


def test_the_value_is_laid_out_by_member_name_as_the_kernel_declares_it(compile_bpf):
    spec = read(build(compile_bpf))
    (ops,) = [m for m in spec.maps if m.struct_ops is not None]
    assert ops.struct_ops is not None
    btf = kernel(compile_bpf)
    resolved = struct_ops.resolve("ops", ops.struct_ops, btf)
    kernel_struct = btf.named(Kind.STRUCT, "my_ops")
    value_type = btf.named(Kind.STRUCT, "bpf_struct_ops_my_ops")
    assert kernel_struct is not None and value_type is not None
    assert (resolved.type_id, resolved.value_type_id) == (kernel_struct.id, value_type.id)
    assert resolved.value_size == value_type.size_or_type
    # name at 0, second at 8, reserved at 16, first at 24, flags at 32 (of `data`)
    assert resolved.slots == ((BASE + 24, "one"), (BASE + 8, "two"))
    assert resolved.member_index == {"one": 3, "two": 1}
    value = resolved.value({"one": 11, "two": 12})
    assert value[BASE : BASE + 8] == b"mine\0\0\0\0"
    assert value[BASE + 8 : BASE + 16] == (12).to_bytes(8, "little")
    assert value[BASE + 24 : BASE + 32] == (11).to_bytes(8, "little")
    assert value[BASE + 32 : BASE + 36] == (7).to_bytes(4, "little")
    assert not any(value[:BASE]) and not any(value[BASE + 16 : BASE + 24])
    assert struct_ops.program_attach({"ops": resolved}, {"ops": ops}) == {
        "one": (kernel_struct.id, 3),
        "two": (kernel_struct.id, 1),
    }


def test_a_member_the_kernel_lacks_is_allowed_only_while_unset(compile_bpf):
    """libbpf's rule: a member this kernel's struct lacks may be there if zero; a program set
    there is then left out (not loaded), not an error."""
    spec = read(build(compile_bpf, "-DLOCAL_EXTRA", "-DEXTRA_PROGRAM=0"))
    (ops,) = [m for m in spec.maps if m.struct_ops is not None]
    assert ops.struct_ops is not None
    assert struct_ops.resolve("ops", ops.struct_ops, kernel(compile_bpf)).dropped == {}

    spec = read(build(compile_bpf, "-DLOCAL_EXTRA", "-DEXTRA_PROGRAM=two"))
    (ops,) = [m for m in spec.maps if m.struct_ops is not None]
    assert ops.struct_ops is not None
    resolved = struct_ops.resolve("ops", ops.struct_ops, kernel(compile_bpf))
    assert resolved.member_index == {"one": 3, "two": 1}  # `two` also fills `second`
    assert resolved.dropped == {"two": "extra"}


@pytest.mark.parametrize(
    ("flags", "kernel_flags", "expected"),
    [
        (
            ("-DSHORT_FLAGS",),
            (),
            "struct_ops map 'ops': member 'flags' has 2 bytes here, 4 in the kernel",
        ),
        (
            (),
            ("-DNO_VALUE_TYPE",),
            "struct_ops map 'ops': the kernel has no bpf_struct_ops_my_ops: struct my_ops "
            "cannot be implemented in BPF on this kernel",
        ),
    ],
)
def test_a_struct_the_kernel_declares_otherwise_is_refused_on_one_line(
    compile_bpf, flags, kernel_flags, expected
):
    spec = read(build(compile_bpf, *flags))
    assert (
        resolve_error(spec, kernel(compile_bpf, *kernel_flags)) == f".struct_ops.link: {expected}"
    )


def test_a_set_member_the_kernel_lacks_is_refused(compile_bpf):
    spec = read(build(compile_bpf, "-DLOCAL_EXTRA", "-DEXTRA_PROGRAM=0"))
    (ops,) = [m for m in spec.maps if m.struct_ops is not None]
    assert ops.struct_ops is not None
    # The data says `extra` is set (a kernel whose struct lacks it): refused.
    extra = next(m for m in ops.struct_ops.members if m.name == "extra")
    data = bytearray(ops.struct_ops.data)
    data[extra.offset] = 1
    changed = type(ops.struct_ops)(
        ops.struct_ops.type_name, bytes(data), ops.struct_ops.members, ops.struct_ops.link
    )
    with pytest.raises(LoaderError) as caught:
        struct_ops.resolve("ops", changed, kernel(compile_bpf))
    assert str(caught.value) == (
        ".struct_ops.link: struct_ops map 'ops': member 'extra' is not in the kernel's struct "
        "my_ops, and is set"
    )


def test_a_kernel_without_the_struct_refuses_the_map(compile_bpf):
    spec = read(build(compile_bpf))
    without = read_object_btf(ElfObject(compile_bpf("int x;\n", "no_types.o").read_bytes()))
    assert without is not None
    assert resolve_error(spec, without.btf) == (
        ".struct_ops.link: struct_ops map 'ops': the kernel has no struct my_ops in its BTF "
        "(struct_ops types of kernel modules are not supported)"
    )


def test_a_program_in_two_members_is_refused(compile_bpf):
    spec = read(build(compile_bpf, "-DSECOND_MAP=two"))  # `two`: second of ops, first of other
    btf = kernel(compile_bpf)
    resolved = {
        m.name: struct_ops.resolve(m.name, m.struct_ops, btf)
        for m in spec.maps
        if m.struct_ops is not None
    }
    specs = {m.name: m for m in spec.maps}
    with pytest.raises(LoaderError) as caught:
        struct_ops.program_attach(resolved, specs)
    assert str(caught.value) == (
        ".struct_ops.link: program 'two' fills different members in struct_ops maps 'ops' and "
        "'other': a program is verified for one member"
    )


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ("-DUNUSED_PROGRAM",),
            "struct_ops/three: struct_ops program 'three' is in no struct_ops map (a variable "
            "of .struct_ops or .struct_ops.link whose member points at it)",
        ),
        (
            ("-DNOT_STRUCT_OPS",),
            "tc: program 'plain' is in a struct_ops map but is not a struct_ops program "
            '(SEC("struct_ops/..."))',
        ),
    ],
)
def test_an_object_whose_programs_and_maps_disagree_is_refused(compile_bpf, flags, expected):
    assert refuse(build(compile_bpf, *flags)) == f"/etc/bpf/ops.o: {expected}"


def test_struct_ops_maps_need_the_objects_btf(compile_bpf):
    path = compile_bpf(OBJECT, "ops_nobtf.o", '-DSECTION=".struct_ops"', "-DFLAGS=0", btf=False)
    assert refuse(path) == (
        "/etc/bpf/ops.o: .struct_ops: struct_ops maps need the object's BTF (compile with -g)"
    )
