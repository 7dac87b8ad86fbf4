"""Mutants of the example objects, loaded by the real CLI next to the good ones.

The hardening issue asks: "Mutation tests on the example objects (bit flips, truncations,
section header corruption, huge counts): the loader processes a directory containing them
plus the good objects, loads every good object, and reports each bad one."

Every etc/bpf example is mutated deterministically (fixed seeds, fixed offsets computed from
the object's own layout) and every mutant gets its own file name, hence its own FILENAME and
pin names. One `bpfloader load` process then gets all of them plus the good examples, and:
  - exits 0 (only critical objects fail a run, and no example is critical), without a traceback;
  - pins every good example exactly as a load of the good examples alone does;
  - either loads a mutant with all its pins (a bit flip may well leave a valid object) or
    reports it on exactly one error line naming its file, and then leaves no pin of it;
  - fails every structural mutant (truncation, header corruption, huge count), for the
    structural reason where the reader can name one;
  - removes its staging directory; and `status --json` tells the same story.

test_reader_fuzz.py checks the pure reader on random mutations; this module checks the whole
loader (plan, kernel, pins, state) on a directory where bad and good objects sit together.
"""

from __future__ import annotations

import io
import json
import os
import random
import re
import shutil
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.reader import read_object
from tests.conftest import Run, mounted_bpffs, pins_in

pytestmark = pytest.mark.kernel

EXAMPLES = (
    "cgroup_counter",
    "execsnoop",
    "myschedtp",
    "socket_filter",
    "tc_counter",
    "xdp_drop_port",
)
SEED = 20261122
FLIPS_PER_EXAMPLE = 20
STAGING_DIR = "bpfloader_staging"  # README: the private staging directory on the pin root
WARNING_LINE = "bpfloader: warning: "
ERROR_LINE = "bpfloader: err: "
# What read_object's last-resort handler says: a check is missing where the value was read.
CATCH_ALL = "malformed ELF ("

# Elf64_Ehdr and Elf64_Shdr field offsets.
E_SHOFF, E_SHENTSIZE, E_SHNUM, E_SHSTRNDX = 0x28, 0x3A, 0x3C, 0x3E
SH_TYPE, SH_OFFSET, SH_SIZE, SH_LINK, SH_INFO = 4, 24, 32, 40, 44
SHDR_SIZE = 64
SHT_PROGBITS, SHT_SYMTAB, SHT_REL = 1, 2, 9
SHF_EXECINSTR = 0x4
# struct bpf_map_def field offsets (bpfloader/include/bpf_helpers.h).
MAP_KEY_SIZE, MAP_VALUE_SIZE, MAP_MAX_ENTRIES = 4, 8, 12

TRUNCATED = r"truncated file: "


# -- mutants ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mutant:
    """One corrupt copy of an example. `expected` (structural mutants only) is a pattern the
    reason in its error line must match (searched, after the file name)."""

    example: str
    tag: str
    kind: str  # "truncation", "header", "huge count" or "bit flip"
    data: bytes
    expected: str | None = None

    @property
    def file_name(self) -> str:
        return f"{self.example}_{self.tag}.o"

    @property
    def structural(self) -> bool:
        """Deterministic damage that no object survives (bit flips may leave a valid one)."""
        return self.kind != "bit flip"


@dataclass(frozen=True)
class SectionHeader:
    index: int
    at: int  # where the header is in the file
    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int


