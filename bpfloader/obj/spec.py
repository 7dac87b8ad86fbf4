"""Specs: what an object file declares, before anything touches the kernel."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from bpfloader.obj.bpftypes import STRUCT_OPS_TARGET, MapType, ProgType
from bpfloader.obj.kver import KVER_INF
from bpfloader.obj.ownership import Ownership

if TYPE_CHECKING:
    from bpfloader.obj.core import CoreRelocation, ObjectCore
    from bpfloader.obj.kconfig import Kconfig
    from bpfloader.obj.ksyms import Ksyms
    from bpfloader.obj.struct_ops import StructOps

DEFAULT_LOADER_MIN = 0
DEFAULT_LOADER_MAX = 0x10000
ANDROID_API_MIN = -(1 << 31)  # a 2026 def's API levels are signed; the widest range is the default
ANDROID_API_MAX = (1 << 31) - 1
PROGRAM_PIN_MODE = 0o440


@dataclass(frozen=True)
class Gates:
    """When a def applies: min <= version < max, and not on the platforms it ignores. The
    loader version is a classic def's; the Android API level (3100 for S ... 3800 for 27Q2)
    a 2026 def's, which ranges over Android's releases instead."""

    min_kver: int = 0
    max_kver: int = KVER_INF
    min_loader: int = DEFAULT_LOADER_MIN
    max_loader: int = DEFAULT_LOADER_MAX
    ignore_on: int = 0  # the ignore_on_* bit byte of the def
    min_api_level: int = ANDROID_API_MIN
    max_api_level: int = ANDROID_API_MAX


class ObjectStyle(StrEnum):
    ANDROID = "android"  # defs in `maps` and `progs`, Android's section prefixes
    ANDROID_2026 = "android-2026"  # defs in `.android_maps`, `.android_progs`; maps in `.maps`
    LIBBPF = "libbpf"  # BTF-defined maps in `.maps`, libbpf's section names, global data


@dataclass(frozen=True)
class MapSlot:
    """An element a map starts with: key `index` holds the fd of program `target` (a prog
    array) or of map `target` (a map of maps)."""

    index: int
    target: str
    is_program: bool


@dataclass(frozen=True)
class MapSpec:
    name: str
    type: MapType | int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    owner: Ownership
    gates: Gates = field(default_factory=Gates)
    pin_subdir: str = ""
    shared: bool = False
    selinux_context: str = ""
    kernel_name: str = ""  # the name the kernel is given, where it is not `name`
    btf_key_type_id: int = 0  # in the object's BTF; 0: none
    btf_value_type_id: int = 0
    initial_data: bytes | None = None  # global data: the value of element 0
    frozen: bool = False  # read-only data: frozen (BPF_MAP_FREEZE) once initialised
    inner: MapSpec | None = None  # a map of maps: the template of its inner maps
    slots: tuple[MapSlot, ...] = ()
    numa_node: int = 0
    map_extra: int = 0
    pin_path: str = ""  # under the pin root, where the object says it whole (2026 format)
    struct_ops: StructOps | None = None  # a struct_ops map: what it implements (obj/struct_ops.py)

    @property
    def struct_ops_target(self) -> str:
        """What a struct_ops map's pins record as their target: `struct_ops:TYPE` ('' for
        other maps)."""
        return STRUCT_OPS_TARGET + self.struct_ops.type_name if self.struct_ops is not None else ""


@dataclass(frozen=True, slots=True)
class FuncInfo:
    """A function's BTF type (`struct bpf_func_info`), by instruction index: in the object's
    .BTF.ext, of its section; in a ProgramSpec, of its linked program."""

    insn: int
    type_id: int


@dataclass(frozen=True, slots=True)
class LineInfo:
    """The source line of an instruction (`struct bpf_line_info`), indexed as FuncInfo."""

    insn: int
    file_name_off: int
    line_off: int
    line_col: int


@dataclass(frozen=True, slots=True)
class MapReference:
    """Instruction `insn` (a ld_imm64) must be given the fd of map `map_name`, or, where
    `offset` is set, the address of byte `offset` of the map's value (global data)."""

    insn: int
    map_name: str
    offset: int | None = None


