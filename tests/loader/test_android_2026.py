"""Android's 2026 format, loaded into the kernel: objects of our own written against our header
with BPFLOADER_ANDROID_2026 (tests/bpf/android2026/). Where each pin is, who owns it and its
mode are compared with the defs as this test reads them from the ELF itself (`android_defs`,
independent of the loader's reader); the gates, `$VER` variants, optional programs, reused
device maps, reload, the `@funcs` twins, the API level option and every bad object's line."""

from __future__ import annotations

import os
import shutil
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from bpfloader.client import BpfMap
from tests.conftest import pins_in
from tests.libbpf_support import bpftool, bpftool_text, libbpf_object

pytestmark = pytest.mark.kernel

BPFFS = "/sys/fs/bpf/"
API_LEVEL = 3700  # what the loader claims unless told otherwise
KERNEL = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:3])
MAP_DEF = struct.Struct("<8I2i2I70s70sI")
PROG_DEF = struct.Struct("<6I?3x2i70s70sI")


@dataclass(frozen=True)
class Def:
    """One def as the ELF holds it: what its pin must be, and its gates."""

    symbol: str
    pin: str  # pin_location, under /sys/fs/bpf/
    uid: int
    gid: int
    mode: int
    min_kver: int
    max_kver: int
    min_api: int
    max_api: int

    def passes(self, api_level: int = API_LEVEL) -> bool:
        major, minor, patch = KERNEL
        kver = (major << 24) + (minor << 16) + patch
        return self.min_kver <= kver < self.max_kver and self.min_api <= api_level < self.max_api


def android_defs(obj: Path) -> tuple[list[Def], list[Def]]:
    """The map and program defs of an object, read here with pyelftools and struct."""
    found: dict[str, list[Def]] = {".android_maps": [], ".android_progs": []}
    with obj.open("rb") as f:
        elf = ELFFile(f)
        symbols = elf.get_section_by_name(".symtab")
        for name, layout in ((".android_maps", MAP_DEF), (".android_progs", PROG_DEF)):
            section = elf.get_section_by_name(name)
            if section is None:
                continue
            data = section.data()
            for symbol in symbols.iter_symbols():
                if symbol["st_shndx"] != elf.get_section_index(name) or not symbol.name:
                    continue
                fields = layout.unpack_from(data, symbol["st_value"])
                if name == ".android_maps":
                    uid, gid, mode = fields[5], fields[6], fields[7]
                    api, kver, pin = fields[8:10], fields[10:12], fields[13]
                else:
                    uid, gid, mode = fields[2], fields[3], 0o440
                    kver, api, pin = fields[4:6], fields[7:9], fields[10]
                location = pin.split(b"\0")[0].decode()
                assert location.startswith(BPFFS), location
                found[name].append(
                    Def(symbol.name, location[len(BPFFS) :], uid, gid, mode, *kver, *api)
                )
    return found[".android_maps"], found[".android_progs"]


def assert_pinned_as_declared(
    defs: list[Def], root: Path, *, missing: set[str], api_level: int = API_LEVEL
) -> None:
    """Every def that passes its gates is pinned at its pin_location with its owner and mode
    (one pin for the variants of a program), except those in `missing` (by symbol); none of
    the others is."""
    pinned = {d.pin for d in defs if d.passes(api_level) and d.symbol not in missing}
    for d in defs:
        pin = root / d.pin
        if d.pin in pinned:
            info = pin.lstat()
            assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (
                d.uid,
                d.gid,
                d.mode,
            ), d
        else:
            assert not pin.exists(), d


@pytest.fixture
def fields(compile_bpf, source_dir: Path) -> Path:
    obj = compile_bpf("android2026/a26_fields.c")
    shutil.copy(obj, source_dir)
    return obj


def load(bpfloader_cli, source_dir: Path, bpffs: Path, *extra: str, check: bool = False):
    return bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, *extra, check=check)


