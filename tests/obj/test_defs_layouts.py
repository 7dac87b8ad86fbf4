"""Older (shorter) and newer (longer) def layouts, built from C with structs of those sizes.

tests/bpf/pure_layouts.c declares a map struct of MAP_DEF_SIZE bytes and a program struct of
PROG_DEF_SIZE bytes, without bpf_helpers.h, and says so in size_of_bpf_map_def /
size_of_bpf_prog_def (unless -DNO_SIZE_OF). Fields the layout lacks must take their defaults.
"""

from __future__ import annotations

import pytest

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.kver import kver
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.reader import read_object
from bpfloader.obj.spec import Gates, MapReference, MapSpec, ObjectSpec

INF = 0xFFFFFFFF
LOADER_MAX = 0x10000

FIRST_MAP_GATES = Gates(
    min_kver=kver(4, 9, 0), max_kver=kver(7, 0, 0), min_loader=2, max_loader=50, ignore_on=0
)


def first_map(size: int) -> MapSpec:
    """What first_map of pure_layouts.c must read as, in a layout of `size` bytes."""
    uid = 116116 if size >= 120 else 2020  # offset 116 in the 120 layout, offset 20 before
    return MapSpec(
        name="first_map",
        type=1,  # HASH
        key_size=4,
        value_size=8,
        max_entries=11,
        flags=1,  # BPF_F_NO_PREALLOC
        owner=Ownership(uid=uid, gid=2424, mode=0o600 if size < 32 else 0o640),
        gates=(
            Gates()
            if size < 48
            else Gates(
                min_kver=kver(4, 9, 0),
                max_kver=kver(7, 0, 0),
                min_loader=2,
                max_loader=50,
                ignore_on=0x40 if size >= 120 else 0,
            )
        ),
        pin_subdir="first_dir" if size >= 116 else "",
        shared=size >= 116,
        selinux_context="first_ctx" if size >= 116 else "",
    )


def second_map(size: int) -> MapSpec:
    return MapSpec(
        name="second_map",
        type=2,  # ARRAY
        key_size=4,
        value_size=4,
        max_entries=3,
        flags=0,
        owner=Ownership(0, 0, 0o600 if size < 32 else 0o400),
    )


def read_layout(compile_bpf, *flags: str) -> ObjectSpec:
    path = compile_bpf("pure_layouts.c", None, *flags)
    return read_object(path.read_bytes(), str(path))


def refs_and_kinds(spec: ObjectSpec) -> list[tuple[str, str, int, tuple[MapReference, ...]]]:
    return [(p.section, p.name, int(p.type), p.map_refs) for p in spec.programs]


EXPECTED_PROGRAMS = [
    (
        "tracepoint/sched/sched_switch",
        "with_def",
        5,
        (MapReference(4, "second_map"), MapReference(12, "first_map")),
    ),
    ("xdp/other", "other", 6, ()),
]


def test_defaults_sanity():
    """The defaults the expectations below lean on, spelled out once."""
    assert Gates() == Gates(min_kver=0, max_kver=INF, min_loader=0, max_loader=LOADER_MAX)
    assert FIRST_MAP_GATES.max_kver == 0x07000000


@pytest.mark.parametrize("size", [28, 32, 48, 116, 120])
def test_map_def_layout(compile_bpf, size):
    spec = read_layout(compile_bpf, f"-DMAP_DEF_SIZE={size}", "-DPROG_DEF_SIZE=92")
    assert spec.maps == (first_map(size), second_map(size))
    # Relocations find the defs at multiples of the declared size.
    assert refs_and_kinds(spec) == EXPECTED_PROGRAMS


def test_28_byte_map_def_defaults(compile_bpf):
    """Spelled out: the oldest map layout has no mode and no gates."""
    (first, _) = read_layout(compile_bpf, "-DMAP_DEF_SIZE=28", "-DPROG_DEF_SIZE=92").maps
    assert first.owner == Ownership(uid=2020, gid=2424, mode=0o600)  # uid from offset 20
    assert first.gates.max_kver == INF
    assert first.gates.min_kver == 0
    assert (first.gates.min_loader, first.gates.max_loader) == (0, 0x10000)
    assert (first.shared, first.pin_subdir, first.selinux_context) == (False, "", "")


def test_116_byte_map_def_keeps_uid_at_offset_20(compile_bpf):
    (first, _) = read_layout(compile_bpf, "-DMAP_DEF_SIZE=116", "-DPROG_DEF_SIZE=92").maps
    assert first.owner == Ownership(uid=2020, gid=2424, mode=0o640)
    assert first.gates == FIRST_MAP_GATES


def test_120_byte_map_def_takes_uid_from_offset_116(compile_bpf):
    (first, _) = read_layout(compile_bpf, "-DMAP_DEF_SIZE=120", "-DPROG_DEF_SIZE=92").maps
    assert first.owner.uid == 116116
    assert first.gates.ignore_on == 0x40


