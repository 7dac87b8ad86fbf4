"""An object's BTF and BTF.ext, read from its ELF and fixed up for the kernel (pure).

Both object formats carry them when compiled with `clang -g`: the kernel then gets the types
of maps and functions, and the source line of each instruction, which its verifier quotes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.btf import (
    Btf,
    BtfError,
    BtfExt,
    BtfType,
    Kind,
    parse_btf,
    parse_btf_ext,
)
from bpfloader.obj.elf import SHN_UNDEF, STB_WEAK, STT_OBJECT, ElfObject
from bpfloader.obj.kconfig import KCONFIG_SECTION, Kconfig, read_kconfig
from bpfloader.obj.ksyms import KSYMS_SECTION, Ksyms, btf_rewrite, read_ksyms
from bpfloader.obj.spec import FuncInfo, LineInfo

KV_PAIR_PREFIX = "____btf_map_"  # BPF_ANNOTATE_KV_PAIR's struct: the types of an Android map


@dataclass(frozen=True)
class ObjectBtf:
    btf: Btf
    ext: BtfExt | None
    fixed_up: bytes  # what BPF_BTF_LOAD gets
    kv_pairs: Mapping[str, BtfType]  # BPF_ANNOTATE_KV_PAIR structs by map name
    kconfig: Kconfig | None = None  # `__kconfig` externs (libbpf-style objects only)
    ksyms: Ksyms | None = None  # `__ksym` externs (libbpf-style objects only)

    def map_types(self, name: str, key_size: int, value_size: int) -> tuple[int, int]:
        """The BTF key and value type ids of an Android-format map, from its annotation (the
        struct ____btf_map_NAME: key type first, value type second, as Android's loader reads
        it in getKeyValueTids); (0, 0) when the map has none. Sizes that disagree with the
        map's def are an error, as they are for Android's loader."""
        annotation = self.kv_pairs.get(name)
        if annotation is None:
            return 0, 0
        what = f"map '{name}': BTF annotation {KV_PAIR_PREFIX}{name}"
        if len(annotation.members) < 2:
            raise ObjectFormatError(f"{what} has no key and value members", section=".BTF")
        key, value = annotation.members[0].type, annotation.members[1].type
        try:
            sizes = self.btf.size_of(key), self.btf.size_of(value)
        except BtfError as e:
            raise ObjectFormatError(f"{what}: {e}", section=".BTF") from e
        if sizes != (key_size, value_size):
            raise ObjectFormatError(
                f"{what} has a {sizes[0]}-byte key and a {sizes[1]}-byte value; its def says "
                f"{key_size} and {value_size}",
                section=".BTF",
            )
        return key, value

    def records(
        self, section: str, start: int, end: int
    ) -> tuple[tuple[FuncInfo, ...], tuple[LineInfo, ...]]:
        """The function and line records of instructions start..end of a section, as indexes
        from `start` (for a program that is a whole section: 0..its length)."""
        if self.ext is None:
            return (), ()
        funcs = tuple(
            FuncInfo(f.insn - start, f.type_id)
            for f in self.ext.func_info.get(section, [])
            if start <= f.insn < end
        )
        lines = tuple(
            LineInfo(x.insn - start, x.file_name_off, x.line_off, x.line_col)
            for x in self.ext.line_info.get(section, [])
            if start <= x.insn < end
        )
        return funcs, lines


def _kv_pairs(btf: Btf) -> dict[str, BtfType]:
    """The map annotation structs by map name: one pass over the types, not one per map."""
    found: dict[str, BtfType] = {}
    for t in btf.of_kind(Kind.STRUCT):
        if t.name.startswith(KV_PAIR_PREFIX):
            found.setdefault(t.name.removeprefix(KV_PAIR_PREFIX), t)
    return found


def read_object_btf(
    elf: ElfObject, *, core: bool = False, externs: bool = False
) -> ObjectBtf | None:
    """The object's BTF, or None where it has none. Malformed BTF and, where the reader does
    not take them (`core`, `externs`: libbpf-style objects do), CO-RE relocations and
    `__kconfig` and `__ksym` externs are ObjectFormatErrors."""
    section = elf.section(".BTF")
    if section is None:
        return None
    try:
        btf = parse_btf(section.data)
    except BtfError as e:
        raise ObjectFormatError(str(e), section=".BTF") from e
    kconfig = ksyms = None
    if externs:
        weak = {s.name: s.bind == STB_WEAK for s in elf.symbols if s.shndx == SHN_UNDEF and s.name}
        kconfig = read_kconfig(btf, weak)
        ksyms = read_ksyms(btf, weak)
    else:
        for name in (KSYMS_SECTION, KCONFIG_SECTION):
            datasec = btf.datasec(name)
            if datasec is not None:
                raise ObjectFormatError(
                    f"{_extern_name(btf, datasec)}({name}): externs are supported in "
                    "libbpf-style objects only",
                    section=".BTF",
                )
    fixed_up = _fixed_up(elf, btf, kconfig, ksyms)
    return ObjectBtf(btf, _ext(elf, btf, core), fixed_up, _kv_pairs(btf), kconfig, ksyms)


def _extern_name(btf: Btf, datasec: BtfType) -> str:
    """`extern 'NAME' ` for the first variable of an extern section ('' where it names none)."""
    try:
        return next((f"extern '{btf.type(v.type).name}' " for v in datasec.sec_vars), "")
    except BtfError:
        return ""


def _ext(elf: ElfObject, btf: Btf, core: bool) -> BtfExt | None:
    section = elf.section(".BTF.ext")
    if section is None:
        return None
    try:
        ext = parse_btf_ext(section.data, btf)
    except BtfError as e:
        raise ObjectFormatError(str(e), section=".BTF.ext") from e
    for name, relos in ext.core_relos.items():
        if relos and not core:
            raise ObjectFormatError(
                f"section '{name}' has {len(relos)} CO-RE relocation(s): CO-RE (BPF_CORE_READ, "
                "preserve_access_index, vmlinux.h) is supported in libbpf-style objects only",
                section=".BTF.ext",
            )
    return ext


def _fixed_up(elf: ElfObject, btf: Btf, kconfig: Kconfig | None, ksyms: Ksyms | None) -> bytes:
    """The BTF the kernel gets; `.kconfig`'s DATASEC laid out as libbpf lays it out, its
    variables no longer extern, and `.ksyms` rewritten as libbpf rewrites it (the kernel
    takes no extern in a DATASEC)."""
    sizes = {s.name: s.size for s in elf.sections if s.index}
    offsets: dict[str, dict[str, int]] = {}
    allocated: tuple[int, ...] = ()
    if kconfig is not None:
        sizes[KCONFIG_SECTION] = kconfig.size
        offsets[KCONFIG_SECTION] = kconfig.offsets()
        allocated = kconfig.var_ids
    for symbol in elf.symbols.of_type(STT_OBJECT):
        section = elf.section_at(symbol.section) if symbol.section is not None else None
        if section is not None:
            offsets.setdefault(section.name, {})[symbol.name] = symbol.value
    try:
        rewrite = btf_rewrite(btf, ksyms) if ksyms is not None else None
        return btf.fixed_up(sizes, offsets, allocated, rewrite)
    except BtfError as e:
        raise ObjectFormatError(str(e), section=".BTF") from e
