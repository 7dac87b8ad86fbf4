"""Global data: `.data`, `.rodata`, `.bss` and custom `.data.*` / `.rodata.*` sections become
array maps of one element holding the whole section, as libbpf makes them.

Programs reach a variable through a `ld_imm64` of the map's value address plus the variable's
offset (BPF_PSEUDO_MAP_VALUE). `.rodata*` maps are read-only to programs and frozen once
initialised, so the verifier may treat their contents as constants.
"""

from __future__ import annotations

import os

from bpfloader.obj.bpftypes import BPF_F_MMAPABLE, BPF_F_RDONLY_PROG, MapType
from bpfloader.obj.btf import Btf
from bpfloader.obj.elf import SHT_NOBITS, SHT_PROGBITS, Section
from bpfloader.obj.kconfig import KCONFIG_SECTION, Kconfig
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.spec import MapSpec

KERNEL_NAME_MAX = 15  # BPF_OBJ_NAME_LEN less its NUL
SUFFIX_MIN = 7  # len(".rodata"): what the kernel name always keeps room for
KCONFIG_MAP = "kconfig"  # the `.kconfig` map's name, which its pin carries


def is_data_section(section: Section) -> bool:
    if section.size == 0 or section.executable:
        return False
    if section.name == ".bss":
        return section.type == SHT_NOBITS
    return section.type == SHT_PROGBITS and (
        section.name in (".data", ".rodata") or section.name.startswith((".data.", ".rodata."))
    )


def data_map_name(section: str) -> str:
    """The map's name, which its pin carries: `.rodata` -> `rodata`, `.data.x` -> `data_x`."""
    return section[1:].replace(".", "_")


def kernel_map_name(object_path: str, section: str) -> str:
    """The name the kernel shows (bpftool map list), the one libbpf gives: the object's name
    cut to leave room for the section's (`myobj.rodata`), or a custom section's name alone."""
    suffix = section[: max(SUFFIX_MIN, min(len(section), KERNEL_NAME_MAX))]
    if "." in section[1:]:
        return suffix
    obj = os.path.basename(object_path).split(".", 1)[0]
    return obj[: KERNEL_NAME_MAX - max(SUFFIX_MIN, len(suffix))] + suffix


def data_map(section: Section, object_path: str, btf: Btf | None) -> MapSpec:
    read_only = section.name.startswith(".rodata")
    datasec = btf.datasec(section.name) if btf is not None else None
    return MapSpec(
        name=data_map_name(section.name),
        type=MapType.ARRAY,
        key_size=4,
        value_size=section.size,
        max_entries=1,
        flags=BPF_F_MMAPABLE | (BPF_F_RDONLY_PROG if read_only else 0),
        owner=Ownership(),
        kernel_name=kernel_map_name(object_path, section.name),
        btf_value_type_id=datasec.id if datasec is not None else 0,
        initial_data=section.data or bytes(section.size),
        frozen=read_only,
    )


def kconfig_map(kconfig: Kconfig, object_path: str) -> MapSpec:
    """The `.kconfig` map, made as libbpf makes it: read-only data whose value the loader
    computes for the running kernel (obj/kconfig.py), filled in when it is created."""
    return MapSpec(
        name=KCONFIG_MAP,
        type=MapType.ARRAY,
        key_size=4,
        value_size=kconfig.size,
        max_entries=1,
        flags=BPF_F_MMAPABLE | BPF_F_RDONLY_PROG,
        owner=Ownership(),
        kernel_name=kernel_map_name(object_path, KCONFIG_SECTION),
        btf_value_type_id=kconfig.datasec_id,
        frozen=True,
    )
