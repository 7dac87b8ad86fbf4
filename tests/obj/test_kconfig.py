"""`__kconfig` externs, pure: libbpf's layout of the `.kconfig` map (from a compiled object),
the kernel config parser, and each kcfg type's value encoding. The kernel's side (the same map
as libbpf's, byte for byte) is tests/loader/test_libbpf_differential.py."""

from __future__ import annotations

import random
import struct

import pytest

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.bpftypes import BPF_F_MMAPABLE, BPF_F_RDONLY_PROG, MapType
from bpfloader.obj.kconfig import (
    KcfgType,
    Kconfig,
    KconfigExtern,
    KernelFacts,
    parse_config,
    values,
)
from bpfloader.obj.reader import read_object
from fuzz.contract import SAMPLE_CONFIG, check_kconfig
from tests.libbpf_support import libbpf_object

MUTATIONS = 3000
FACTS = KernelFacts(version=0x06122C, bpf_cookie=True, syscall_wrapper=False)


def one(kind: KcfgType, size: int, *, signed: bool = False, weak: bool = False) -> Kconfig:
    align = 1 if kind is KcfgType.CHAR_ARRAY else size
    return Kconfig((KconfigExtern("CONFIG_X", kind, size, align, signed, weak),), size, 1, (2,))


def test_the_layout_is_libbpfs_sorted_by_alignment_size_and_name(compile_bpf):
    spec = read_object(libbpf_object(compile_bpf, "libbpf_kconfig.c").read_bytes(), "kc.o")
    assert spec.kconfig is not None
    placed = [(e.name, e.offset, e.size) for e in spec.kconfig.externs]
    assert placed[:3] == [
        ("CONFIG_DEFAULT_MMAP_MIN_ADDR", 0, 8),
        ("CONFIG_ILLEGAL_POINTER_VALUE", 8, 8),
        ("CONFIG_BPFLOADER_NOT_AN_INT", 16, 4),
    ]
    assert placed[-2:] == [("CONFIG_DEFAULT_HOSTNAME", 45, 4), ("CONFIG_CC_VERSION_TEXT", 49, 64)]
    assert spec.kconfig.size == 113
    weak = {e.name: e.weak for e in spec.kconfig.externs}
    assert weak["CONFIG_HZ"] is False and weak["CONFIG_NR_CPUS"] is True
    kmap = spec.map_named("kconfig")
    assert kmap is not None
    assert (kmap.type, kmap.key_size, kmap.value_size, kmap.max_entries) == (
        MapType.ARRAY,
        4,
        113,
        1,
    )
    assert kmap.flags == BPF_F_MMAPABLE | BPF_F_RDONLY_PROG and kmap.frozen
    assert kmap.kernel_name == "kc.kconfig" and kmap.initial_data is None
    refs = {r.offset for p in spec.programs for r in p.map_refs if r.map_name == "kconfig"}
    assert refs == {e.offset for e in spec.kconfig.externs}


def test_the_config_parser_reads_what_libbpf_reads():
    text = '# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_C="x y"\nCONFIG_B=n\n\nCONFIG_D=0x10\n'
    assert parse_config(text) == {"CONFIG_B": "y", "CONFIG_C": '"x y"', "CONFIG_D": "0x10"}
    with pytest.raises(ValueError, match="has no '='"):
        parse_config("CONFIG_E\n")
    with pytest.raises(ValueError, match="has no value"):
        parse_config("CONFIG_E=\n")


@pytest.mark.parametrize(
    "kind, size, signed, text, expected",
    [
        (KcfgType.BOOL, 1, False, "y", b"\x01"),
        (KcfgType.BOOL, 1, False, "n", b"\x00"),
        (KcfgType.TRISTATE, 4, False, "m", struct.pack("<I", 2)),
        (KcfgType.TRISTATE, 4, False, "y", struct.pack("<I", 1)),
        (KcfgType.CHAR, 1, True, "m", b"m"),
        (KcfgType.INT, 4, True, "-1", b"\xff\xff\xff\xff"),
        (KcfgType.INT, 2, False, "0x1234", b"\x34\x12"),
        (KcfgType.INT, 8, False, "0xdead000000000000", struct.pack("<Q", 0xDEAD000000000000)),
        (KcfgType.INT, 4, False, "010", struct.pack("<I", 8)),  # strtoull's octal
        (KcfgType.INT, 4, False, "0", bytes(4)),
        (KcfgType.INT, 2, True, "-32768", b"\x00\x80"),
        (KcfgType.CHAR_ARRAY, 4, False, '"(none)"', b"(no\x00"),  # truncated, NUL kept
        (KcfgType.CHAR_ARRAY, 8, False, '"ab"', b"ab" + bytes(6)),
    ],
)
def test_each_type_is_encoded_as_libbpf_encodes_it(kind, size, signed, text, expected):
    layout = one(kind, size, signed=signed)
    assert values(layout, {"CONFIG_X": text}, FACTS) == expected


