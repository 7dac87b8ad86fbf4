"""`__ksym` externs, as libbpf resolves them (pure: the target BTF and the kernel's symbol
addresses are values given to `resolve`).

An object's undefined symbols that its BTF puts in the `.ksyms` DATASEC are the kernel's own:

- a typed variable (`extern const struct rq runqueues __ksym;`): a VAR of vmlinux's BTF, else
  of a module's, whose type is compatible (CO-RE's rule); the ld_imm64 that takes its address
  becomes a BPF_PSEUDO_BTF_ID load of the VAR's id, the module's BTF fd in its second half;
- a typeless one (`extern const void _text __ksym;`): its address in /proc/kallsyms, loaded
  as a plain 64-bit constant;
- a kernel function (kfunc, `extern void *bpf_cast_to_kern_ctx(void *) __ksym;`): a FUNC of
  vmlinux's or a module's BTF with a compatible prototype; a call of it becomes a
  BPF_PSEUDO_KFUNC_CALL of the FUNC's id, the offset the index of the module's BTF fd in the
  program's `fd_array` (index 0 is never used: 0 means vmlinux); an ld_imm64 of it
  (`bpf_ksym_exists`) a BPF_PSEUDO_BTF_ID load.

A `__weak` extern this kernel lacks is 0: its address loads as 0, a call of it keeps imm 0,
which the verifier accepts in code it proves dead (`if (bpf_ksym_exists(f)) f();`). Any other
extern this kernel lacks is an error naming it.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.bpftypes import BPF_PSEUDO_BTF_ID
from bpfloader.obj.btf import (
    BTF_VAR_GLOBAL_ALLOCATED,
    MAX_RESOLVE_DEPTH,
    MODIFIERS,
    TYPE,
    Btf,
    BtfError,
    BtfType,
    DatasecRewrite,
    Kind,
)
from bpfloader.obj.core import Budget, CoreError, TargetBtf, types_are_compat
from bpfloader.obj.spec import ExternReference

KSYMS_SECTION = ".ksyms"
BTF_FUNC_GLOBAL = 1
DUMMY_VAR = "dummy_ksym"  # the variable libbpf adds to stand for kfuncs in `.ksyms`
EXTERN_SLOT = 4  # bytes each extern takes in the `.ksyms` DATASEC the kernel is given
MAX_FD_ARRAY = 0x7FFF  # a call's offset is an s16


class KsymKind(Enum):
    VARIABLE = "typed variable"
    TYPELESS = "typeless symbol"
    FUNCTION = "kfunc"


@dataclass(frozen=True)
class Ksym:
    name: str
    kind: KsymKind
    weak: bool
    var_id: int  # its VAR or FUNC in the object's BTF
    type_id: int  # its type there, typedefs and qualifiers skipped (a kfunc: its prototype)


@dataclass(frozen=True, eq=False)
class Ksyms:
    """An object's `__ksym` externs, by name (libbpf's order), the BTF that declares them and
    their DATASEC there."""

    externs: tuple[Ksym, ...]
    btf: Btf
    datasec_id: int

    def named(self, name: str) -> Ksym | None:
        return self._by_name.get(name)

    @functools.cached_property
    def _by_name(self) -> dict[str, Ksym]:  # every relocation asks: one look-up, not a scan
        return {k.name: k for k in self.externs}

    @property
    def needs_kallsyms(self) -> bool:
        return any(k.kind is KsymKind.TYPELESS for k in self.externs)

    @property
    def needs_btf(self) -> bool:
        return any(k.kind is not KsymKind.TYPELESS for k in self.externs)


@dataclass(frozen=True)
class KsymValue:
    """What an extern comes to on one kernel: its BTF id in vmlinux's or `module`'s BTF
    (typed variables and kfuncs), or its address (typeless); `found` False: a __weak extern
    the kernel lacks (0)."""

    found: bool = False
    btf_id: int = 0
    module: str = ""  # '' : vmlinux
    address: int = 0


@dataclass(frozen=True)
class KsymPatch:
    """What the instructions that use an extern become: an ld_imm64's src_reg and its two
    immediates; a call's immediate and offset (its src_reg is always BPF_PSEUDO_KFUNC_CALL)."""

    load_src: int
    load_lo: int
    load_hi: int
    call_imm: int = 0
    call_off: int = 0


def unresolved_patches(ksyms: Ksyms) -> dict[str, KsymPatch]:
    """Every extern as if the kernel lacked it: what `check` relocates with, no kernel asked."""
    return {k.name: KsymPatch(0, 0, 0) for k in ksyms.externs}


def unresolved_call(
    refs: Sequence[ExternReference], patches: Mapping[str, KsymPatch], insn: int
) -> str:
    """What the verifier's refusal at instruction `insn` means where that instruction calls a
    __weak kfunc the kernel lacks ('' where it does not)."""
    for ref in refs:
        if ref.call and ref.insn == insn and not patches[ref.name].call_imm:
            return (
                f"calls __weak kfunc '{ref.name}', which this kernel lacks, where the verifier "
                f"reaches it (guard the call: if (bpf_ksym_exists({ref.name})) ...)"
            )
    return ""