class Layout:
    """The section headers of a sound object, read with struct (independently of the reader
    under test) to aim the mutations."""

    def __init__(self, data: bytes):
        self.shoff: int = struct.unpack_from("<Q", data, E_SHOFF)[0]
        self.shnum: int = struct.unpack_from("<H", data, E_SHNUM)[0]
        shstrndx: int = struct.unpack_from("<H", data, E_SHSTRNDX)[0]
        raw = [self._raw(data, i) for i in range(self.shnum)]
        names_at, names_size = raw[shstrndx][4], raw[shstrndx][5]
        names = data[names_at : names_at + names_size]
        self.sections = []
        for i, (name, kind, flags, _, offset, size, link, info, _, _) in enumerate(raw):
            text = names[name : names.index(b"\0", name)].decode()
            at = self.shoff + SHDR_SIZE * i
            self.sections.append(SectionHeader(i, at, text, kind, flags, offset, size, link, info))
        self.shstrndx = shstrndx

    def _raw(self, data: bytes, index: int) -> tuple[int, ...]:
        return struct.unpack_from("<IIQQQQIIQQ", data, self.shoff + SHDR_SIZE * index)

    def by_name(self, name: str) -> SectionHeader | None:
        return next((s for s in self.sections if s.name == name), None)

    def of_type(self, kind: int) -> list[SectionHeader]:
        return [s for s in self.sections if s.type == kind]

    def code(self) -> SectionHeader:
        """The first program section (code, not the empty .text)."""
        return next(
            s
            for s in self.sections
            if s.type == SHT_PROGBITS and s.flags & SHF_EXECINSTR and s.size and s.name != ".text"
        )


def patched(data: bytes, at: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, at, value)
    return bytes(out)


def map_defs(data: bytes) -> dict[str, int]:
    """Each map's name -> the file offset of its def: the symbols of the `maps` section, paired
    by value (offset in the section), as the format says, not by order."""
    elf = ELFFile(io.BytesIO(data))
    maps = elf.get_section_by_name("maps")
    if maps is None:
        return {}
    index = next(i for i, s in enumerate(elf.iter_sections()) if s.name == "maps")
    sizes, symtab = (
        elf.get_section_by_name("size_of_bpf_map_def"),
        elf.get_section_by_name(".symtab"),
    )
    assert isinstance(symtab, SymbolTableSection) and sizes is not None
    def_size: int = struct.unpack("<I", sizes.data())[0]
    found: dict[str, int] = {}
    for symbol in symtab.iter_symbols():
        if symbol["st_shndx"] == index and symbol["st_info"]["type"] == "STT_OBJECT":
            assert symbol["st_value"] % def_size == 0
            found[symbol.name] = maps["sh_offset"] + symbol["st_value"]
    assert len(found) * def_size == maps["sh_size"], "every def is named"
    return found


