"""BTF key and value types for Android-format maps, as Android's loader gives them: from the
struct ____btf_map_NAME that BPF_ANNOTATE_KV_PAIR puts beside every map (its first member the
key, its second the value), read from the object's .BTF, with or without .BTF.ext.

The oracle for the type ids is bpftool's own reading of the object's BTF; in the kernel, a map
created with them reports a BTF object and those ids, and bpftool prints its elements by field.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bpfloader.errors import ObjectFormatError
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import pins as kpins
from bpfloader.obj.reader import read_object
from tests.libbpf_support import bpftool

KINDS = {"SK_STORAGE": "sock_seen", "SPIN_LOCK": "locked_counts", "TIMER": "timers"}


def annotation_ids(obj: Path) -> dict[str, tuple[int, int]]:
    """map name -> (key type id, value type id), read by bpftool from the object's BTF."""
    found = {}
    for t in bpftool("btf", "dump", "file", obj)["types"]:
        if t["kind"] == "STRUCT" and t["name"].startswith("____btf_map_"):
            key, value = t["members"][:2]
            found[t["name"].removeprefix("____btf_map_")] = (key["type_id"], value["type_id"])
    return found


def typed(spec_maps) -> dict[str, tuple[int, int]]:
    return {m.name: (m.btf_key_type_id, m.btf_value_type_id) for m in spec_maps}


@pytest.mark.parametrize("header", ["ours", "androids"])
@pytest.mark.parametrize("stripped", [False, True], ids=["with-btf-ext", "android-stripped"])
def test_the_annotation_gives_each_map_its_key_and_value_types(
    compile_bpf, compile_android, header, stripped
):
    source = "k_btf_maps.c" if header == "ours" else "android_header_kv.c"
    flags = ("-DSPIN_LOCK",) if header == "ours" else ()
    obj = (compile_android if stripped else compile_bpf)(source, None, *flags)
    sections = {s["name"] for s in bpftool("btf", "dump", "file", obj)["types"] if "name" in s}
    assert sections  # bpftool read the BTF
    spec = read_object(obj.read_bytes(), str(obj))
    expected = annotation_ids(obj)
    assert len(expected) == len(spec.maps) == 2
    assert typed(spec.maps) == expected
    assert all(key and value for key, value in expected.values())


def test_without_btf_maps_are_untyped(compile_bpf):
    spec = read_object(compile_bpf("android_header_kv.c", btf=False).read_bytes(), "x.o")
    assert spec.btf is None
    assert set(typed(spec.maps).values()) == {(0, 0)}


def test_an_annotation_that_disagrees_with_the_def_is_refused_as_androids_loader_does(
    compile_bpf,
):
    source = (
        "#include <bpf_helpers.h>\n"
        'DEFINE_BPF_MAP_EXT(m, HASH, int, long long, 4, 0, 0, 0, 0600, "", "", false, '
        "KVER_NONE, KVER_INF, 0, 0x10000, 0)\n"
        "struct ____btf_map_n { int key; int value; int extra; };\n"
        'struct ____btf_map_n SECTION(".maps.n") ____btf_map_n = {};\n'
        'const struct bpf_map_def SECTION("maps") n = {.type = BPF_MAP_TYPE_HASH, '
        ".key_size = 4, .value_size = 8, .max_entries = 4, .mode = 0600, "
        ".bpfloader_max_ver = 0x10000, .max_kver = KVER_INF};\n"
        'LICENSE("GPL");\n'
    )
    obj = compile_bpf(source, "mismatch.o")
    with pytest.raises(ObjectFormatError) as caught:
        read_object(obj.read_bytes(), "/etc/bpf/mismatch.o")
    assert str(caught.value) == (
        "/etc/bpf/mismatch.o: .BTF: map 'n': BTF annotation ____btf_map_n has a 4-byte key and a "
        "4-byte value; its def says 4 and 8"
    )


