"""libbpf's names and leniency for libbpf-style objects (pure, no root): the object's name up
to its first '.', section targets that a pin name may not hold mapped to '_', no `license`
section, program types from a policy file, legacy `struct bpf_map_def` maps told apart from
Android's, and sections libbpf knows that this loader does not support yet, each refused on
one short line. Android-format objects keep Android's rules."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfloader.errors import ObjectFormatError, PlanError
from bpfloader.loader.gates import Environment
from bpfloader.loader.naming import object_name, program_pin_name
from bpfloader.loader.plan import Planner, SourceObject
from bpfloader.loader.policy import PolicyError, parse_policy, policy_types
from bpfloader.obj.bpftypes import AttachType, MapType, ProgType
from bpfloader.obj.elf import ElfObject
from bpfloader.obj.libbpf_sections import UNSUPPORTED
from bpfloader.obj.reader import is_libbpf_style, read_object
from bpfloader.obj.spec import ObjectSpec, ObjectStyle
from tests.libbpf_support import libbpf_object

ENV = Environment(kernel=(6, 18, 0), loader_version=48, arch="x86_64")
PIN_ROOT = "/sys/fs/bpf"


def read(path: Path, name: str | None = None, types: dict | None = None) -> ObjectSpec:
    return read_object(path.read_bytes(), f"/etc/bpf/{name or path.name}", types)


def refuse(data: bytes, path: str = "/etc/bpf/bad.o") -> ObjectFormatError:
    with pytest.raises(ObjectFormatError) as caught:
        read_object(data, path)
    text = str(caught.value)
    assert "\n" not in text and text.startswith(f"{path}: "), text
    return caught.value


def pins(spec: ObjectSpec) -> set[str]:
    plan = Planner(ENV, PIN_ROOT, lambda _: False).plan(SourceObject(spec.path), spec)
    assert plan.error is None, str(plan.error)
    return {p.pin_path.removeprefix(PIN_ROOT + "/") for p in (*plan.maps, *plan.programs)}


# -- the object's name -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "android", "libbpf"),
    [
        ("minimal.bpf.o", "minimal.bpf", "minimal"),
        ("/etc/bpf/net/minimal.bpf.o", "minimal.bpf", "minimal"),
        ("netmon.o", "netmon", "netmon"),
        ("offload@mainline.o", "offload", "offload@mainline"),
        ("a.b.c.o", "a.b.c", "a"),
        ("plain", "plain", "plain"),
    ],
)
def test_the_object_name_follows_the_objects_format(path, android, libbpf):
    assert object_name(path) == android
    assert object_name(path, libbpf=True) == libbpf


def test_a_libbpf_name_that_would_be_empty_is_refused():
    with pytest.raises(PlanError, match="empty"):
        object_name("/etc/bpf/.hidden.bpf.o", libbpf=True)


def test_name_bpf_o_objects_get_libbpfs_object_name_and_targets_become_underscores(compile_bpf):
    spec = read(libbpf_object(compile_bpf, "libbpf_names.c", "libbpf_names.bpf.o"))
    assert spec.style is ObjectStyle.LIBBPF
    assert pins(spec) == {
        "map_libbpf_names_calls",
        "map_libbpf_names_bss",
        "prog_libbpf_names_uprobe_libc_so_6_malloc",
        "prog_libbpf_names_uretprobe_libc_so_6_malloc",
        "prog_libbpf_names_kprobe_do_sys_openat2_0x4",
        "prog_libbpf_names_usdt_libc_so_6_libc_setjmp",
        "prog_libbpf_names_xdp_pass",
    }


def test_the_mapping_is_for_libbpf_sections_only():
    assert program_pin_name("o", "uprobe/libc.so.6:malloc", libbpf=True) == (
        "prog_o_uprobe_libc_so_6_malloc"
    )
    assert program_pin_name("o", "kprobe/a+0x4$x", libbpf=True) == "prog_o_kprobe_a_0x4_x"
    with pytest.raises(PlanError, match=r"contains '\.'"):
        program_pin_name("o", "uprobe/libc.so.6:malloc")  # Android's rule refuses it


def test_sections_that_meet_once_mapped_are_an_error_naming_both(compile_bpf):
    obj = compile_bpf("libbpf_names.c", "collide.bpf.o", "-g", "-DCOLLIDE")
    spec = read(obj)
    plan = Planner(ENV, PIN_ROOT, lambda _: False).plan(SourceObject(spec.path), spec)
    assert str(plan.error) == (
        "/etc/bpf/collide.bpf.o: uprobe/libc_so_6_malloc: programs 'up_malloc' (section "
        "'uprobe/libc.so.6:malloc') and 'other_malloc' (section 'uprobe/libc_so_6_malloc') "
        "would both be pinned at /sys/fs/bpf/prog_collide_uprobe_libc_so_6_malloc"
    )


# -- no license --------------------------------------------------------------------------------

UNLICENSED = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("socket") int f(struct __sk_buff *skb) { return 0; }
"""


