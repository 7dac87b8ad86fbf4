"""Android's 2026 object format (pure): defs in `.android_maps` and `.android_progs` that carry
the whole pin path, maps declared in `.maps` beside them, code in `TYPE/NAME$VER` sections.

The format, as Android's 2026 headers emit it and its loader (NetBpfLoad) reads it:

- `.android_maps`: 192-byte defs (`struct bpf_map_def`): type, key and value sizes,
  max_entries, flags, uid, gid, mode, the Android API level range (`min_api_level_full`,
  `max_api_level_full`; `bpfloader_min_ver`/`max_ver` in an earlier copy of the header, the
  same words), the kernel range, `create_location[70]`, `pin_location[70]` and `name_idx`: the
  map's name is `pin_location + name_idx`, the C variable of its `.maps` definition.
- `.android_progs`: 180-byte defs (`struct bpf_prog_def`): program and attach type, uid, gid,
  the kernel range, optional, the API level range, the two locations and `name_idx` (the name
  is `TYPE_NAME`). A code section's program is its first function (`TYPE_NAME_VER`), and its
  def the `.android_progs` symbol `<function>_def`.
- `pin_location` is the path Android pins at (`/sys/fs/bpf/tethering/map_test_foo`): under
  the pin root, the part after `/sys/fs/bpf/`. `create_location` is where Android pins first
  (to give the pin its SELinux label), renaming into place: the loader's staging directory
  does that here, and the field is only checked.

The rest of the object is libbpf's: the `.maps` definitions (with their BTF), relocations,
subprograms (the `@funcs` builds), global data. It is read by libbpf_reader.py with each
program's type given by its def, and this module then lays the defs over the spec: owners,
gates, pin paths, the program's kernel name, the map's type and flags (the def's, as Android's
loader sets them). A map without a def (global data, or a `.maps` entry alone) is pinned
beside the object's first def, `map_OBJ_NAME`, root's 0600: Android's loader creates it
unpinned, where no other process can reach it and a reload cannot keep it.
"""

from __future__ import annotations

import dataclasses
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.bpftypes import ProgType
from bpfloader.obj.elf import STT_FUNC, STT_OBJECT, ElfObject, Section, Symbol
from bpfloader.obj.libbpf_sections import SectionDef
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.spec import PROGRAM_PIN_MODE, Gates, ObjectSpec, ObjectStyle

MAPS_SECTION = ".android_maps"
PROGS_SECTION = ".android_progs"
SECTIONS = (MAPS_SECTION, PROGS_SECTION)
LOCATION_SIZE = 70  # BPF_DEF_CHAR_ARRAY_SIZE
BPFFS = "/sys/fs/bpf/"
# type, key_size, value_size, max_entries, map_flags, uid, gid, mode, min/max API level
# (signed), min/max kver, create_location, pin_location, name_idx: 192 bytes.
MAP_DEF = struct.Struct(f"<8I2i2I{LOCATION_SIZE}s{LOCATION_SIZE}sI")
# type, attach_type, uid, gid, min/max kver, optional, 3 pad, min/max API level, the
# locations, name_idx: 180 bytes.
PROG_DEF = struct.Struct(f"<6I?3x2i{LOCATION_SIZE}s{LOCATION_SIZE}sI")
DEF_SUFFIX = "_def"


@dataclass(frozen=True)
class Location:
    """A def's pin: its path under the pin root, its name (`pin_location + name_idx`), and
    the object's name that Android's header put in it (BPF_OBJ_NAME)."""

    path: str
    name: str
    object_name: str


@dataclass(frozen=True)
class MapDef:
    symbol: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    owner: Ownership
    gates: Gates
    location: Location


@dataclass(frozen=True)
class ProgDef:
    type: ProgType
    attach_type: int
    owner: Ownership
    gates: Gates
    optional: bool
    location: Location


def _error(reason: str, section: str) -> ObjectFormatError:
    return ObjectFormatError(reason, section=section)


def _string(field: bytes, what: str, section: str) -> str:
    end = field.find(b"\0")
    if end < 0:
        raise _error(f"{what} is not NUL-terminated within {LOCATION_SIZE} bytes", section)
    try:
        return field[:end].decode("ascii")
    except UnicodeDecodeError as e:
        raise _error(f"{what} is not ASCII: {field[:end]!r}", section) from e


