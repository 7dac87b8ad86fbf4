"""libbpf-style objects, loaded by bpftool (libbpf 1.1) and by bpfloader: the kernel must end
up holding the same thing. For every program: type, tag (a hash of the final instructions, so
equal tags prove identical relocation and subprogram layout), license, BTF, the maps it uses,
and the translated instructions with their source lines and function names (proving the same
func_info and line_info). For every map: type, key and value sizes, max_entries, flags, frozen,
BTF, and contents (global data sections, initial `values`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import pins_in
from tests.libbpf_support import (
    MAP_FIELDS,
    PROGRAM_FIELDS,
    Loaded,
    bpftool_loadall,
    libbpf_object,
    loaded_by_bpfloader,
    loaded_by_bpftool,
    map_dump,
    xlated,
)

pytestmark = pytest.mark.kernel

# source -> whether bpftool may pin its maps (pinmaps): not with LIBBPF_PIN_BY_NAME maps,
# which libbpf pins under /sys/fs/bpf itself and then refuses to pin elsewhere.
CORPUS = {
    "libbpf_maps.c": False,
    "libbpf_sections.c": True,
    "libbpf_subprogs.c": True,
    "libbpf_globals.c": True,
    "libbpf_values.c": True,
    "libbpf_kconfig.c": True,
}
# Maps whose values are kernel object ids (different in each load): compared by key.
BY_KEY = {"prog_array", "array_of_maps", "hash_of_maps"}
# Maps user space cannot iterate (no lookup by key): nothing to compare.
NO_DUMP = {"ringbuf", "queue", "bloom_filter"}


def load_both(
    compile_bpf, source: str, bpffs: Path, source_dir: Path, bpfloader_cli
) -> tuple[Loaded, Loaded]:
    obj = libbpf_object(compile_bpf, source)
    done = bpftool_loadall(obj, bpffs, pinmaps=CORPUS[source])
    assert done.returncode == 0, f"bpftool prog loadall {source}: {done.stderr}"
    theirs = loaded_by_bpftool(bpffs)
    ours_root = bpffs / "ours"
    ours_root.mkdir()
    (source_dir / obj.name).write_bytes(obj.read_bytes())
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", ours_root, check=True)
    return theirs, loaded_by_bpfloader(ours_root)


@pytest.mark.parametrize("source", CORPUS)
def test_the_kernel_holds_the_same_programs_and_maps(
    compile_bpf, source, bpffs, source_dir, bpfloader_cli
):
    theirs, ours = load_both(compile_bpf, source, bpffs, source_dir, bpfloader_cli)
    assert sorted(ours.programs) == sorted(theirs.programs)
    assert sorted(ours.maps) == sorted(theirs.maps)
    their_map_names = {m["id"]: name for name, m in theirs.maps.items()}
    our_map_names = {m["id"]: name for name, m in ours.maps.items()}
    for name, their in theirs.programs.items():
        our = ours.programs[name]
        for field in PROGRAM_FIELDS:
            assert our[field] == their[field], f"program {name}: {field}"
        assert ("btf_id" in our) == ("btf_id" in their), f"program {name}: BTF"
        assert {our_map_names[i] for i in our.get("map_ids", [])} == {
            their_map_names[i] for i in their.get("map_ids", [])
        }, f"program {name}: maps used"
        assert xlated(ours.program_pins[name]) == xlated(theirs.program_pins[name]), name
    for name, their in theirs.maps.items():
        our = ours.maps[name]
        for field in MAP_FIELDS:
            assert our.get(field) == their.get(field), f"map {name}: {field}"
        assert ("btf_id" in our) == ("btf_id" in their), f"map {name}: BTF"
        if their["type"] in NO_DUMP:
            continue
        our_dump, their_dump = map_dump(our["id"]), map_dump(their["id"])
        if their["type"] in BY_KEY:
            assert [e["key"] for e in our_dump] == [e["key"] for e in their_dump], name
        else:
            assert our_dump == their_dump, f"map {name}: contents"


def test_the_corpus_covers_what_it_claims(compile_bpf, bpffs, source_dir, bpfloader_cli):
    """Guard against a corpus that silently stops covering a feature."""
    theirs, _ = load_both(compile_bpf, "libbpf_globals.c", bpffs, source_dir, bpfloader_cli)
    names = set(theirs.maps)
    assert {"libbpf_g.data", "libbpf_g.rodata", "libbpf_g.bss", ".data.custom"} <= names
    assert theirs.maps["libbpf_g.rodata"]["frozen"] == 1


def test_a_missing_kconfig_extern_that_is_not_weak_is_refused_by_both(
    compile_bpf, bpffs, source_dir, bpfloader_cli
):
    obj = compile_bpf("libbpf_bad.c", "missing.o", "-g", "-DKCONFIG_MISSING")
    done = bpftool_loadall(obj, bpffs)
    assert done.returncode != 0
    assert "CONFIG_BPFLOADER_MISSING" in done.stderr, done.stderr
    (source_dir / obj.name).write_bytes(obj.read_bytes())
    (bpffs / "ours").mkdir()
    ours = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs / "ours")
    failed = [line for line in ours.stdout.splitlines() if line.startswith("failed: ")]
    assert failed == [
        f"failed: {source_dir / obj.name}: .BTF: extern 'CONFIG_BPFLOADER_MISSING' (.kconfig): "
        "not in this kernel's config and not __weak"
    ], ours.stdout
    assert pins_in(bpffs / "ours") == set()
