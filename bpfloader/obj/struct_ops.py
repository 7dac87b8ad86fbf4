"""struct_ops maps, libbpf's rules: a kernel struct of callbacks filled by BPF programs.

An object declares one as a variable of the kernel's struct type in `.struct_ops` (registered
when the map's value is written) or `.struct_ops.link` (registered by a BPF link, which a
reload can swap to a new map in place):

    SEC(".struct_ops.link")
    struct tcp_congestion_ops my_cc = { .ssthresh = (void *)my_ssthresh, .name = "my_cc" };

Read from the object (pure): the variable is a map (`MapSpec.struct_ops`), its bytes and
members, and the program each function pointer holds (from the section's relocations).
Resolved against the kernel's BTF (`resolve`, given the target as a value, as libbpf's
bpf_map__init_kern_struct_ops does): the kernel's struct and its map value type
`bpf_struct_ops_NAME`, the value laid out by member name (members the kernel lacks are
allowed while zero; sizes and kinds must agree), and for each program its `attach_btf_id`
(the struct) and expected attach type (the member's index in the kernel's struct).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from bpfloader.errors import LoaderError, ObjectFormatError
from bpfloader.obj.bpftypes import BPF_F_LINK, MapType
from bpfloader.obj.btf import Btf, BtfError, BtfType, Kind, Member
from bpfloader.obj.elf import STT_OBJECT, Relocation, Section, Symbol
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.spec import MapSpec

STRUCT_OPS_SECTION = ".struct_ops"
STRUCT_OPS_LINK_SECTION = ".struct_ops.link"
SECTIONS = (STRUCT_OPS_SECTION, STRUCT_OPS_LINK_SECTION)
VALUE_PREFIX = "bpf_struct_ops_"  # the kernel's map value type: bpf_struct_ops_tcp_congestion_ops
KEY_SIZE = 4
POINTER_SIZE = 8  # BPF's pointers are 64 bits whatever the host's


class StructOpsError(LoaderError):
    """A struct_ops map that cannot be made as declared (on this kernel)."""


@dataclass(frozen=True)
class StructOpsMember:
    """A member of the object's struct: where it is, and the program its function pointer
    holds ("" for none, or for a member that is not a function pointer)."""

    name: str
    offset: int  # bytes, in the object's struct
    size: int
    kind: Kind  # of its type, typedefs and qualifiers skipped
    bitfield: bool
    program: str = ""


@dataclass(frozen=True)
class StructOps:
    """What a struct_ops map's variable declares: the kernel struct it implements (the
    essential name of its type), its bytes, its members, and whether a link registers it."""

    type_name: str
    data: bytes
    members: tuple[StructOpsMember, ...]
    link: bool

    @property
    def programs(self) -> tuple[str, ...]:
        return tuple(m.program for m in self.members if m.program)


def read_struct_ops(
    btf: Btf | None,
    section: Section,
    symbols: Iterable[Symbol],
    relocations: Iterable[Relocation],
    program_at: Callable[[int, int], str | None],
) -> list[MapSpec]:
    """The struct_ops maps of section `section` (`.struct_ops` or `.struct_ops.link`): one per
    variable of its DATASEC, found where the section's symbol of that name says (the
    compiler leaves the DATASEC's offsets 0, as libbpf's fix-up knows). `program_at(section
    index, byte offset)` names the program that starts there (None: none does)."""
    where = section.name
    if btf is None:
        raise ObjectFormatError(
            "struct_ops maps need the object's BTF (compile with -g)", section=where
        )
    datasec = btf.datasec(where)
    if datasec is None:
        raise ObjectFormatError(f"the object's BTF has no DATASEC {where}", section=where)
    data = section.data
    offsets = {s.name: s.value for s in symbols if s.type == STT_OBJECT}
    try:
        variables = []
        for var in datasec.sec_vars:
            var_type = btf.type(var.type)
            struct = btf.resolve(var_type.size_or_type if var_type.kind is Kind.VAR else var.type)
            if var_type.kind is not Kind.VAR or struct.kind is not Kind.STRUCT:
                raise ObjectFormatError(
                    f"'{var_type.name or var.type}' is not a variable of a struct type",
                    section=where,
                )
            if not struct.name:
                raise ObjectFormatError(
                    f"'{var_type.name}' is of an anonymous struct: the kernel's is found by name",
                    section=where,
                )
            offset = offsets.get(var_type.name)
            if offset is None:
                raise ObjectFormatError(
                    f"'{var_type.name}' has no symbol in the section", section=where
                )
            if offset + struct.size_or_type > len(data):
                raise ObjectFormatError(
                    f"'{var_type.name}' ({struct.size_or_type} bytes at {offset}) is beyond "
                    f"the section's {len(data)} bytes",
                    section=where,
                )
            variables.append((var_type.name, offset, struct))
        programs = _programs_by_offset(btf, variables, relocations, program_at, where)
        return [
            _map_spec(btf, name, offset, struct, data, programs, where)
            for name, offset, struct in variables
        ]
    except BtfError as e:
        raise ObjectFormatError(str(e), section=where) from e


def _programs_by_offset(
    btf: Btf,
    variables: list[tuple[str, int, BtfType]],
    relocations: Iterable[Relocation],
    program_at: Callable[[int, int], str | None],
    where: str,
) -> dict[int, str]:
    """Section offset of each function pointer -> the program it holds. Linear in the
    relocations and the members: each variable's members indexed by offset once, the variable
    of a relocation found by bisection."""
    ordered = sorted(variables, key=lambda v: v[1])
    starts = [v[1] for v in ordered]
    members: dict[int, dict[int, Member]] = {}  # by variable (its offset): by bit offset
    found: dict[int, str] = {}
    for reloc in relocations:
        symbol = reloc.symbol
        at = bisect.bisect_right(starts, reloc.offset) - 1
        owner = ordered[at] if at >= 0 else None
        if owner is None or reloc.offset >= owner[1] + owner[2].size_or_type:
            raise ObjectFormatError(
                f"a relocation at byte {reloc.offset} is in no struct_ops variable", section=where
            )
        name, start, struct = owner
        if start not in members:
            members[start] = {}
            for m in struct.members:
                members[start].setdefault(_bitfield(struct, m.bit_offset)[1], m)
        member = members[start].get((reloc.offset - start) * 8)
        if member is None or not _is_function_pointer(btf, member.type):
            raise ObjectFormatError(
                f"'{name}': a relocation at byte {reloc.offset - start} is not at a function "
                "pointer member",
                section=where,
            )
        program = program_at(symbol.section, symbol.value) if symbol.section is not None else None
        if program is None:
            raise ObjectFormatError(
                f"'{name}': member '{member.name}' points at '{symbol.name or '(unnamed)'}', "
                "which is not a program of this object",
                section=where,
            )
        found[reloc.offset] = program
    return found


def _map_spec(
    btf: Btf,
    name: str,
    start: int,
    struct: BtfType,
    data: bytes,
    programs: Mapping[int, str],
    where: str,
) -> MapSpec:
    members = []
    for member in struct.members:
        bitfield, bit_offset = _bitfield(struct, member.bit_offset)
        mtype = btf.resolve(member.type)
        offset = bit_offset // 8
        size = btf.size_of(member.type)  # a bitfield's: that of its integer type
        end = bit_offset + bitfield if bitfield else (offset + size) * 8
        if end > struct.size_or_type * 8:
            raise ObjectFormatError(
                f"'{name}': member '{member.name}' (bits {bit_offset}..{end}) is beyond its "
                f"struct's {struct.size_or_type} bytes",
                section=where,
            )
        members.append(
            StructOpsMember(
                name=member.name,
                offset=offset,
                size=size,
                kind=mtype.kind,
                bitfield=bool(bitfield),
                program=programs.get(start + offset, ""),
            )
        )
    from bpfloader.obj.core import essential  # the kernel's struct: by its essential name

    ops = StructOps(
        type_name=essential(struct.name),
        data=bytes(data[start : start + struct.size_or_type]),
        members=tuple(members),
        link=where == STRUCT_OPS_LINK_SECTION,
    )
    return MapSpec(
        name=name,
        type=MapType.STRUCT_OPS,
        key_size=KEY_SIZE,
        value_size=struct.size_or_type,  # the kernel's value is larger: `resolve` says
        max_entries=1,
        flags=BPF_F_LINK if ops.link else 0,
        owner=Ownership(),
        btf_value_type_id=struct.id,
        struct_ops=ops,
    )


def _bitfield(struct: BtfType, raw: int) -> tuple[int, int]:
    """A member's (bitfield size, bit offset) from its raw offset word (kind_flag set: the
    size in the top byte)."""
    return (raw >> 24, raw & 0xFFFFFF) if struct.kflag else (0, raw)


def _is_function_pointer(btf: Btf, type_id: int) -> bool:
    t = btf.resolve(type_id)
    return t.kind is Kind.PTR and btf.resolve(t.size_or_type).kind is Kind.FUNC_PROTO


# -- against the kernel's BTF ---------------------------------------------------------------


@dataclass(frozen=True)
class KernelStructOps:
    """A struct_ops map as this kernel takes it: its struct's and value type's ids, the value
    with the object's data in place (function pointers zero until the programs are loaded:
    `value`), where each program's fd goes, each program's member index, and the programs
    left out because they fill members this kernel lacks (libbpf's rule: allowed, not loaded)."""

    type_id: int  # the kernel's struct: its programs' attach_btf_id
    value_type_id: int  # bpf_struct_ops_NAME: the map's btf_vmlinux_value_type_id
    template: bytes
    slots: tuple[tuple[int, str], ...]  # (offset in the value, program)
    member_index: Mapping[str, int]  # program -> its member in the kernel's struct
    dropped: Mapping[str, str]  # program -> the member the kernel lacks

    @property
    def value_size(self) -> int:
        return len(self.template)

    def value(self, prog_fds: Mapping[str, int]) -> bytes:
        """The map's value, each program's fd in its function pointer."""
        value = bytearray(self.template)
        for offset, program in self.slots:
            fd = prog_fds[program].to_bytes(POINTER_SIZE, "little")
            value[offset : offset + POINTER_SIZE] = fd
        return bytes(value)


def resolve(name: str, ops: StructOps, kernel: Btf) -> KernelStructOps:
    """Lay map `name` out as the kernel's `bpf_struct_ops_TYPE`, from `kernel` (vmlinux's
    BTF). A StructOpsError names the map, the member and what does not agree."""
    what = f"struct_ops map '{name}'"
    struct = kernel.named(Kind.STRUCT, ops.type_name)
    if struct is None:
        raise StructOpsError(
            f"{what}: the kernel has no struct {ops.type_name} in its BTF (struct_ops types "
            "of kernel modules are not supported)",
            section=_section(ops),
        )
    vtype = kernel.named(Kind.STRUCT, VALUE_PREFIX + ops.type_name)
    if vtype is None:
        raise StructOpsError(
            f"{what}: the kernel has no {VALUE_PREFIX}{ops.type_name}: struct {ops.type_name} "
            "cannot be implemented in BPF on this kernel",
            section=_section(ops),
        )
    data_member = next((m for m in vtype.members if m.type == struct.id), None)
    if data_member is None:
        raise StructOpsError(
            f"{what}: {VALUE_PREFIX}{ops.type_name} holds no struct {ops.type_name}",
            section=_section(ops),
        )
    base = data_member.bit_offset // 8
    value = bytearray(vtype.size_or_type)
    kernel_members = {m.name: (i, m) for i, m in enumerate(struct.members)}
    slots: list[tuple[int, str]] = []
    member_index: dict[str, int] = {}
    dropped: dict[str, str] = {}
    for member in ops.members:
        local = ops.data[member.offset : member.offset + member.size]
        found = kernel_members.get(member.name)
        if found is None:
            if any(local):  # a bitfield's bytes: its whole integer's, as libbpf checks
                raise StructOpsError(
                    f"{what}: member '{member.name}' is not in the kernel's struct "
                    f"{ops.type_name}, and is set",
                    section=_section(ops),
                )
            if member.program:
                dropped[member.program] = member.name
            continue
        index, kmember = found
        kbits, kbit_offset = _bitfield(struct, kmember.bit_offset)
        if member.bitfield or kbits:
            raise StructOpsError(
                f"{what}: member '{member.name}' is a bitfield (not supported, as in libbpf)",
                section=_section(ops),
            )
        ktype = kernel.resolve(kmember.type)
        if member.kind is not ktype.kind:
            raise StructOpsError(
                f"{what}: member '{member.name}' is a {member.kind.name} here, a "
                f"{ktype.kind.name} in the kernel",
                section=_section(ops),
            )
        at = base + kbit_offset // 8
        if member.kind is Kind.PTR:
            if not member.program:
                continue
            if kernel.resolve(ktype.size_or_type).kind is not Kind.FUNC_PROTO:
                raise StructOpsError(
                    f"{what}: member '{member.name}' is not a function pointer in the kernel",
                    section=_section(ops),
                )
            slots.append((at, member.program))
            member_index[member.program] = index
            continue
        size = kernel.size_of(kmember.type)
        if size != member.size:
            raise StructOpsError(
                f"{what}: member '{member.name}' has {member.size} bytes here, {size} in the "
                "kernel",
                section=_section(ops),
            )
        value[at : at + size] = local
    return KernelStructOps(
        type_id=struct.id,
        value_type_id=vtype.id,
        template=bytes(value),
        slots=tuple(slots),
        member_index=member_index,
        dropped=dropped,
    )


def program_attach(
    resolved: Mapping[str, KernelStructOps], specs: Mapping[str, MapSpec]
) -> dict[str, tuple[int, int]]:
    """Each struct_ops program's (attach_btf_id, expected attach type), from the maps it is
    in; a program in two maps must fill the same member of the same struct in both (as
    libbpf requires: the kernel verifies it against one)."""
    found: dict[str, tuple[int, int, str]] = {}
    for name, kernel in resolved.items():
        for program, index in kernel.member_index.items():
            mine = (kernel.type_id, index)
            seen = found.get(program)
            if seen is not None and seen[:2] != mine:
                raise StructOpsError(
                    f"program '{program}' fills different members in struct_ops maps "
                    f"'{seen[2]}' and '{name}': a program is verified for one member",
                    section=_section(specs[name].struct_ops),
                )
            found[program] = (*mine, name)
    return {program: (type_id, index) for program, (type_id, index, _) in found.items()}


def _section(ops: StructOps | None) -> str:
    return STRUCT_OPS_LINK_SECTION if ops is not None and ops.link else STRUCT_OPS_SECTION


def section_of(spec: MapSpec) -> str:
    """The section that declares a struct_ops map: what an error about it names."""
    return _section(spec.struct_ops)