@pytest.mark.kernel
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("android", [False, True], ids=["bpfloader-build", "android-build"])
def test_maps_that_need_btf_load_with_their_types(
    compile_bpf, compile_android, source_dir, bpffs, bpfloader_cli, kind, android
):
    obj = (compile_android if android else compile_bpf)("k_btf_maps.c", "btf_maps.o", f"-D{kind}")
    shutil.copy(obj, source_dir / "btf_maps.o")
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    assert "objects: 1 loaded, 0 skipped, 0 failed" in run.stdout.splitlines()
    ids = annotation_ids(obj)
    for name in (KINDS[kind], "plain_counts"):
        pin = bpffs / f"map_btf_maps_{name}"
        assert bpftool("map", "show", "pinned", pin)["btf_id"] != 0
        fd = kpins.open_pinned(str(pin))
        try:
            info = kmaps.map_info(fd)
        finally:
            os.close(fd)
        assert (info.btf_key_type_id, info.btf_value_type_id) == ids[name]
    # With the types, bpftool prints the values by field.
    (element, *_) = bpftool("map", "dump", "pinned", bpffs / "map_btf_maps_plain_counts")
    assert element["formatted"]["value"] == {"packets": 0, "last_len": 0}


@pytest.mark.kernel
def test_without_btf_each_fails_on_one_line_naming_the_map_and_the_fix(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    for kind in KINDS:
        obj = compile_bpf("k_btf_maps.c", f"nobtf_{kind.lower()}.o", f"-D{kind}", btf=False)
        shutil.copy(obj, source_dir)
    shutil.copy(compile_bpf("k_btf_maps.c", "good.o", "-DSPIN_LOCK"), source_dir)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr  # none of them is critical
    assert "objects: 1 loaded, 0 skipped, 3 failed" in run.stdout.splitlines()
    fix = (
        "the object has no BTF: build it with `bpfloader build` (which compiles with -g) or "
        "clang -g, and keep the .BTF section when stripping"
    )
    errors = [line for line in run.stderr.splitlines() if line.startswith("bpfloader: err: ")]
    by_file = {Path(line.split(": ")[2]).name: line for line in errors}
    assert set(by_file) == {"nobtf_sk_storage.o", "nobtf_spin_lock.o", "nobtf_timer.o"}
    assert by_file["nobtf_sk_storage.o"] == (
        f"bpfloader: err: {source_dir}/nobtf_sk_storage.o: maps: map 'sock_seen': a SK_STORAGE "
        f"map needs BTF types, and {fix}"
    )
    assert by_file["nobtf_spin_lock.o"].startswith(
        f"bpfloader: err: {source_dir}/nobtf_spin_lock.o: schedcls/locked: map 'locked_counts' "
        f"holds a bpf_spin_lock, which needs the map's BTF types, and {fix} "
        "(rejected by the verifier at instruction "
    )
    assert by_file["nobtf_timer.o"].startswith(
        f"bpfloader: err: {source_dir}/nobtf_timer.o: schedcls/timed: map 'timers' holds a "
        f"bpf_timer, which needs the map's BTF types, and {fix} "
        "(rejected by the verifier at instruction "
    )
    assert {p.name for p in bpffs.iterdir()} - {"maps.debug", "progs.debug"} == {
        "map_good_plain_counts",
        "map_good_locked_counts",
        "prog_good_schedcls_locked",
        "prog_good_schedcls_plain",
    }


@pytest.mark.kernel
def test_a_map_without_annotation_loads_untyped_unless_it_needs_types(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    """An object built with BTF by a header that does not annotate (ours before it did): its
    maps load as they always did, without types; one that needs them fails, saying why."""
    source = (
        "#include <bpf_helpers.h>\n"
        'const struct bpf_map_def SECTION("maps") bare = {.type = BPF_MAP_TYPE_%s, '
        ".key_size = 4, .value_size = 8, .max_entries = %s, .map_flags = %s, .mode = 0600, "
        ".bpfloader_max_ver = 0x10000, .max_kver = KVER_INF};\n"
        'DEFINE_BPF_PROG("skfilter/p", 0, 0, p)(struct __sk_buff *skb) { return 0; }\n'
        'LICENSE("GPL");\n'
    )
    shutil.copy(compile_bpf(source % ("HASH", 4, 0), "untyped.o"), source_dir)
    shutil.copy(compile_bpf(source % ("SK_STORAGE", 0, "BPF_F_NO_PREALLOC"), "sk.o"), source_dir)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert "objects: 1 loaded, 0 skipped, 1 failed" in run.stdout.splitlines()
    assert bpftool("map", "show", "pinned", bpffs / "map_untyped_bare").get("btf_id", 0) == 0
    assert (
        f"bpfloader: err: {source_dir}/sk.o: maps: map 'bare': a SK_STORAGE map needs BTF types, "
        "and the object's BTF has none for it (no ____btf_map_bare: declare it with "
        "bpf_helpers.h's macros)"
    ) in run.stderr.splitlines()