@dataclass(frozen=True)
class AttachSpec:
    """Where a program attaches once loaded, in `bpfloader attach`'s target syntax
    (`tracepoint:sched:sched_switch`, `cgroup:/sys/fs/cgroup/x:egress`, `xdp:eth0:driver`); an
    optional one may fail without failing its object. Declared by a policy file."""

    target: str
    optional: bool = False


@dataclass(frozen=True, slots=True)
class ExternReference:
    """Instruction `insn` uses the kernel's symbol `name` (a `__ksym` extern: obj/ksyms.py):
    a call of a kfunc (`call`), or else a ld_imm64 of its address."""

    insn: int
    name: str
    call: bool


@dataclass(frozen=True)
class ProgramSpec:
    section: str
    name: str  # the function: the program's name everywhere (state, journal, status, kernel)
    type: ProgType
    expected_attach_type: int
    instructions: bytes
    map_refs: tuple[MapReference, ...]
    owner: Ownership
    gates: Gates = field(default_factory=Gates)
    optional: bool = False
    pin_subdir: str = ""
    selinux_context: str = ""
    pin_stem: str = ""  # PROGTYPE/PROGNAME for the pin name, where it is not base_section
    func_info: tuple[FuncInfo, ...] = ()  # BTF of each function, by instruction index
    line_info: tuple[LineInfo, ...] = ()  # source line of instructions, by index
    attach_target: str = ""  # tracing programs: the kernel BTF type they attach to
    attach_target_kind: str = ""  # its BTF kind, "FUNC" or "TYPEDEF"
    prog_flags: int = 0
    core_relos: tuple[CoreRelocation, ...] = ()  # CO-RE: applied once the target is known
    pin_path: str = ""  # under the pin root, where the object says it whole (2026 format)
    kernel_name: str = ""  # the name the kernel is given, where it is not `name`
    attach: tuple[AttachSpec, ...] = ()  # where it attaches once loaded (a policy file's)
    extern_refs: tuple[ExternReference, ...] = ()  # `__ksym` uses: given once resolved

    @property
    def base_section(self) -> str:
        """The section without its `$variant` suffix (from the last `$`, as Android's loader
        cuts it): the name its pin carries, shared by the program's variants."""
        return self.section.rsplit("$", 1)[0]

    @property
    def pin_section(self) -> str:
        """What the pin name is made of: `prog_FILENAME_` + this with `/` -> `_`."""
        return self.pin_stem or self.base_section

    @property
    def insn_count(self) -> int:
        return len(self.instructions) // 8


@dataclass(frozen=True)
class ObjectSpec:
    path: str
    license: str
    maps: tuple[MapSpec, ...]
    programs: tuple[ProgramSpec, ...]
    critical: str | None = None  # the CRITICAL(reason) text, if the object is critical
    min_loader: int = DEFAULT_LOADER_MIN
    max_loader: int = DEFAULT_LOADER_MAX
    style: ObjectStyle = ObjectStyle.ANDROID
    btf: bytes | None = None  # the object's BTF, fixed up, for BPF_BTF_LOAD
    core: ObjectCore | None = None  # its CO-RE relocations, resolved once per load (obj/core.py)
    kconfig: Kconfig | None = None  # its `__kconfig` externs: the `kconfig` map's layout
    ksyms: Ksyms | None = None  # its `__ksym` externs: resolved per load (obj/ksyms.py)

    @property
    def is_critical(self) -> bool:
        return self.critical is not None

    @property
    def maps_section(self) -> str:
        """Where the object declares its maps: what an error about a map names."""
        return _MAPS_SECTIONS[self.style]

    def map_named(self, name: str) -> MapSpec | None:
        return next((m for m in self.maps if m.name == name), None)


_MAPS_SECTIONS = {
    ObjectStyle.ANDROID: "maps",
    ObjectStyle.ANDROID_2026: ".android_maps",
    ObjectStyle.LIBBPF: ".maps",
}