def _location(create: bytes, pin: bytes, name_idx: int, kind: str, what: str) -> Location:
    """The def's pin under the pin root, checked: a path under /sys/fs/bpf/, its name past
    `name_idx` within the pin's last component, after `map_OBJ_` or `prog_OBJ_`."""
    section = MAPS_SECTION if kind == "map" else PROGS_SECTION
    pin_location = _string(pin, f"{what}: pin_location", section)
    create_location = _string(create, f"{what}: create_location", section)
    for label, value in (("pin_location", pin_location), ("create_location", create_location)):
        if value and not value.startswith(BPFFS):
            raise _error(f"{what}: {label} '{value}' is not under {BPFFS}", section)
    if not pin_location:
        raise _error(f"{what}: pin_location is empty", section)
    relative = pin_location[len(BPFFS) :]
    start = len(pin_location) - len(os.path.basename(pin_location))
    prefix = f"{kind}_"
    name = pin_location[name_idx:] if start < name_idx < len(pin_location) else ""
    stem = pin_location[start:name_idx]
    if not name or not stem.startswith(prefix) or not stem.endswith("_") or stem == prefix:
        raise _error(
            f"{what}: name_idx {name_idx} does not point past '{prefix}OBJ_' in pin_location "
            f"'{pin_location}'",
            section,
        )
    return Location(relative, name, stem[len(prefix) : -1])


def _owner(uid: int, gid: int, mode: int, what: str, section: str) -> Ownership:
    if mode & ~0o777:  # as for classic defs (defs.py): no setuid, setgid or sticky pin
        raise _error(f"{what}: mode {mode:#o} has bits beyond 0777", section)
    return Ownership(uid, gid, mode)


def _defs(elf: ElfObject, name: str, size: int, what: str) -> list[tuple[Symbol, bytes]]:
    """The defs of a section and the symbol naming each: every def named, by its offset."""
    section = elf.section(name)
    if section is None:
        return []
    data = section.data
    if len(data) % size:
        raise _error(f"{len(data)} bytes is not a whole number of {size}-byte {what}s", name)
    by_offset: dict[int, Symbol] = {}
    for symbol in elf.symbols_in(section.index):
        if symbol.type != STT_OBJECT:
            continue
        if symbol.value % size or symbol.value >= len(data):
            raise _error(f"{what} '{symbol.name}' at offset {symbol.value} is not on a def", name)
        if symbol.value in by_offset:
            raise _error(
                f"{what}s '{by_offset[symbol.value].name}' and '{symbol.name}' share one def", name
            )
        by_offset[symbol.value] = symbol
    found = []
    for offset in range(0, len(data), size):
        named = by_offset.get(offset)
        if named is None:
            raise _error(f"the {what} at offset {offset} has no symbol naming it", name)
        found.append((named, data[offset : offset + size]))
    return found


def read_map_defs(elf: ElfObject) -> dict[str, MapDef]:
    """`.android_maps`, by map name (`pin_location + name_idx`)."""
    defs: dict[str, MapDef] = {}
    for symbol, raw in _defs(elf, MAPS_SECTION, MAP_DEF.size, "map def"):
        (kind, key, value, entries, flags, uid, gid, mode, min_api, max_api, min_kver, max_kver,
         create, pin, name_idx) = MAP_DEF.unpack(raw)  # fmt: skip
        what = f"map def '{symbol.name}'"
        location = _location(create, pin, name_idx, "map", what)
        if location.name in defs:
            raise _error(f"two map defs name map '{location.name}'", MAPS_SECTION)
        gates = Gates(min_kver, max_kver, min_api_level=min_api, max_api_level=max_api)
        owner = _owner(uid, gid, mode, what, MAPS_SECTION)
        defs[location.name] = MapDef(
            symbol.name, kind, key, value, entries, flags, owner, gates, location
        )
    return defs