def _error(name: str, reason: str) -> ObjectFormatError:
    return ObjectFormatError(f"extern '{name}' ({KSYMS_SECTION}): {reason}", section=".BTF")


def _skip(btf: Btf, type_id: int) -> int:
    """`type_id` with typedefs and qualifiers skipped; 0 where that leaves void."""
    for _ in range(MAX_RESOLVE_DEPTH):
        t = btf.decode(type_id) if type_id == 0 else btf.type(type_id)
        if t.kind not in MODIFIERS:
            return type_id
        type_id = t.size_or_type
    raise BtfError(f"type {type_id} refers to itself through typedefs or qualifiers")


def read_ksyms(btf: Btf, weak: Mapping[str, bool]) -> Ksyms | None:
    """The `.ksyms` externs of an object whose undefined symbols are `weak` (name -> whether
    `__weak`), or None where its BTF has no `.ksyms` DATASEC."""
    datasec = btf.datasec(KSYMS_SECTION)
    if datasec is None:
        return None
    externs: dict[str, Ksym] = {}
    try:
        for var in datasec.sec_vars:
            t: BtfType = btf.type(var.type)
            if t.kind not in (Kind.VAR, Kind.FUNC):
                raise BtfError(f"entry {t.id} of {KSYMS_SECTION} is a {t.kind.name}, not a VAR")
            if t.name not in weak:
                raise _error(t.name, "not an undefined symbol of the object")
            if t.name in externs:
                raise _error(t.name, f"declared twice in {KSYMS_SECTION}")
            if t.kind is Kind.FUNC:
                proto = btf.type(t.size_or_type)
                if proto.kind is not Kind.FUNC_PROTO:
                    raise _error(t.name, f"its type {proto.id} is not a function prototype")
                kind, type_id = KsymKind.FUNCTION, proto.id
            else:
                type_id = _skip(btf, t.size_or_type)
                kind = KsymKind.VARIABLE if type_id else KsymKind.TYPELESS
            externs[t.name] = Ksym(t.name, kind, weak[t.name], t.id, type_id)
    except BtfError as e:
        raise ObjectFormatError(f"{KSYMS_SECTION}: {e}", section=".BTF") from e
    ordered = tuple(sorted(externs.values(), key=lambda k: k.name.encode()))
    return Ksyms(ordered, btf, datasec.id)


def kallsyms_addresses(text: str, wanted: set[str]) -> dict[str, int]:
    """The addresses of the symbols `wanted` in /proc/kallsyms' text (`ADDR TYPE NAME
    [MODULE]` a line: each name found by `str.find`, not every line split); a name at two
    addresses is an error, as libbpf makes it."""
    found: dict[str, int] = {}
    for name in sorted(wanted):
        for end in ("\n", "\t", " "):
            needle = f" {name}{end}"
            pos = text.find(needle)
            while pos >= 0:
                head = text[text.rfind("\n", 0, pos) + 1 : pos].split()  # ADDR TYPE
                pos = text.find(needle, pos + 1)
                if len(head) != 2 or len(head[1]) != 1:
                    continue
                try:
                    address = int(head[0], 16)
                except ValueError:
                    continue
                known = found.setdefault(name, address)
                if known != address:
                    raise _error(
                        name,
                        f"the kernel has two symbols of that name ({known:#x} and {address:#x})",
                    )
    return found


def resolve(
    ksyms: Ksyms, target: TargetBtf | None, addresses: Mapping[str, int] | None
) -> dict[str, KsymValue]:
    """Each extern's value on the kernel described by `target` (typed variables and kfuncs)
    and `addresses` (typeless symbols, from kallsyms_addresses). An extern of a kind whose
    source is None is left out (a check against another kernel's BTF cannot know its
    addresses)."""
    values: dict[str, KsymValue] = {}
    for k in ksyms.externs:
        if k.kind is KsymKind.TYPELESS:
            if addresses is None:
                continue
            address = addresses.get(k.name)
            if address == 0 and not k.weak:
                raise _error(
                    k.name,
                    "/proc/kallsyms shows its address as 0 (hidden: only root sees addresses, "
                    "and kernel.kptr_restrict=2 hides them from root too)",
                )
            value = KsymValue(True, address=address) if address is not None else KsymValue()
        elif target is None:
            continue
        else:
            value = _resolve_typed(k, ksyms.btf, target)
        if not value.found and not k.weak:
            where = "/proc/kallsyms" if k.kind is KsymKind.TYPELESS else target_name(target)
            raise _error(k.name, f"not in {where} and not __weak")
        values[k.name] = value
    return values


def target_name(target: TargetBtf | None) -> str:
    return f"the BTF of {target.name}" if target is not None else "the kernel's BTF"


