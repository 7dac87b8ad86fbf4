"""Helpers for the libbpf-style tests: compiling against libbpf's headers, loading the same
object with bpftool (libbpf) and with bpfloader, and describing what the kernel then holds."""

from __future__ import annotations

import ctypes
import json
import os
import re
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elftools.elf.elffile import ELFFile

from bpfloader.kernel import pins as kpins
from bpfloader.kernel.syscall import Cmd, bpf
from tests.conftest import Compile, pins_in

LIBBPF_FLAGS = ("-g",)  # BTF; the sources include <bpf/bpf_helpers.h> themselves


def libbpf_object(compile_bpf: Compile, source: str, name: str | None = None) -> Path:
    return compile_bpf(source, name, *LIBBPF_FLAGS)


def bpftool(*args: str | Path) -> Any:
    done = subprocess.run(
        ["bpftool", "-j", *map(str, args)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"bpftool {args}: {done.stdout} {done.stderr}"
    return json.loads(done.stdout)


def bpftool_text(*args: str | Path) -> str:
    done = subprocess.run(["bpftool", *map(str, args)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"bpftool {args}: {done.stdout} {done.stderr}"
    return done.stdout


def bpftool_loadall(
    obj: Path, bpffs: Path, *, pinmaps: bool = True
) -> subprocess.CompletedProcess[str]:
    """`bpftool prog loadall OBJ BPFFS/libbpf/progs [pinmaps BPFFS/libbpf/maps]`, in a private
    mount namespace whose /sys/fs/bpf is the test's bpffs: libbpf pins maps declared
    LIBBPF_PIN_BY_NAME under /sys/fs/bpf, which must not be the host's."""
    (bpffs / "libbpf").mkdir(exist_ok=True)
    command = ["bpftool", "prog", "loadall", str(obj), str(bpffs / "libbpf" / "progs")]
    if pinmaps:
        command += ["pinmaps", str(bpffs / "libbpf" / "maps")]
    script = 'mount --bind "$1" /sys/fs/bpf && shift && exec "$@"'
    return subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
            str(bpffs),
            *command,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@dataclass
class Loaded:
    """What one loader left in the kernel: programs and maps by kernel name."""

    programs: dict[str, dict[str, Any]] = field(default_factory=dict)
    maps: dict[str, dict[str, Any]] = field(default_factory=dict)
    program_pins: dict[str, Path] = field(default_factory=dict)


def describe(program_pins: list[Path], map_pins: list[Path]) -> Loaded:
    """The programs pinned, and every map they use or that is pinned, from bpftool."""
    loaded = Loaded()
    map_ids: set[int] = set()
    for pin in program_pins:
        info = bpftool("prog", "show", "pinned", pin)
        loaded.programs[info["name"]] = info
        loaded.program_pins[info["name"]] = pin
        map_ids.update(info.get("map_ids", []))
    for pin in map_pins:
        map_ids.add(bpftool("map", "show", "pinned", pin)["id"])
    for map_id in map_ids:
        info = bpftool("map", "show", "id", map_id)
        loaded.maps[info["name"]] = info
    return loaded


def loaded_by_bpftool(bpffs: Path) -> Loaded:
    """What `bpftool_loadall(obj, bpffs)` pinned (its programs, and its maps if it pinned any)."""
    found = bpffs / "libbpf"
    maps = sorted((found / "maps").iterdir()) if (found / "maps").exists() else []
    return describe(sorted((found / "progs").iterdir()), maps)


def loaded_by_bpfloader(pin_root: Path) -> Loaded:
    """What bpfloader pinned under `pin_root` (prog_* and map_* pins, at any depth)."""
    pins = sorted(pin_root / p for p in pins_in(pin_root))
    return describe(
        [p for p in pins if p.name.startswith("prog_")],
        [p for p in pins if p.name.startswith("map_")],
    )


MAP_FIELDS = ("type", "bytes_key", "bytes_value", "max_entries", "flags", "frozen")
PROGRAM_FIELDS = ("type", "tag", "gpl_compatible")


def assert_same_programs_and_maps(ours: Loaded, theirs: Loaded, *, btf: bool = False) -> None:
    """The kernel holds the same programs (PROGRAM_FIELDS, xlated code with its source lines)
    and maps (by kernel name: MAP_FIELDS) from either loader; with `btf`, maps carry BTF in
    both or in neither."""
    assert sorted(ours.programs) == sorted(theirs.programs)
    assert sorted(ours.maps) == sorted(theirs.maps)
    for name, their in theirs.programs.items():
        our = ours.programs[name]
        for field_name in PROGRAM_FIELDS:
            assert our[field_name] == their[field_name], f"program {name}: {field_name}"
        assert xlated(ours.program_pins[name]) == xlated(theirs.program_pins[name]), name
    for name, their in theirs.maps.items():
        for field_name in MAP_FIELDS:
            got = ours.maps[name].get(field_name)
            assert got == their.get(field_name), f"map {name}: {field_name}"
        if btf:
            assert ("btf_id" in ours.maps[name]) == ("btf_id" in their), f"map {name}: BTF"


_IDS = re.compile(r"(map\[id:)\d+|(\bid )\d+")


def xlated(pin: Path | int) -> str:
    """The program (pinned at `pin`, or of that id) as the kernel holds it, with source lines
    (its line_info) and function names (its func_info), map ids left out."""
    where = ("id", str(pin)) if isinstance(pin, int) else ("pinned", pin)
    return _IDS.sub(
        lambda m: (m.group(1) or m.group(2)) + "N",
        bpftool_text("prog", "dump", "xlated", *where),
    )


def map_dump(map_id: int) -> Any:
    return bpftool("map", "dump", "id", map_id)


class _TestRunAttr(ctypes.Structure):
    """BPF_PROG_TEST_RUN's part of union bpf_attr, up to what a plain run needs."""

    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("retval", ctypes.c_uint32),
        ("data_size_in", ctypes.c_uint32),
        ("data_size_out", ctypes.c_uint32),
        ("data_in", ctypes.c_uint64),
        ("data_out", ctypes.c_uint64),
        ("repeat", ctypes.c_uint32),
        ("duration", ctypes.c_uint32),
    ]


# An Ethernet + IPv4 + UDP packet, 64 bytes: what socket, tc and XDP programs run on here.
PACKET = bytes.fromhex(
    "ffffffffffff"
    "020000000001"
    "0800"  # Ethernet
    "4500002e00000000401100000a0000010a000002"  # IPv4, UDP, 10.0.0.1 -> 10.0.0.2
    "30393039001a0000"  # UDP 12345 -> 12345
) + bytes(18)


def run_pinned(pin: Path, packet: bytes = PACKET) -> int:
    """Run the pinned program once on `packet` (BPF_PROG_TEST_RUN); its return value."""
    fd = kpins.open_pinned(str(pin))
    try:
        data_in = ctypes.create_string_buffer(packet, len(packet))
        data_out = ctypes.create_string_buffer(len(packet) + 256)
        attr = _TestRunAttr(
            prog_fd=fd,
            data_size_in=len(packet),
            data_size_out=len(data_out),
            data_in=ctypes.addressof(data_in),
            data_out=ctypes.addressof(data_out),
            repeat=1,
        )
        bpf(Cmd.PROG_TEST_RUN, attr)
        return int(attr.retval)
    finally:
        os.close(fd)


# -- corrupting a good object (tests/bpf/libbpf_bad.c built without flags) ---------------------

SYM_SIZE = 24  # Elf64_Sym
_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}  # BTF kind -> bytes after the record
_PER_ITEM = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}  # BTF kind -> bytes per vlen item


class Patch:
    """An object's bytes, with where its sections and symbols are, to corrupt them."""

    def __init__(self, path: Path):
        self.data = bytearray(path.read_bytes())
        with path.open("rb") as f:
            elf = ELFFile(f)
            self.sections = {s.name: (s["sh_offset"], s["sh_size"]) for s in elf.iter_sections()}
            symtab = elf.get_section_by_name(".symtab")
            self.symbols = {
                s.name: symtab["sh_offset"] + i * SYM_SIZE
                for i, s in enumerate(symtab.iter_symbols())
            }


def truncated_btf(path: Path) -> bytes:
    """.BTF whose header says its types run 4 KiB past the section's end."""
    patch = Patch(path)
    start, _ = patch.sections[".BTF"]
    type_len = struct.unpack_from("<I", patch.data, start + 12)[0]
    struct.pack_into("<I", patch.data, start + 12, type_len + 4096)
    return bytes(patch.data)


def _btf_record(patch: Patch, kind: int, name: str) -> tuple[int, int]:
    """Where in the file the .BTF record of type `name` of `kind` starts, and its id."""
    start, _ = patch.sections[".BTF"]
    header = struct.unpack_from("<IIIII", patch.data, start + 4)
    hdr_len, type_off, type_len, str_off, str_len = header
    types = start + hdr_len + type_off
    strings = bytes(patch.data[start + hdr_len + str_off : start + hdr_len + str_off + str_len])
    wanted = strings.index(b"\0" + name.encode() + b"\0") + 1
    pos, type_id = types, 1
    while pos < types + type_len:
        name_off, info, _ = struct.unpack_from("<III", patch.data, pos)
        found, vlen = info >> 24 & 0x1F, info & 0xFFFF
        if found == kind and name_off == wanted:
            return pos, type_id
        pos += 12 + _FIXED.get(found, 0) + vlen * _PER_ITEM.get(found, 0)
        type_id += 1
    raise AssertionError(f"no BTF type {name} of kind {kind} in the object")


def self_referential_btf(path: Path) -> tuple[bytes, int]:
    """.BTF whose typedef __u32 names itself; and that typedef's id."""
    patch = Patch(path)
    pos, type_id = _btf_record(patch, 8, "__u32")  # TYPEDEF
    struct.pack_into("<I", patch.data, pos + 8, type_id)
    return bytes(patch.data), type_id


def btf_the_kernel_refuses(path: Path) -> bytes:
    """.BTF that parses, but whose variable LICENSE has a linkage no kernel knows (7)."""
    patch = Patch(path)
    pos, _ = _btf_record(patch, 14, "LICENSE")  # VAR
    struct.pack_into("<I", patch.data, pos + 12, 7)
    return bytes(patch.data)


def relocation_into_a_missing_section(path: Path) -> bytes:
    """The symbol `seen`, which code refers to, moved to section 127 (there are ~30)."""
    patch = Patch(path)
    struct.pack_into("<H", patch.data, patch.symbols["seen"] + 6, 0x7F)  # st_shndx
    return bytes(patch.data)