def test_every_def_is_pinned_where_and_as_it_says(fields, source_dir, bpffs, bpfloader_cli):
    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    maps, programs = android_defs(fields)
    assert len(maps) == len(programs) == 7
    assert_pinned_as_declared(maps, bpffs, missing=set())
    # The optional program the verifier refuses leaves its pin unmade.
    assert_pinned_as_declared(programs, bpffs, missing={"schedact_broken_4_9_def"})
    assert {d.pin for d in maps if not d.passes()} == {
        "tethering/map_fields_future_kernel",
        "tethering/map_fields_future_android",
    }
    assert "optional program failed to load" in run.stderr
    # Of two variants that pass, the first in section order is pinned; a variant gated out
    # ahead of the pinned one leaves it to the next.
    for pin, function in (
        ("tethering/prog_fields_skfilter_first", "skfilter_first_4_9"),
        ("tethering/prog_fields_schedcls_prio", "schedcls_prio_5_15"),
    ):
        code = bpftool_text("prog", "dump", "xlated", "pinned", bpffs / pin)
        assert code.startswith(f"int {function}("), code[:80]
        # The kernel knows the program by Android's name for it: TYPE_NAME, cut to 15 bytes.
        name = bpftool("prog", "show", "pinned", bpffs / pin)["name"]
        assert name == pin.rsplit("/prog_fields_", 1)[1][:15]
    # Maps typed by their BTF (socket storage needs it); the device map as the kernel makes it.
    storage = bpftool("map", "show", "pinned", bpffs / "tethering/map_fields_per_socket")
    assert storage["type"] == "sk_storage" and storage["btf_id"] > 0


def test_a_second_load_reuses_every_map_and_a_reload_keeps_their_contents(
    compile_bpf, fields, source_dir, bpffs, bpfloader_cli
):
    load(bpfloader_cli, source_dir, bpffs, check=True)
    counts = bpffs / "tethering/map_fields_counts"
    ids = {
        p: bpftool("map", "show", "pinned", bpffs / p)["id"] for p in pins_in(bpffs) if "map_" in p
    }
    with BpfMap.open(str(counts), key="I", value="Q") as m:
        m[2] = 1234
    again = load(bpfloader_cli, source_dir, bpffs)
    assert again.returncode == 0, again.stderr
    assert "loaded (0 pins made, 8 reused, 6 skipped)" in again.stderr, again.stderr
    assert "tethering/map_fields_redirect" in ids  # the device map, reused with its added flag
    changed = compile_bpf("android2026/a26_fields.c", "a26_fields.o", "-DCHANGED=1")
    shutil.copy(changed, source_dir / "a26_fields.o")
    reload = bpfloader_cli("reload", "--dir", source_dir, "--pin-root", bpffs)
    assert reload.returncode == 0, reload.stderr
    for path, map_id in ids.items():
        assert bpftool("map", "show", "pinned", bpffs / path)["id"] == map_id, path
    with BpfMap.open(str(counts), key="I", value="Q") as m:
        assert m[2] == 1234


@pytest.mark.parametrize(
    ("level", "loaded"), [("26Q2", "a26_funcs@funcs.o"), ("25Q2", "a26_funcs.o")]
)
def test_one_of_an_object_and_its_funcs_twin_loads(
    compile_bpf, source_dir, bpffs, bpfloader_cli, level, loaded
):
    plain = compile_bpf("android2026/a26_funcs.c")
    funcs = compile_bpf("android2026/a26_funcs.c", "funcs.o", "-DBPF_USE_FUNCS")
    shutil.copy(plain, source_dir / "a26_funcs.o")
    shutil.copy(funcs, source_dir / "a26_funcs@funcs.o")
    run = load(bpfloader_cli, source_dir, bpffs, "--android-api-level", level)
    assert run.returncode == 0, run.stderr
    assert "objects: 1 loaded, 1 skipped, 0 failed" in run.stdout
    other = ({"a26_funcs.o", "a26_funcs@funcs.o"} - {loaded}).pop()
    assert f"skipped: {source_dir / other}: its twin {loaded} is loaded instead" in run.stdout
    # Same pins either way; the @funcs build calls a subprogram and a callback.
    assert pins_in(bpffs) == {"tethering/map_twin_totals", "tethering/prog_twin_skfilter_tally"}
    code = bpftool_text(
        "prog", "dump", "xlated", "pinned", bpffs / "tethering/prog_twin_skfilter_tally"
    )
    assert ("call pc+" in code) == (loaded == "a26_funcs@funcs.o"), code