def test_a_libbpf_object_without_a_license_gets_an_empty_one(compile_bpf):
    spec = read(compile_bpf(UNLICENSED, "unlicensed.o", "-g"))
    assert (spec.style, spec.license) == (ObjectStyle.LIBBPF, "")


def test_an_android_object_without_a_license_is_still_refused(compile_bpf):
    e = refuse(compile_bpf("bad_no_license.c").read_bytes())
    assert e.reason.startswith('no "license" section')


# -- program types from a policy file ------------------------------------------------------------

UNTYPED = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("my_xdp") int first(struct xdp_md *ctx) { return XDP_PASS; }
SEC("mine/sock") int second(struct __sk_buff *skb) { return 0; }
char LICENSE[] SEC("license") = "GPL";
"""


def test_a_policy_type_types_the_programs_libbpf_cannot(compile_bpf):
    obj = compile_bpf(UNTYPED, "untyped.o", "-g")
    e = refuse(obj.read_bytes())
    assert e.section == "my_xdp" and e.reason.startswith("not a program section libbpf knows")
    policy = parse_policy(b'type = "xdp"\n[program.second]\ntype = "socket"\n', "untyped.policy")
    spec = read(obj, types=policy_types(policy))
    kinds = {p.name: (p.type, p.expected_attach_type) for p in spec.programs}
    assert kinds == {"first": (ProgType.XDP, AttachType.XDP), "second": (ProgType.SOCKET_FILTER, 0)}
    assert pins(spec) == {"prog_untyped_my_xdp_first", "prog_untyped_mine_sock_second"}


@pytest.mark.parametrize(
    ("text", "where", "value"),
    [
        (b'type = "xpd"\n', "type", "'xpd'"),
        (b'[program.f]\ntype = "fentry"\n', "[program.f]: type", "'fentry'"),  # needs a target
        (b"type = 6\n", "type", "6"),
    ],
)
def test_a_policy_type_is_read_strictly(text, where, value):
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "/etc/bpf/x.policy")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(
        f"policy /etc/bpf/x.policy: {where}: {value} is not a program type this loader knows "
        "(valid: socket, sk_reuseport/migrate, sk_reuseport, kprobe, "
    ), message
    valid = message.split("(valid: ", 1)[1]
    assert ", xdp, " in valid and "fentry" not in valid and "lsm" not in valid


def test_a_policy_type_is_refused_for_android_objects(compile_bpf):
    policy = parse_policy(b'type = "xdp"\n', "x.policy")
    with pytest.raises(ObjectFormatError, match="libbpf-style objects only"):
        read(compile_bpf("pure_plan.c"), types=policy_types(policy))


# -- sections libbpf knows that this loader does not support -------------------------------------


@pytest.mark.parametrize(
    ("section", "name"),
    [
        ("freplace/handler", "freplace"),
        ("ksyscall/openat", "ksyscall"),
        ("tcx/ingress", "tcx/ingress"),
        ("uprobe.multi/libc.so.6:*", "uprobe.multi"),
        ("netfilter", "netfilter"),
    ],
)
def test_a_section_libbpf_knows_and_we_do_not_support_says_so(compile_bpf, section, name):
    source = UNLICENSED.replace('SEC("socket")', f'SEC("{section}")')
    e = refuse(compile_bpf(source, "unsupported.o", "-g").read_bytes())
    assert str(e) == f"/etc/bpf/bad.o: {section}: {name} programs are not supported yet"


def test_a_section_libbpf_does_not_know_is_refused_briefly(compile_bpf):
    source = UNLICENSED.replace('SEC("socket")', 'SEC("no_such_kind/x")')
    e = refuse(compile_bpf(source, "unknown.o", "-g").read_bytes())
    assert e.reason.startswith("not a program section libbpf knows")
    assert len(str(e)) < 200 and "kprobe" not in str(e)


def test_the_unsupported_names_are_none_of_the_supported_ones():
    from bpfloader.obj.libbpf_sections import program_kind

    for name, _ in UNSUPPORTED:
        assert program_kind(name) is None and program_kind(name + "/x") is None, name


# -- legacy map definitions (libbpf before 1.0) ----------------------------------------------------


def test_legacy_maps_are_read_as_libbpf_0x_read_them(compile_bpf):
    obj = libbpf_object(compile_bpf, "libbpf_legacy_maps.c", "legacy.bpf.o")
    assert is_libbpf_style(ElfObject(obj.read_bytes()))
    spec = read(obj)
    assert spec.style is ObjectStyle.LIBBPF
    maps = {m.name: (m.type, m.key_size, m.value_size, m.max_entries, m.flags) for m in spec.maps}
    assert maps == {
        "counts": (MapType.HASH, 4, 8, 64, 1),
        "slots": (MapType.ARRAY, 4, 4, 2, 0),
        "events": (MapType.PERF_EVENT_ARRAY, 4, 4, 0, 0),
    }
    assert all(str(m.owner) == "0:0 0600" for m in spec.maps)
    refs = {p.name: {r.map_name for r in p.map_refs} for p in spec.programs}
    assert refs == {"count_packets": {"counts", "slots"}, "unlinks": {"events"}}
    assert pins(spec) >= {"map_legacy_counts", "prog_legacy_socket_count_packets"}


def test_legacy_defs_of_another_size_are_read_when_their_extra_fields_are_zero(compile_bpf):
    spec = read(compile_bpf("libbpf_legacy_maps.c", "legacy28.o", "-g", "-DDEF_WORDS=7"))
    assert [(m.name, m.max_entries) for m in spec.maps][:2] == [("counts", 64), ("slots", 2)]
    obj = compile_bpf(
        "libbpf_legacy_maps.c", "legacy_x.o", "-g", "-DDEF_WORDS=7", "-DNONZERO_EXTRA"
    )
    e = refuse(obj.read_bytes())
    assert str(e) == (
        "/etc/bpf/bad.o: maps: map 'counts': its 28-byte def has a non-zero byte at offset 24, "
        "past the 20 bytes of libbpf's legacy struct bpf_map_def"
    )


UNEVEN = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct def { unsigned int w[5]; };
struct def first SEC("maps") = {{BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0}};
struct def second SEC("maps") = {{BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0}};
unsigned int stray SEC("maps") = 0;
SEC("socket") int f(struct __sk_buff *skb) { return !!bpf_map_lookup_elem(&first, &skb->len); }
char LICENSE[] SEC("license") = "GPL";
"""