def read_prog_defs(elf: ElfObject) -> dict[str, ProgDef]:
    """`.android_progs`, by the symbol of each def (`<function>_def`)."""
    defs: dict[str, ProgDef] = {}
    for symbol, raw in _defs(elf, PROGS_SECTION, PROG_DEF.size, "program def"):
        (kind, attach, uid, gid, min_kver, max_kver, optional, min_api, max_api, create, pin,
         name_idx) = PROG_DEF.unpack(raw)  # fmt: skip
        what = f"program def '{symbol.name}'"
        try:
            prog_type = ProgType(kind)
        except ValueError as e:
            raise _error(f"{what}: unknown program type {kind}", PROGS_SECTION) from e
        location = _location(create, pin, name_idx, "prog", what)
        gates = Gates(min_kver, max_kver, min_api_level=min_api, max_api_level=max_api)
        owner = _owner(uid, gid, PROGRAM_PIN_MODE, what, PROGS_SECTION)
        defs[symbol.name] = ProgDef(prog_type, attach, owner, gates, bool(optional), location)
    return defs


def code_sections(elf: ElfObject) -> list[Section]:
    """The sections that hold programs: code, but `.text` (subprograms)."""
    return [s for s in elf.sections if s.executable and s.size and s.name != ".text"]


def program_defs(elf: ElfObject, defs: Mapping[str, ProgDef]) -> dict[str, ProgDef]:
    """Each code section's program (its first function, as Android's loader takes it) and
    its def (`<function>_def`); a code section without one is an error."""
    found: dict[str, ProgDef] = {}
    for section in code_sections(elf):
        functions = [s for s in elf.symbols_in(section.index) if s.type == STT_FUNC]
        if not functions:
            raise _error("code without a function symbol", section.name)
        first = min(functions, key=lambda s: s.value)
        program_def = defs.get(first.name + DEF_SUFFIX)
        if program_def is None:
            raise _error(
                f"program '{first.name}' has no def '{first.name}{DEF_SUFFIX}' in {PROGS_SECTION}",
                section.name,
            )
        found[first.name] = program_def
    return found


def section_types(programs: Mapping[str, ProgDef]) -> dict[str, SectionDef]:
    """What libbpf_reader.py is told of each program's type (its def's, not its section's)."""
    return {name: SectionDef(name, ProgType(d.type), d.attach_type) for name, d in programs.items()}


def lay_over(
    spec: ObjectSpec, map_defs: Mapping[str, MapDef], programs: Mapping[str, ProgDef]
) -> ObjectSpec:
    """The spec libbpf_reader.py read, with the defs laid over it (see the module's doc)."""
    for name, map_def in map_defs.items():
        found = spec.map_named(name)
        if found is None:
            raise _error(
                f"map def '{map_def.symbol}' names map '{name}', which .maps does not define",
                MAPS_SECTION,
            )
        for field_name, declared in (
            ("key_size", map_def.key_size),
            ("value_size", map_def.value_size),
            ("max_entries", map_def.max_entries),
        ):
            if getattr(found, field_name) != declared:
                raise _error(
                    f"map '{name}': its def says {field_name} {declared}, .maps says "
                    f"{getattr(found, field_name)}",
                    MAPS_SECTION,
                )
    locations = [d.location for d in map_defs.values()] + [d.location for d in programs.values()]
    beside = locations[0] if locations else None
    if beside is None:
        raise _error("no map or program def", MAPS_SECTION)
    directory = os.path.dirname(beside.path)
    maps = []
    for m in spec.maps:
        found_def = map_defs.get(m.name)
        if found_def is None:
            path = os.path.join(directory, f"map_{beside.object_name}_{m.name}")
            maps.append(dataclasses.replace(m, pin_path=path))
            continue
        maps.append(
            dataclasses.replace(
                m,
                type=found_def.type,
                flags=found_def.flags,
                owner=found_def.owner,
                gates=found_def.gates,
                pin_path=found_def.location.path,
            )
        )
    progs = []
    for p in spec.programs:
        program_def = programs.get(p.name)
        if program_def is None:  # a second global function in a program's section
            raise _error(
                f"function '{p.name}' is not its section's first: Android's format has one "
                "program per code section (subprograms are static, or in .text)",
                p.section,
            )
        progs.append(
            dataclasses.replace(
                p,
                type=program_def.type,
                expected_attach_type=program_def.attach_type,
                owner=program_def.owner,
                gates=program_def.gates,
                optional=program_def.optional,
                pin_path=program_def.location.path,
                kernel_name=program_def.location.name,
            )
        )
    return dataclasses.replace(
        spec, maps=tuple(maps), programs=tuple(progs), style=ObjectStyle.ANDROID_2026
    )