@pytest.mark.parametrize(
    "kind, size, signed, text, reason",
    [
        (KcfgType.BOOL, 1, False, "m", "value 'm' implies a tristate or char; its type is bool"),
        (KcfgType.INT, 2, False, "65536", "value 65536 does not fit in 2 bytes"),
        (KcfgType.INT, 1 * 2, True, "32768", "value 32768 does not fit in 2 bytes"),
        (KcfgType.INT, 4, False, "12abc", "value '12abc' is not a valid integer"),
        (KcfgType.INT, 4, False, "1_000", "value '1_000' is not a valid integer"),
        (KcfgType.INT, 4, False, "0b1", "value '0b1' is not a valid integer"),
        (KcfgType.INT, 4, False, "y", "value 'y' implies a bool, tristate or char"),
        (KcfgType.BOOL, 1, False, "1", "value 1 implies an integer; its type is bool"),
        (KcfgType.INT, 4, False, '"s"', 'value "s" implies a char array; its type is int'),
        (KcfgType.CHAR_ARRAY, 4, False, '"open', 'value "open is not a quoted string'),
    ],
)
def test_a_value_that_does_not_fit_names_the_extern(kind, size, signed, text, reason):
    with pytest.raises(ObjectFormatError) as e:
        values(one(kind, size, signed=signed), {"CONFIG_X": text}, FACTS)
    assert str(e.value).startswith(f".BTF: extern 'CONFIG_X' (.kconfig): {reason}"), str(e.value)


def test_a_missing_extern_is_zero_when_weak_and_an_error_otherwise():
    assert values(one(KcfgType.INT, 4, weak=True), {}, FACTS) == bytes(4)
    with pytest.raises(ObjectFormatError) as e:
        values(one(KcfgType.INT, 4), {}, FACTS)
    assert (
        e.value.reason == "extern 'CONFIG_X' (.kconfig): not in this kernel's config and not __weak"
    )


def test_the_virtual_externs_come_from_the_kernels_facts():
    externs = (
        KconfigExtern("LINUX_KERNEL_VERSION", KcfgType.INT, 4, 4, False, False, 0),
        KconfigExtern("LINUX_HAS_BPF_COOKIE", KcfgType.BOOL, 1, 1, False, False, 4),
        KconfigExtern("LINUX_HAS_SYSCALL_WRAPPER", KcfgType.BOOL, 1, 1, False, False, 5),
        KconfigExtern("LINUX_NOT_KNOWN", KcfgType.BOOL, 1, 1, False, True, 6),
    )
    layout = Kconfig(externs, 7, 1, ())
    assert not layout.needs_config
    assert values(layout, None, FACTS) == struct.pack("<I", 0x06122C) + b"\x01\x00\x00"
    unknown = Kconfig((KconfigExtern("LINUX_NOPE", KcfgType.BOOL, 1, 1, False, False),), 1, 1, ())
    with pytest.raises(ObjectFormatError, match=r"'LINUX_NOPE' .*not a CONFIG_ or LINUX_ extern"):
        values(unknown, None, FACTS)


def test_mutated_configs_keep_the_kconfig_contract(compile_bpf):
    """A CI-sized fuzz run of the config parser and value encoder (fuzz/contract.py): this
    kernel's config, when there is one, and a sample, mutated line by line."""
    spec = read_object(libbpf_object(compile_bpf, "libbpf_kconfig.c").read_bytes(), "kc.o")
    assert spec.kconfig is not None
    seed = SAMPLE_CONFIG + "".join(
        f"CONFIG_{e.name.removeprefix('CONFIG_')}={v}\n"
        for e, v in zip(
            spec.kconfig.externs, ("y", "m", "n", "42", "-1", '"s"', "0x7f") * 3, strict=False
        )
    )
    rng = random.Random(20261204)
    pieces = ("y", "m", "n", "=", '"', "0x", "-", "0", "9" * 30, "\n", "CONFIG_", "\x00", "é")
    for _ in range(MUTATIONS):
        lines = seed.splitlines()
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(lines))
            at = rng.randint(0, len(lines[i]))
            lines[i] = lines[i][:at] + rng.choice(pieces) + lines[i][at + rng.randint(0, 3) :]
        check_kconfig(spec.kconfig, "\n".join(lines))