def _resolve_typed(k: Ksym, btf: Btf, target: TargetBtf) -> KsymValue:
    """A typed variable or kfunc: the first VAR or FUNC of its name in vmlinux's BTF, else in
    the modules' (each module's own types); its type must be compatible with the object's."""
    kind = Kind.FUNC if k.kind is KsymKind.FUNCTION else Kind.VAR
    try:
        found = _find(target, k.name, kind)
        if found is None:
            return KsymValue()
        module, target_btf, target_id = found
        t = target_btf.type(target_id)
        theirs = t.size_or_type if kind is Kind.FUNC else _skip(target_btf, t.size_or_type)
        if not types_are_compat(btf, k.type_id, target_btf, theirs, Budget()):
            if k.weak and kind is Kind.FUNC:
                return KsymValue()
            what = "prototype" if kind is Kind.FUNC else "type"
            where = f"module {module}" if module else "vmlinux"
            raise _error(
                k.name,
                f"its {what} (type {k.type_id}) is not compatible with the kernel's "
                f"({where} type {theirs})",
            )
    except (BtfError, CoreError) as e:  # the target's BTF, or types nested too deep
        raise _error(k.name, e.reason) from e
    return KsymValue(True, btf_id=target_id, module=module)


def _find(target: TargetBtf, name: str, kind: Kind) -> tuple[str, Btf, int] | None:
    vmlinux = target.vmlinux
    for type_id in target.named(vmlinux, name):
        t = vmlinux.type(type_id)
        if t.kind is kind and t.name == name:
            return "", vmlinux, type_id
    for module, module_btf in target.module_btfs():
        for type_id in target.named(module_btf, name):
            t = module_btf.type(type_id)
            if t.kind is kind and t.name == name:
                return module, module_btf, type_id
    return None


def fd_array_modules(ksyms: Ksyms, values: Mapping[str, KsymValue]) -> tuple[str, ...]:
    """The modules whose BTF fds a program's `fd_array` holds, from index 1 on: one per module
    of a kfunc, in the externs' order (as libbpf numbers them)."""
    modules: list[str] = []
    for k in ksyms.externs:
        value = values.get(k.name)
        if k.kind is KsymKind.FUNCTION and value and value.module and value.module not in modules:
            modules.append(value.module)
    if len(modules) >= MAX_FD_ARRAY:
        raise _error(ksyms.externs[-1].name, f"kfuncs of more than {MAX_FD_ARRAY} modules")
    return tuple(modules)


def patches(
    ksyms: Ksyms, values: Mapping[str, KsymValue], module_fds: Mapping[str, int]
) -> dict[str, KsymPatch]:
    """Each extern's instruction patch, given the BTF fd of each module an extern lives in."""
    index = {m: i + 1 for i, m in enumerate(fd_array_modules(ksyms, values))}
    found: dict[str, KsymPatch] = {}
    for k in ksyms.externs:
        value = values.get(k.name, KsymValue())
        if not value.found:
            found[k.name] = KsymPatch(0, 0, 0)
        elif k.kind is KsymKind.TYPELESS:
            address = value.address & (1 << 64) - 1
            found[k.name] = KsymPatch(0, address & 0xFFFFFFFF, address >> 32)
        else:
            fd = module_fds[value.module] if value.module else 0
            call_off = index.get(value.module, 0) if k.kind is KsymKind.FUNCTION else 0
            found[k.name] = KsymPatch(BPF_PSEUDO_BTF_ID, value.btf_id, fd, value.btf_id, call_off)
    return found


def btf_rewrite(btf: Btf, ksyms: Ksyms) -> DatasecRewrite:
    """libbpf's rewrite of `.ksyms` for the kernel, which takes no extern VAR or FUNC and only
    VARs in a DATASEC: every variable becomes a global 4-byte int; every kfunc a global
    function whose unnamed parameters get the dummy variable's name, its DATASEC entry the
    dummy variable (a VAR `dummy_ksym` of that int type, appended to the BTF); entries of 4
    bytes each, in their order."""
    int_id = next((t.id for t in btf.of_kind(Kind.INT) if btf.int_encoding(t)[2] == 32), 0)
    datasec = btf.type(ksyms.datasec_id)
    has_funcs = any(k.kind is KsymKind.FUNCTION for k in ksyms.externs)
    dummy_id = btf.end_id if has_funcs else 0
    dummy_name = btf.string_offset(DUMMY_VAR)
    found: list[tuple[int, bytes]] = []
    entries = []
    for i, var in enumerate(datasec.sec_vars):
        t = btf.type(var.type)
        if t.kind is Kind.FUNC:
            found.append((t.record + 4, struct.pack("<I", (t.info & ~0xFFFF) | BTF_FUNC_GLOBAL)))
            proto = btf.type(t.size_or_type)
            for j, (name_off, type_id) in enumerate(btf.param_records(proto)):
                if type_id and not name_off:
                    found.append((proto.record + TYPE.size + 8 * j, struct.pack("<I", dummy_name)))
            entries.append((dummy_id, EXTERN_SLOT * i, EXTERN_SLOT))
        else:  # its type, then its linkage: a global int
            found.append((t.record + 8, struct.pack("<II", int_id, BTF_VAR_GLOBAL_ALLOCATED)))
            entries.append((t.id, EXTERN_SLOT * i, EXTERN_SLOT))
    return DatasecRewrite(
        ksyms.datasec_id,
        tuple(entries),
        EXTERN_SLOT * len(entries),
        tuple(found),
        (DUMMY_VAR, int_id) if has_funcs else None,
    )