def test_legacy_defs_that_cannot_be_of_one_size_are_refused(compile_bpf):
    e = refuse(compile_bpf(UNEVEN, "uneven.o", "-g").read_bytes())
    assert (e.section, e.reason) == ("maps", "44 bytes cannot hold 3 legacy map defs of one size")


# Android's first format: 32-byte defs, no size_of_bpf_map_def or other marker, Android's
# section prefixes: still Android's, with its owner fields.
ANDROID_MARKERLESS = """
#include <linux/bpf.h>
#define SECTION(NAME) __attribute__((section(NAME), used))
struct def { unsigned int type, key_size, value_size, max_entries, flags, uid, gid, mode; };
const struct def SECTION("maps") first = {BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0, 0, 1000, 0640};
static void *(*lookup)(const void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
SECTION("kprobe/do_unlinkat") int probe(void *ctx) { int k = 0; return !!lookup(&first, &k); }
char _license[] SECTION("license") = "GPL";
"""


def test_android_objects_without_markers_keep_their_reader(compile_bpf):
    obj = compile_bpf(ANDROID_MARKERLESS, "first.o", btf=False)
    assert not is_libbpf_style(ElfObject(obj.read_bytes()))
    spec = read(obj)
    assert spec.style is ObjectStyle.ANDROID
    assert [(m.name, str(m.owner)) for m in spec.maps] == [("first", "0:1000 0640")]
    with_btf = compile_bpf(ANDROID_MARKERLESS, "first_g.o", "-g")  # BTF does not change that
    assert read(with_btf).style is ObjectStyle.ANDROID