def test_120_byte_map_def_refuses_a_nonzero_legacy_uid_slot(compile_bpf):
    path = compile_bpf("pure_layouts.c", None, "-DMAP_DEF_SIZE=120", "-DLEGACY_UID=5")
    with pytest.raises(ObjectFormatError) as caught:
        read_object(path.read_bytes(), str(path))
    e = caught.value
    assert e.section == "maps"
    assert str(e) == (
        f"{path}: maps: map 'first_map': legacy uid slot (offset 20) must be 0, found 5"
    )


def test_longer_future_map_def_ignores_the_extra_bytes(compile_bpf):
    spec = read_layout(compile_bpf, "-DMAP_DEF_SIZE=124", "-DPROG_DEF_SIZE=96")
    assert spec.maps == (first_map(124), second_map(124))
    assert spec.maps[0] == first_map(120)
    assert refs_and_kinds(spec) == EXPECTED_PROGRAMS
    assert spec.programs[0].gates.ignore_on == 0x10


def with_def_expected(size: int) -> tuple[Ownership, Gates, bool, str, str]:
    return (
        Ownership(uid=3030, gid=3131, mode=0o440),
        Gates(
            min_kver=kver(4, 14, 0),
            max_kver=kver(6, 50, 0),
            min_loader=4 if size >= 28 else 0,
            max_loader=40 if size >= 28 else LOADER_MAX,
            ignore_on=0x10 if size >= 92 else 0,
        ),
        True,
        "prog_ctx" if size >= 92 else "",
        "prog_dir" if size >= 92 else "",
    )


@pytest.mark.parametrize("size", [20, 28, 92])
def test_prog_def_layout(compile_bpf, size):
    spec = read_layout(compile_bpf, "-DMAP_DEF_SIZE=120", f"-DPROG_DEF_SIZE={size}")
    with_def, other = spec.programs
    got = (
        with_def.owner,
        with_def.gates,
        with_def.optional,
        with_def.selinux_context,
        with_def.pin_subdir,
    )
    assert got == with_def_expected(size)
    assert (other.owner, other.gates, other.optional) == (Ownership(0, 0, 0o440), Gates(), False)
    assert refs_and_kinds(spec) == EXPECTED_PROGRAMS
    assert spec.maps == (first_map(120), second_map(120))


def test_no_size_of_sections_means_32_and_20(compile_bpf):
    spec = read_layout(compile_bpf, "-DNO_SIZE_OF", "-DMAP_DEF_SIZE=32", "-DPROG_DEF_SIZE=20")
    assert spec.maps == (first_map(32), second_map(32))
    assert spec.programs[0].gates == with_def_expected(20)[1]
    assert refs_and_kinds(spec) == EXPECTED_PROGRAMS
    # An object without the sections has the default object-wide loader range too.
    assert (spec.min_loader, spec.max_loader) == (0, LOADER_MAX)


def test_no_size_of_section_with_longer_map_defs_is_not_guessed(compile_bpf):
    """48-byte defs without size_of_bpf_map_def are read as 32-byte ones, and refused."""
    path = compile_bpf("pure_layouts.c", None, "-DNO_SIZE_OF", "-DMAP_DEF_SIZE=48")
    with pytest.raises(ObjectFormatError) as caught:
        read_object(path.read_bytes(), str(path))
    assert str(caught.value) == (
        f"{path}: maps: map symbol 'second_map' at offset 48 is not on a def"
    )


def test_no_size_of_section_with_longer_prog_defs_is_not_guessed(compile_bpf):
    path = compile_bpf("pure_layouts.c", None, "-DNO_SIZE_OF", "-DPROG_DEF_SIZE=92")
    with pytest.raises(ObjectFormatError) as caught:
        read_object(path.read_bytes(), str(path))
    assert str(caught.value) == (
        f"{path}: progs: program def 'other_def' at offset 92 is out of place"
    )


@pytest.mark.parametrize("c_type", ["unsigned int", "unsigned long"])
def test_object_loader_version_sections_4_or_8_bytes(compile_bpf, c_type):
    spec = read_layout(compile_bpf, f"-DOBJ_VER_TYPE={c_type}")
    assert (spec.min_loader, spec.max_loader) == (7, 70)


def test_object_loader_version_section_of_another_size_is_refused(compile_bpf):
    path = compile_bpf("pure_layouts.c", None, "-DOBJ_VER_TYPE=unsigned short")
    with pytest.raises(ObjectFormatError) as caught:
        read_object(path.read_bytes(), str(path))
    assert str(caught.value) == (
        f"{path}: bpfloader_min_ver: expected a 4-byte unsigned value, found 2 bytes"
    )