def truncations(example: str, data: bytes, layout: Layout) -> Iterator[Mutant]:
    code = layout.code()
    middle_of_table = layout.shoff + SHDR_SIZE * (layout.shnum // 2) + SHDR_SIZE // 2
    cuts = {
        "trunc_empty": (0, r"not an ELF file"),
        "trunc_ident": (12, TRUNCATED + r"12 bytes is shorter than the ELF header"),
        "trunc_hdr": (40, TRUNCATED + r"the ELF header ends at byte 64, but the file has 40 "),
        "trunc_shdrs": (middle_of_table, TRUNCATED + "the section header table ends at byte "),
        # The table is at the end of the file: a cut inside a section loses it too.
        "trunc_code": (code.offset + code.size // 2, TRUNCATED + "the section header table "),
    }
    for tag, (size, expected) in cuts.items():
        yield Mutant(example, tag, "truncation", data[:size], "^" + expected)


def header_corruptions(example: str, data: bytes, layout: Layout) -> Iterator[Mutant]:
    code = layout.code()
    (symtab,) = layout.of_type(SHT_SYMTAB)
    names = layout.sections[layout.shstrndx]
    license = layout.by_name("license")
    assert license is not None
    beyond = layout.shnum + 100
    data_past_eof = TRUNCATED + r"the section's data ends at byte \d+, but the file has \d+ bytes"
    changes: list[tuple[str, int, str, int, str]] = [
        ("sh_offset_eof", code.at + SH_OFFSET, "<Q", len(data) + 4096,
         f"^{re.escape(code.name)}: {data_past_eof}"),
        ("sh_size_eof", code.at + SH_SIZE, "<Q", 1 << 32,
         f"^{re.escape(code.name)}: {data_past_eof}"),
        ("sh_link_symtab", symtab.at + SH_LINK, "<I", beyond,
         rf"^\.symtab: linked section {beyond} is not usable"),
        ("sh_type_symtab", symtab.at + SH_TYPE, "<I", SHT_PROGBITS,
         r": (?:linked section \d+ is not usable|no function symbol at the start of the section)$"),
        ("sh_type_names", names.at + SH_TYPE, "<I", SHT_PROGBITS,
         rf"^section name table index {layout.shstrndx} is not a string table"),
        ("e_shstrndx", E_SHSTRNDX, "<H", beyond,
         rf"^section name table index {beyond} is not a string table"),
        ("e_shnum_huge", E_SHNUM, "<H", 0xFFFF, r"^65535 sections is more than the limit of "),
        ("e_shentsize", E_SHENTSIZE, "<H", 40, r"^section header size 40 is not 64 bytes"),
    ]  # fmt: skip
    # The relocations of code: those of debug data (.rel.debug_*, .rel.BTF*) are never read.
    code_rels = [
        r for r in layout.of_type(SHT_REL) if not r.name.startswith((".rel.debug", ".rel.BTF"))
    ]
    for rel in code_rels[:1]:
        changes += [
            ("sh_link_rel", rel.at + SH_LINK, "<I", beyond,
             rf"^{re.escape(rel.name)}: linked section {beyond} is not usable"),
            ("sh_info_rel", rel.at + SH_INFO, "<I", beyond,
             rf"^{re.escape(rel.name)}: relocations for section {beyond}, which does not exist$"),
            # Relocations aimed at another (existing) section, or no longer typed SHT_REL: the
            # code they belong to would reach the kernel unrelocated.
            ("sh_info_rel_other", rel.at + SH_INFO, "<I", license.index,
             rf"^{re.escape(rel.name)}: relocations for section {license.index}, not for "),
            ("sh_type_rel", rel.at + SH_TYPE, "<I", SHT_PROGBITS,
             rf"^{re.escape(rel.name)}: section type SHT_PROGBITS is not SHT_REL$"),
        ]  # fmt: skip
    for tag, at, fmt, value, expected in changes:
        yield Mutant(example, tag, "header", patched(data, at, fmt, value), expected)


def huge_counts(example: str, data: bytes, layout: Layout) -> Iterator[Mutant]:
    (symtab,) = layout.of_type(SHT_SYMTAB)
    too_many = rf"(?:{TRUNCATED}|more than the limit of )"
    yield Mutant(
        example,
        "symtab_huge",
        "huge count",
        patched(data, symtab.at + SH_SIZE, "<Q", 24 << 32),
        rf"^\.symtab: {too_many}",
    )
    # The relocations of code: those of debug data (.rel.debug_*, .rel.BTF*) are never read.
    code_rels = [
        r for r in layout.of_type(SHT_REL) if not r.name.startswith((".rel.debug", ".rel.BTF"))
    ]
    for rel in code_rels[:1]:
        yield Mutant(
            example,
            "rel_huge",
            "huge count",
            patched(data, rel.at + SH_SIZE, "<Q", 16 << 32),
            rf"^{re.escape(rel.name)}: {too_many}",
        )
    yield from huge_maps(example, data)


def huge_maps(example: str, data: bytes) -> Iterator[Mutant]:
    """The first map's max_entries, key or value size set to 0xffffffff. The kernel refuses
    such maps (ENOMEM, E2BIG or EINVAL); the map memory ceiling (--max-map-memory) refuses them
    earlier, at plan time. Either way the error line names the map."""
    for name, at in list(map_defs(data).items())[:1]:
        for tag, field in (
            ("max_entries", MAP_MAX_ENTRIES),
            ("key_size", MAP_KEY_SIZE),
            ("value_size", MAP_VALUE_SIZE),
        ):
            yield Mutant(
                example,
                f"huge_{tag}",
                "huge count",
                patched(data, at + field, "<I", 0xFFFFFFFF),
                rf"\b{re.escape(name)}\b",
            )


def map_sizes(data: bytes) -> set[int]:
    """File offsets of the bytes of every map def's key_size, value_size and max_entries."""
    return {
        at + field + i
        for at in map_defs(data).values()
        for field in (MAP_KEY_SIZE, MAP_VALUE_SIZE, MAP_MAX_ENTRIES)
        for i in range(4)
    }


def bit_flips(example: str, data: bytes) -> Iterator[Mutant]:
    """FLIPS_PER_EXAMPLE mutants of one to three flipped bits each, from a seed per mutant (a
    str seed is hashed with SHA-512: the same bytes on every run and every Python).

    The sizes of map defs are left alone: a flip there can ask for a valid map of gigabytes,
    below the ceiling, which the kernel then makes (a 1 GiB array and a 4M-entry hash took 2 s
    and 1.3 GB here). Huge sizes have their own deterministic mutants (huge_maps)."""
    spared = map_sizes(data)
    for i in range(FLIPS_PER_EXAMPLE):
        rng = random.Random(f"{SEED}/{example}/{i}")
        out = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(out))
            while at in spared:
                at = rng.randrange(len(out))
            out[at] ^= 1 << rng.randrange(8)
        yield Mutant(example, f"flip_{i:02d}", "bit flip", bytes(out))


def mutants_of(example: str, data: bytes) -> list[Mutant]:
    layout = Layout(data)
    return [
        *truncations(example, data, layout),
        *header_corruptions(example, data, layout),
        *huge_counts(example, data, layout),
        *bit_flips(example, data),
    ]


# -- running the loader -------------------------------------------------------------------------


def place_examples(compile_bpf: Callable[..., Path], directory: Path) -> dict[str, bytes]:
    """Copy the good examples into `directory`; returns their bytes by example name."""
    good = {}
    for example in EXAMPLES:
        built = compile_bpf(f"{example}.c")
        shutil.copyfile(built, directory / built.name)
        good[example] = built.read_bytes()
    return good


def status_of(bpfloader_cli: Callable[..., Run], *args: str | Path) -> dict[str, Any]:
    run = bpfloader_cli("status", "--json", *args)
    assert run.returncode == 0, run.stderr
    report: dict[str, Any] = json.loads(run.stdout)
    return report


def recorded_pins(obj: dict[str, Any], root: Path) -> set[str]:
    """The pins `status --json` lists for one object, relative to the pin root."""
    return {os.path.relpath(pin["pin"], root) for pin in obj["maps"] + obj["programs"]}


def pin_facts(obj: dict[str, Any], root: Path) -> set[tuple[str, bool, int, int, str]]:
    """(pin relative to the root, present, uid, gid, mode) of one object's pins, read live."""
    return {
        (os.path.relpath(p["pin"], root), p["present"], p["uid"], p["gid"], p["mode"])
        for p in obj["maps"] + obj["programs"]
    }


def pins_named_for(stem: str, root: Path) -> set[str]:
    """Pins whose name holds FILENAME `stem` (the FILENAMEs here are unique and none is a
    `_stem_` part of another)."""
    return {p for p in pins_in(root) if f"_{stem}_" in os.path.basename(p)}


# -- the tests ----------------------------------------------------------------------------------


def test_mutants_fail_alone_and_every_good_example_loads(
    compile_bpf: Callable[..., Path],
    source_dir: Path,
    bpffs: Path,
    bpfloader_cli: Callable[..., Run],
    tmp_path: Path,
) -> None:
    # What the good examples pin when they are alone: the reference.
    alone = tmp_path / "good-only"
    alone.mkdir()
    good = place_examples(compile_bpf, alone)
    with mounted_bpffs(tmp_path / "bpffs-good-only") as reference:
        run = bpfloader_cli(
            "load", "--dir", alone, "--pin-root", reference,
            "--state-dir", tmp_path / "state-good-only",
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines()[0] == f"objects: {len(EXAMPLES)} loaded, 0 skipped, 0 failed"
        report = status_of(
            bpfloader_cli, "--dir", alone, "--pin-root", reference,
            "--state-dir", tmp_path / "state-good-only",
        )  # fmt: skip
        expected_pins = {Path(o["path"]).name: pin_facts(o, reference) for o in report["objects"]}
        assert set().union(*(recorded_pins(o, reference) for o in report["objects"])) == pins_in(
            reference
        )
    assert all(expected_pins.values()) and len(expected_pins) == len(EXAMPLES)

    # The good examples and every mutant in one directory, one run.
    place_examples(compile_bpf, source_dir)
    mutants = [m for example in EXAMPLES for m in mutants_of(example, good[example])]
    for mutant in mutants:
        target = source_dir / mutant.file_name
        assert not target.exists(), f"two mutants named {mutant.file_name}"
        target.write_bytes(mutant.data)
    started = time.monotonic()
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    elapsed = time.monotonic() - started

    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 0, run.stderr  # no example is critical: failures do not fail the run
    lines = run.stderr.splitlines()
    # Every line is an event; a verifier log, where one is printed, follows indented by "  | ".
    assert all(line.startswith(("bpfloader: ", "  | ")) for line in lines), run.stderr
    assert not (bpffs / STAGING_DIR).exists()

    report = status_of(bpfloader_cli, "--dir", source_dir, "--pin-root", bpffs)
    assert report["state"] == "recorded"
    assert report["foreign_pins"] == []
    objects = {o["path"]: o for o in report["objects"]}
    assert set(objects) == {str(p) for p in source_dir.iterdir()}

    for example in EXAMPLES:
        obj = objects[str(source_dir / f"{example}.o")]
        assert obj["status"] == "loaded", obj
        assert pin_facts(obj, bpffs) == expected_pins[f"{example}.o"]  # all present, same owners

    outcomes: Counter[tuple[str, str]] = Counter()
    for mutant in mutants:
        path = str(source_dir / mutant.file_name)
        obj = objects[path]
        about = [line for line in lines if path in line]
        outcomes[mutant.kind, obj["status"]] += 1
        if obj["status"] == "failed":
            # One error line; a warning may come before it (a flip in the BTF the kernel then
            # refuses: where that happens depends on the offsets the source's path gives).
            errors = [line for line in about if line.startswith(ERROR_LINE)]
            assert len(errors) == 1, f"{mutant.file_name}: {about}"
            assert all(line.startswith(WARNING_LINE) for line in about if line not in errors), about
            (line,) = errors
            assert line.startswith(f"{ERROR_LINE}{path}: "), line
            assert obj["reason"] == line.removeprefix(ERROR_LINE)
            reason = line.removeprefix(f"{ERROR_LINE}{path}: ")
            assert CATCH_ALL not in reason, f"a check is missing: {line}"
            if mutant.expected is not None:
                assert re.search(mutant.expected, reason), f"{line!r} !~ {mutant.expected!r}"
            assert not obj["maps"] and not obj["programs"]
            assert not pins_named_for(mutant.file_name.removesuffix(".o"), bpffs)
        else:
            # A bit flip that left a valid object (or one whose gates now skip it): all of
            # its pins are there, and nothing about it was reported as an error.
            assert not mutant.structural, f"{mutant.file_name} {obj['status']}: {about}"
            assert obj["status"] in ("loaded", "skipped"), obj
            assert not [line for line in about if line.startswith(ERROR_LINE)], about
            assert all(p["present"] for p in obj["maps"] + obj["programs"]), obj

    # No pin but those recorded, no directory but those holding pins.
    recorded = set().union(*(recorded_pins(o, bpffs) for o in objects.values()))
    assert pins_in(bpffs) == recorded
    for directory, _, _ in os.walk(bpffs):
        rel = os.path.relpath(directory, bpffs)
        assert rel == "." or any(p.startswith(rel + os.sep) for p in recorded), rel

    counts = Counter(o["status"] for o in objects.values())
    summary = (
        f"objects: {counts['loaded']} loaded, {counts['skipped']} skipped, "
        f"{counts['failed']} failed"
    )
    assert run.stdout.splitlines()[0] == summary
    errors = [line for line in lines if line.startswith(ERROR_LINE)]
    assert len(errors) == counts["failed"], errors

    print(f"\n{len(mutants)} mutants of {len(EXAMPLES)} examples, one load in {elapsed:.1f} s:")
    for kind in ("truncation", "header", "huge count", "bit flip"):
        by_status = {s: n for (k, s), n in sorted(outcomes.items()) if k == kind}
        print(f"  {kind:10}  " + ", ".join(f"{n} {s}" for s, n in by_status.items()))


def test_huge_map_defs_are_refused_quickly(
    compile_bpf: Callable[..., Path],
    source_dir: Path,
    bpffs: Path,
    bpfloader_cli: Callable[..., Run],
) -> None:
    """A def asking for 0xffffffff entries, or 4 GiB keys or values: the kernel refuses it
    (ENOMEM, E2BIG, EINVAL), and the map memory ceiling (--max-map-memory, default a quarter
    of RAM) refuses it before, at plan time. Either way: failed alone, on one line naming the
    file and the map, at once."""
    good = place_examples(compile_bpf, source_dir)
    mutants = [m for example in EXAMPLES for m in huge_maps(example, good[example])]
    assert len(mutants) == 3 * (len(EXAMPLES) - 1)  # execsnoop has no map
    for mutant in mutants:
        (source_dir / mutant.file_name).write_bytes(mutant.data)
    started = time.monotonic()
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    elapsed = time.monotonic() - started

    assert "Traceback" not in run.stderr, run.stderr
    assert run.returncode == 0, run.stderr
    summary = f"objects: {len(EXAMPLES)} loaded, 0 skipped, {len(mutants)} failed"
    assert run.stdout.splitlines()[0] == summary, run.stderr
    lines = run.stderr.splitlines()
    print(f"\n{len(mutants)} huge map defs refused in a load of {elapsed:.1f} s:")
    for mutant in mutants:
        path = source_dir / mutant.file_name
        about = [line for line in lines if str(path) in line]
        assert len(about) == 1, about
        (line,) = about
        assert line.startswith(f"{ERROR_LINE}{path}: "), line
        reason = line.removeprefix(f"{ERROR_LINE}{path}: ")
        assert mutant.expected is not None and re.search(mutant.expected, reason), line
        assert not pins_named_for(path.stem, bpffs)
        print(f"  {path.name}: {reason}")
    for example in EXAMPLES:
        assert pins_named_for(example, bpffs)
    assert not (bpffs / STAGING_DIR).exists()
    # Far above what refusing 15 maps takes (under 1 s here); an allocation attempted in
    # earnest would show here first.
    assert elapsed < 30


REGRESSIONS = {
    "sh_info_rel": "{rel}: relocations for section {beyond}, which does not exist",
    "sh_info_rel_other": "{rel}: relocations for section {license}, not for '{code}'",
    "sh_type_rel": "{rel}: section type SHT_PROGBITS is not SHT_REL",
}


@pytest.mark.parametrize("tag", sorted(REGRESSIONS))
def test_relocations_that_reach_no_code_are_refused_by_the_reader(
    compile_bpf: Callable[..., Path], tag: str
) -> None:
    """Regressions: the Android reader ignored a relocation section whose target (sh_info)
    is not its code section, or whose type is no longer SHT_REL; the program then went to the
    kernel unrelocated and the verifier was blamed ("R1 type=scalar expected=map_ptr") for
    what is a corrupt section header."""
    data = compile_bpf("tc_counter.c").read_bytes()
    layout = Layout(data)
    (mutant,) = (m for m in header_corruptions("tc_counter", data, layout) if m.tag == tag)
    license = layout.by_name("license")
    assert license is not None
    expected = REGRESSIONS[tag].format(
        rel=".relschedcls/count",
        beyond=layout.shnum + 100,
        license=license.index,
        code="schedcls/count",
    )
    with pytest.raises(ObjectFormatError) as refused:
        read_object(mutant.data, "x.o")
    assert str(refused.value) == f"x.o: {expected}"