def test_the_api_level_option(fields, source_dir, bpffs, bpfloader_cli):
    run = load(bpfloader_cli, source_dir, bpffs, "--android-api-level", "27Q2")
    assert run.returncode == 0, run.stderr
    maps, programs = android_defs(fields)
    assert_pinned_as_declared(maps, bpffs, missing=set(), api_level=3800)
    broken = {"schedact_broken_4_9_def"}
    assert_pinned_as_declared(programs, bpffs, missing=broken, api_level=3800)
    assert (bpffs / "tethering/prog_fields_xdp_future").exists()
    assert (bpffs / "tethering/map_fields_future_android").exists()
    bad = load(bpfloader_cli, source_dir, bpffs, "--android-api-level", "27Q9")
    assert bad.returncode == 2
    assert "'27Q9' is neither a number nor one of S, T, U, V, 25Q2" in bad.stderr


def test_the_three_formats_load_side_by_side(compile_bpf, fields, source_dir, bpffs, bpfloader_cli):
    shutil.copy(compile_bpf("k_owners.c"), source_dir / "classic.o")
    shutil.copy(libbpf_object(compile_bpf, "libbpf_maps.c"), source_dir)
    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    assert "objects: 3 loaded, 0 skipped, 0 failed" in run.stdout
    status = bpfloader_cli("status", "--pin-root", bpffs, "--json")
    assert status.returncode == 0, status.stderr


@pytest.mark.parametrize(
    ("flag", "line"),
    [
        (
            "DEF_ONLY",
            ".android_maps: map def 'orphan_def' names map 'orphan', which .maps does not define",
        ),
        (
            "NO_DEF",
            "schedcls/nodef$5_4: program 'schedcls_nodef_5_4' has no def "
            "'schedcls_nodef_5_4_def' in .android_progs",
        ),
        (
            "CLASSIC_TOO",
            "mixes Android's 2026 sections (.android_maps, .android_progs) with the classic "
            "format's (maps): build it with one header",
        ),
        ("NO_LICENSE", 'no "license" section (declare one with LICENSE("GPL"))'),
        (
            "OUTSIDE_BPFFS",
            ".android_maps: map def 'elsewhere_def': pin_location '/tmp/map_bad_elsewhere' is "
            "not under /sys/fs/bpf/",
        ),
    ],
)
def test_a_bad_object_fails_on_one_line_and_the_others_load(
    compile_bpf, fields, source_dir, bpffs, bpfloader_cli, flag, line
):
    bad = compile_bpf("android2026/a26_bad.c", f"bad_{flag}.o", f"-D{flag}")
    shutil.copy(bad, source_dir)
    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    assert f"failed: {source_dir / bad.name}: {line}" in run.stdout.splitlines(), run.stdout
    assert "objects: 1 loaded, 0 skipped, 1 failed" in run.stdout
    assert not any("_bad_" in p for p in pins_in(bpffs))


def test_a_map_without_a_def_is_pinned_beside_the_others(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    shutil.copy(compile_bpf("android2026/a26_bad.c", "extra.o", "-DEXTRA_MAP"), source_dir)
    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    assert pins_in(bpffs) == {
        "tethering/map_bad_counts",
        "tethering/map_bad_extra",
        "tethering/prog_bad_skfilter_count",
    }
    extra = (bpffs / "tethering/map_bad_extra").lstat()
    assert (extra.st_uid, extra.st_gid, stat.S_IMODE(extra.st_mode)) == (0, 0, 0o600)


def test_check_with_the_kernel(fields, bpfloader_cli):
    run = bpfloader_cli("check", "--kernel", fields)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "  kernel: 5 maps created, 3 programs loaded" in run.stdout.splitlines(), run.stdout


MAPS_ONLY = """
#define BPFLOADER_ANDROID_2026
#define BPF_OBJ_NAME "test"
#define DEFAULT_BPF_PIN_SUBDIR "tethering"
#include <bpf_helpers.h>
DEFINE_BPF_MAP_GRW(kernel_stats_map, ARRAY, uint32_t, uint32_t, 2, 1073);
DEFINE_BPF_MAP(bitmap, ARRAY, int, uint64_t, 1);
LICENSE("Apache 2.0");
"""


def test_an_object_of_maps_only(compile_bpf, source_dir, bpffs, bpfloader_cli):
    """As Android's test.o: no program, its maps pinned where its defs say."""
    obj = compile_bpf(MAPS_ONLY, "test.o")
    shutil.copy(obj, source_dir)
    run = load(bpfloader_cli, source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    maps, programs = android_defs(obj)
    assert programs == [] and len(maps) == 2
    assert_pinned_as_declared(maps, bpffs, missing=set())
    assert pins_in(bpffs) == {"tethering/map_test_kernel_stats_map", "tethering/map_test_bitmap"}
