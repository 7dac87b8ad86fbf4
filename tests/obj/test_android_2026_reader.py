"""Android's 2026 format in the pure reader: an object built with our header read into specs
(pin paths, owners, gates, types from the defs), and each malformed def field, made by
patching the bytes of a built object, refused on one line naming the section."""

from __future__ import annotations

import struct

import pytest

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.bpftypes import AttachType, MapType, ProgType
from bpfloader.obj.elf import ElfObject
from bpfloader.obj.reader import read_object
from bpfloader.obj.spec import ObjectStyle
from fuzz.contract import check


@pytest.fixture(scope="module")
def fields(compile_bpf) -> bytes:
    return compile_bpf("android2026/a26_fields.c").read_bytes()


def test_the_defs_are_laid_over_the_spec(fields):
    spec = read_object(fields, "/etc/bpf/a26_fields.o")
    assert spec.style is ObjectStyle.ANDROID_2026 and spec.license == "GPL"
    counts = spec.map_named("counts")
    assert counts is not None
    assert (counts.pin_path, str(counts.owner)) == ("tethering/map_fields_counts", "0:1073 0660")
    rules = spec.map_named("shared_rules")
    assert rules is not None and rules.pin_path == "net_shared/map_fields_shared_rules"
    assert (rules.gates.min_api_level, rules.gates.max_api_level) == (3300, 0x10000)
    redirect = spec.map_named("redirect")
    assert redirect is not None and redirect.type == MapType.DEVMAP
    first = [p for p in spec.programs if p.section.startswith("skfilter/first$")]
    assert [p.section for p in first] == ["skfilter/first$4_9", "skfilter/first$5_4"]
    assert {p.pin_path for p in first} == {"tethering/prog_fields_skfilter_first"}
    assert {p.kernel_name for p in first} == {"skfilter_first"}
    sock = next(p for p in spec.programs if p.name == "cgroupsock_sock_create_4_14")
    assert (sock.type, sock.expected_attach_type) == (
        ProgType.CGROUP_SOCK,
        AttachType.CGROUP_INET_SOCK_CREATE,
    )
    broken = next(p for p in spec.programs if p.name == "schedact_broken_4_9")
    assert broken.optional and broken.type == ProgType.SCHED_ACT
    assert check(fields) is None  # the fuzz contract holds on the seed


def _patched(data: bytes, section: str, offset: int, value: bytes) -> bytes:
    found = ElfObject(data).section(section)
    assert found is not None
    out = bytearray(data)
    at = found.offset + offset
    out[at : at + len(value)] = value
    return bytes(out)


MAP_PIN = 48 + 70  # offsets in a map def: create_location at 48, pin_location at 118
MAP_NAME_IDX = 188
PROG_TYPE = 0


@pytest.mark.parametrize(
    ("section", "offset", "value", "reason"),
    [
        (
            ".android_maps",
            MAP_NAME_IDX,
            struct.pack("<I", 5),
            "map def 'counts_def': name_idx 5 does not point past 'map_OBJ_' in pin_location "
            "'/sys/fs/bpf/tethering/map_fields_counts'",
        ),
        (
            ".android_maps",
            MAP_PIN,
            b"x" * 70,
            "map def 'counts_def': pin_location is not NUL-terminated within 70 bytes",
        ),
        (
            ".android_maps",
            48,
            b"/tmp/x\0",
            "map def 'counts_def': create_location '/tmp/x' is not under /sys/fs/bpf/",
        ),
        (
            ".android_maps",
            28,
            struct.pack("<I", 0o4755),
            "map def 'counts_def': mode 0o4755 has bits beyond 0777",
        ),
        (
            ".android_progs",
            PROG_TYPE,
            struct.pack("<I", 999),
            "program def 'skfilter_first_4_9_def': unknown program type 999",
        ),
    ],
)
def test_a_malformed_def_is_one_line(fields, section, offset, value, reason):
    with pytest.raises(ObjectFormatError) as caught:
        read_object(_patched(fields, section, offset, value), "x.o")
    assert (caught.value.section, caught.value.reason) == (section, reason)


def test_two_defs_naming_one_map(fields):
    second = 192 + MAP_PIN  # the second def's pin_location, made the first's
    first = ElfObject(fields).section(".android_maps")
    assert first is not None
    pin = first.data[MAP_PIN : MAP_PIN + 70]
    name_idx = first.data[MAP_NAME_IDX : MAP_NAME_IDX + 4]
    data = _patched(fields, ".android_maps", second, pin)
    data = _patched(data, ".android_maps", 192 + MAP_NAME_IDX, name_idx)
    with pytest.raises(ObjectFormatError, match="two map defs name map 'counts'"):
        read_object(data, "x.o")
