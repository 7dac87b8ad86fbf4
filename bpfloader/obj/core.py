"""CO-RE relocations (pure): what each `struct bpf_core_relo` of an object becomes against a
target BTF (the running kernel's, or a file's), and the instructions patched with it.

The rules are libbpf's (relo_core.c), read and written anew here:
- the local spec: the access string `0:1:2` walked through the object's BTF from the root type
  (array index, then members and array elements), its named accessors and bit offset;
- candidates: the target's types of the root's kind (ENUM and ENUM64 alike) whose names equal
  the root's once a `___flavor` suffix is cut from both; vmlinux first, the modules only where
  vmlinux has none; a type's candidates narrow, relocation by relocation, to those that
  matched (libbpf's cache, kept per object, the records taken in the order of .BTF.ext);
- matching a candidate: the same path by member names (anonymous members searched through),
  fields compatible as bpf_core_fields_are_compat has it; types compatible
  (bpf_core_types_are_compat) or matching (bpf_core_types_match); enumerators by name;
- the value of each kind; candidates that disagree are an error; none at all is 0 for the
  `*_EXISTS`, type and `TYPE_MATCHES` kinds, else the instruction is poisoned: made
  `call 0xbad2310`, which the verifier refuses only if it is reachable;
- the patch: an ALU immediate, a load's or store's offset (its size adjusted where the field's
  size changed and that is safe), a ld_imm64's 64-bit immediate; the instruction must hold the
  local value where libbpf checks it.

Errors are CoreError, one line naming the relocation.
"""

from __future__ import annotations

import bisect
import struct
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.bpftypes import INSN_SIZE, OPCODE_LD_IMM64
from bpfloader.obj.btf import Btf, BtfError, BtfType, CoreReloRecord, Kind, parse_btf

POISON_HELPER = 0xBAD2310  # 195896080: the verifier says `invalid func unknown#195896080`
MAX_SPEC_LEN = 64  # BPF_CORE_SPEC_MAX_LEN
MAX_DEPTH = 32  # how deep type compatibility recurses
_MODS = frozenset({Kind.TYPEDEF, Kind.VOLATILE, Kind.CONST, Kind.RESTRICT, Kind.TYPE_TAG})
_ENUMS = frozenset({Kind.ENUM, Kind.ENUM64})
_COMPOSITE = frozenset({Kind.STRUCT, Kind.UNION})
_INSN = struct.Struct("<BBhi")
_INT_SIGNED = 1
_S16_MAX = 0x7FFF
_U64 = (1 << 64) - 1

# BPF instruction classes and sizes (the low 3 bits; bits 3-4 of a load or store).
_CLASS_LD, _CLASS_LDX, _CLASS_ST, _CLASS_STX, _CLASS_ALU, _CLASS_ALU64 = 0, 1, 2, 3, 4, 7
_SRC_X = 0x08
_SIZE_BYTES = {0x00: 4, 0x08: 2, 0x10: 1, 0x18: 8}  # BPF_W, BPF_H, BPF_B, BPF_DW
_BYTES_SIZE = {v: k for k, v in _SIZE_BYTES.items()}


class CoreKind(IntEnum):
    FIELD_BYTE_OFFSET = 0
    FIELD_BYTE_SIZE = 1
    FIELD_EXISTS = 2
    FIELD_SIGNED = 3
    FIELD_LSHIFT_U64 = 4
    FIELD_RSHIFT_U64 = 5
    TYPE_ID_LOCAL = 6
    TYPE_ID_TARGET = 7
    TYPE_EXISTS = 8
    TYPE_SIZE = 9
    ENUMVAL_EXISTS = 10
    ENUMVAL_VALUE = 11
    TYPE_MATCHES = 12

    @property
    def label(self) -> str:
        """As a message says it: `field byte offset`, `enum value exists`, ..."""
        return _LABELS.get(self, self.name.lower().replace("_", " "))

    @property
    def field_based(self) -> bool:
        return self <= CoreKind.FIELD_RSHIFT_U64

    @property
    def type_based(self) -> bool:
        return CoreKind.TYPE_ID_LOCAL <= self <= CoreKind.TYPE_SIZE or self is CoreKind.TYPE_MATCHES

    @property
    def enum_based(self) -> bool:
        return self in (CoreKind.ENUMVAL_EXISTS, CoreKind.ENUMVAL_VALUE)


_LABELS = {
    CoreKind.TYPE_ID_LOCAL: "local type id",
    CoreKind.TYPE_ID_TARGET: "target type id",
    CoreKind.ENUMVAL_EXISTS: "enum value exists",
    CoreKind.ENUMVAL_VALUE: "enum value",
}


class CoreError(ObjectFormatError):
    """A CO-RE relocation that cannot be computed or applied (not one the target lacks: that
    one is poisoned)."""


@dataclass(frozen=True, slots=True)
class CoreRelocation:
    """A relocation of a linked program: its instruction `insn` (in the program) is patched
    by the object's record `record` of section `section`."""

    insn: int
    section: str
    record: CoreReloRecord


@dataclass(frozen=True, eq=False)
class ObjectCore:
    """An object's CO-RE relocations, for resolving once against a target: the local BTF,
    and every record that lies in a function, in the order of `.BTF.ext`."""

    btf: Btf
    records: tuple[tuple[str, CoreReloRecord], ...]

    def describe(self, record: CoreReloRecord) -> str:
        """`struct task_struct::cgroups.subsys[0]` (field byte offset): what a message names."""
        return f"'{access_path(self.btf, record)}' ({CoreKind(record.kind).label})"


@dataclass(frozen=True, eq=False)
class TargetBtf:
    """What relocations are resolved against: vmlinux's BTF, and the BTF of kernel modules
    (`modules`: each one's name and raw split BTF over vmlinux's, parsed the first time a type
    is looked for that vmlinux lacks)."""

    name: str  # for messages: the file it came from
    vmlinux: Btf
    modules: tuple[tuple[str, bytes], ...] = ()
    _found: dict[tuple[int, str], list[int]] = field(default_factory=dict)
    _types: dict[int, bytes] = field(default_factory=dict)  # each BTF's type section, as bytes
    _parsed: list[tuple[str, Btf]] = field(default_factory=list)

    _lock: threading.Lock = field(default_factory=threading.Lock)  # objects load side by side

    def module_btfs(self) -> list[tuple[str, Btf]]:
        """The modules' BTF, parsed (once) over vmlinux's."""
        with self._lock:
            if self.modules and not self._parsed:
                parsed = []
                for module, raw in self.modules:
                    try:
                        parsed.append((module, parse_btf(raw, self.vmlinux)))
                    except BtfError as e:
                        raise CoreError(f"the BTF of kernel module {module}: {e}") from e
                self._parsed.extend(parsed)
            return self._parsed

    def named(self, btf: Btf, essential_name: str) -> list[int]:
        """The ids of `btf`'s own types (not its base's) whose essential name is
        `essential_name`, in id order.

        The kernel's BTF has 100k+ types and an object wants a few dozen: rather than index
        every name (a pass over every type in Python), the name is found in the string tables
        and its offsets among the records, both by bytes.find."""
        key = (id(btf), essential_name)
        found = self._found.get(key)
        if found is None:
            found = self._found[key] = self._lookup(btf, essential_name)
        return found

    def _lookup(self, btf: Btf, wanted: str) -> list[int]:
        name = wanted.encode("latin-1")
        offsets = []
        tables = [(btf.strings, btf.strings_base)]
        if btf.base is not None:  # a module's names are often vmlinux's strings
            tables.append((btf.base.strings, 0))
        for strings, base in tables:
            for pattern, exact in ((b"\0" + name + b"\0", True), (b"\0" + name + b"___", False)):
                pos = strings.find(pattern)
                while pos >= 0:
                    if exact or essential(btf.name_at(pos + 1 + base)) == wanted:
                        offsets.append(pos + 1 + base)
                    pos = strings.find(pattern, pos + 1)
        types = self._types.get(id(btf))
        if types is None:
            types = self._types[id(btf)] = bytes(btf.type_section)
        starts = btf.offsets
        ids = []
        for offset in offsets:
            key = struct.pack("<I", offset)
            pos = types.find(key)
            while pos >= 0:
                i = bisect.bisect_left(starts, pos, 1)
                if pos % 4 == 0 and i < len(starts) and starts[i] == pos:
                    ids.append(i + btf.first_id - 1)
                pos = types.find(key, pos + 1)
        return sorted(ids)


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a relocation comes to against one target: the value the compiler wrote (`orig`)
    and the target's (`new`), or poisoned; for field offsets, the field's size in each."""

    poison: bool = False
    orig: int = 0
    new: int = 0
    validate: bool = True
    orig_size: int = 0
    new_size: int = 0
    bad_size_change: bool = False  # a load/store of this field cannot change its size safely


# -- names --------------------------------------------------------------------------------------


def essential_len(name: str) -> int:
    """The length of `name` without its `___flavor` suffix (the last `x___y`, x and y not `_`)."""
    for i in range(len(name) - 5, -1, -1):
        if name[i] != "_" and name[i + 1 : i + 4] == "___" and name[i + 4] != "_":
            return i + 1
    return len(name)


def essential(name: str) -> str:
    return name[: essential_len(name)]


def access_path(btf: Btf, record: CoreReloRecord) -> str:
    """The relocation's type and field path as C would write it, for messages (best effort:
    a malformed record is described by its raw access string)."""
    access = btf.name_at(record.access_off)
    try:
        root = btf.type(record.type_id)
        head = f"{_kind_word(root)} {root.name or '(anon)'}"
        kind = CoreKind(record.kind)
        if kind.type_based:
            return head
        if kind.enum_based:
            enum = _skip(btf, record.type_id)
            name_off, _ = btf.enumerators(enum)[int(access)]
            return f"{head}::{btf.name_at(name_off)}"
        spec = parse_spec(btf, record)
    except (ObjectFormatError, ValueError, IndexError):  # BtfError, CoreError
        return f"[{record.type_id}] {access}"
    parts = [f"[{spec.raw[0]}]"] if spec.raw[0] else []
    for acc in spec.accessors[1:]:
        parts.append(f".{acc.name}" if acc.name is not None else f"[{acc.idx}]")
    return head + "::" + "".join(parts).removeprefix(".")


def _kind_word(t: BtfType) -> str:
    return {
        Kind.STRUCT: "struct",
        Kind.UNION: "union",
        Kind.ENUM: "enum",
        Kind.ENUM64: "enum",
        Kind.TYPEDEF: "typedef",
    }.get(t.kind, t.kind.name.lower())


# -- specs ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Accessor:
    type_id: int  # the struct/union of a member, the element type of an array index
    idx: int
    name: str | None  # a member's name; None for an array index


@dataclass(slots=True)
class Spec:
    btf: Btf
    root: int
    raw: list[int] = field(default_factory=list)
    accessors: list[Accessor] = field(default_factory=list)
    bit_offset: int = 0


def _skip(btf: Btf, type_id: int) -> BtfType:
    return btf.resolve(type_id) if type_id else btf.decode(0)


def _skip_id(btf: Btf, type_id: int) -> int:
    return _skip(btf, type_id).id


def _size(btf: Btf, type_id: int) -> int:
    try:
        return btf.size_of(type_id)
    except BtfError as e:
        raise CoreError(f"type {type_id} has no size ({e})") from e


def parse_spec(btf: Btf, record: CoreReloRecord) -> Spec:
    """The local spec of `record` (bpf_core_parse_spec's rules); a malformed one is a
    CoreError."""
    text = btf.name_at(record.access_off)
    kind = CoreKind(record.kind)
    spec = Spec(btf, record.type_id)
    if not text or text[0] == ":":
        raise CoreError(f"access string '{text}' is malformed")
    if kind.type_based:
        if text != "0":
            raise CoreError(f"a type relocation's access string is '{text}', not '0'")
        return spec
    pieces = text.split(":")
    # ASCII digits only: str.isdigit takes '²' (the string is read as Latin-1), int() does not.
    if len(pieces) > MAX_SPEC_LEN or not all(
        p.isascii() and p.isdigit() and len(p) <= 10 for p in pieces
    ):
        raise CoreError(f"access string '{text[:80]}' is malformed")
    spec.raw = [int(p) for p in pieces]
    if any(i > 0x7FFFFFFF for i in spec.raw):
        raise CoreError(f"access string '{text[:80]}' is malformed")
    t = _skip(btf, record.type_id)
    first = spec.raw[0]
    spec.accessors.append(Accessor(t.id, first, None))
    if kind.enum_based:
        if t.kind not in _ENUMS or len(spec.raw) > 1 or first >= t.vlen:
            raise CoreError(f"access string '{text}' is not an enumerator of type {t.id}")
        spec.accessors[0].name = btf.name_at(btf.enumerators(t)[first][0])
        return spec
    type_id = t.id
    spec.bit_offset = first * _size(btf, type_id) * 8
    for index in spec.raw[1:]:
        t = _skip(btf, type_id)
        if t.kind in _COMPOSITE:
            if index >= t.vlen:
                raise CoreError(f"member {index} of type {t.id} does not exist ({t.vlen})")
            member = t.members[index]
            spec.bit_offset += _member_offset(t, index)
            if member.name:
                spec.accessors.append(Accessor(t.id, index, member.name))
            type_id = member.type
        elif t.kind is Kind.ARRAY and t.array is not None:
            elem = _skip(btf, t.array[0])
            if not _is_flex(btf, spec.accessors[-1], t.array[1]) and index >= t.array[1]:
                raise CoreError(f"index {index} is past the {t.array[1]} elements of type {t.id}")
            spec.accessors.append(Accessor(elem.id, index, None))
            type_id = elem.id
            spec.bit_offset += index * _size(btf, type_id) * 8
        else:
            raise CoreError(f"access string '{text[:80]}' goes into type {t.id} ({t.kind.name})")
    return spec


def _member_offset(t: BtfType, index: int) -> int:
    offset = t.members[index].bit_offset
    return offset & 0xFFFFFF if t.kflag else offset


def _member_bits(t: BtfType, index: int) -> int:
    return t.members[index].bit_offset >> 24 if t.kflag else 0


def _is_flex(btf: Btf, previous: Accessor, count: int) -> bool:
    """A zero-length array that is the last member of its struct: any index goes."""
    if previous.name is None or count > 0:
        return False
    return previous.idx == btf.type(previous.type_id).vlen - 1


# -- compatibility --------------------------------------------------------------------------------

MAX_STEPS = 1 << 20  # comparisons of one relocation's types: crafted BTF cannot make it hang


class Budget:
    """The comparisons left to one relocation (type matching recurses into every member and
    parameter, which crafted BTF could make exponential)."""

    def __init__(self, steps: int = MAX_STEPS):
        self.left = steps

    def spend(self, steps: int = 1) -> None:
        self.left -= steps
        if self.left < 0:
            raise CoreError("its types take too many comparisons to match")


def _kinds_compat(a: BtfType, b: BtfType) -> bool:
    return a.kind is b.kind or (a.kind in _ENUMS and b.kind in _ENUMS)


def _names_essentially_equal(a: str, b: str) -> bool:
    return essential(a) == essential(b)


def fields_are_compat(local: Btf, local_id: int, target: Btf, target_id: int) -> bool:
    for _ in range(MAX_DEPTH):
        lt, tt = _skip(local, local_id), _skip(target, target_id)
        if lt.kind in _COMPOSITE and tt.kind in _COMPOSITE:
            return True
        if not _kinds_compat(lt, tt):
            return False
        if lt.kind in (Kind.PTR, Kind.FLOAT):
            return True
        if lt.kind in (Kind.FWD, *_ENUMS):
            ln, tn = essential_len(lt.name), essential_len(tt.name)
            return ln == 0 or tn == 0 or _names_essentially_equal(lt.name, tt.name)
        if lt.kind is Kind.INT:
            return local.int_encoding(lt)[1] == 0 and target.int_encoding(tt)[1] == 0
        if lt.kind is Kind.ARRAY and lt.array is not None and tt.array is not None:
            local_id, target_id = lt.array[0], tt.array[0]
            continue
        return False
    raise CoreError(f"type {local_id} is nested too deeply")


def types_are_compat(
    local: Btf, local_id: int, target: Btf, target_id: int, budget: Budget, level: int = MAX_DEPTH
) -> bool:
    if not _kinds_compat(local.type(local_id), target.type(target_id)):
        return False
    for _ in range(MAX_DEPTH):
        budget.spend()
        lt, tt = _skip(local, local_id), _skip(target, target_id)
        if not _kinds_compat(lt, tt):
            return False
        if lt.kind in (Kind.UNKN, Kind.FWD, *_COMPOSITE, *_ENUMS):
            return True
        if lt.kind is Kind.INT:
            return local.int_encoding(lt)[1] == 0 and target.int_encoding(tt)[1] == 0
        if lt.kind is Kind.PTR:
            local_id, target_id = lt.size_or_type, tt.size_or_type
        elif lt.kind is Kind.ARRAY and lt.array is not None and tt.array is not None:
            local_id, target_id = lt.array[0], tt.array[0]
        elif lt.kind is Kind.FUNC_PROTO:
            lp, tp = local.params(lt), target.params(tt)
            if len(lp) != len(tp):
                return False
            for a, b in zip(lp, tp, strict=True):
                if level <= 0:
                    raise CoreError("function prototypes are nested too deeply")
                if not types_are_compat(
                    local, _skip_id(local, a), target, _skip_id(target, b), budget, level - 1
                ):
                    return False
            local_id, target_id = (
                _skip_id(local, lt.size_or_type),
                _skip_id(target, tt.size_or_type),
            )
        else:
            return False
    raise CoreError(f"type {local_id} is nested too deeply")


def _names_match(local: Btf, local_name: str, target: Btf, target_name: str) -> bool:
    if not target_name:
        return not local_name
    return _names_essentially_equal(local_name, target_name)


def types_match(
    local: Btf,
    local_id: int,
    target: Btf,
    target_id: int,
    budget: Budget,
    behind_ptr: bool = False,
    level: int = MAX_DEPTH,
) -> bool:
    """bpf_core_types_match: the local type's shape is found in the target's."""
    if level <= 0:
        raise CoreError("types are nested too deeply to match")
    for _ in range(MAX_DEPTH):
        budget.spend()
        lt, tt = _skip(local, local_id), _skip(target, target_id)
        if not _names_match(local, lt.name, target, tt.name):
            return False
        if lt.kind is Kind.UNKN:
            return tt.kind is Kind.UNKN
        if lt.kind is Kind.FWD:
            if tt.kind is Kind.FWD:
                return lt.kflag == tt.kflag
            if tt.kind not in _COMPOSITE or tt.vlen:
                return False
            return tt.kind is (Kind.UNION if lt.kflag else Kind.STRUCT)
        if lt.kind in _ENUMS:
            return tt.kind in _ENUMS and _enums_match(local, lt, target, tt, budget)
        if lt.kind in _COMPOSITE:
            if behind_ptr:
                if lt.kind is tt.kind:
                    return True
                return tt.kind is Kind.FWD and (lt.kind is Kind.UNION) == tt.kflag
            return lt.kind is tt.kind and _composites_match(local, lt, target, tt, budget, level)
        if lt.kind is not tt.kind:
            return False
        if lt.kind is Kind.INT:
            signed = local.int_encoding(lt)[0] & _INT_SIGNED, target.int_encoding(tt)[0] & 1
            return lt.size_or_type == tt.size_or_type and signed[0] == signed[1]
        if lt.kind is Kind.PTR:
            behind_ptr = True
            local_id, target_id = lt.size_or_type, tt.size_or_type
        elif lt.kind is Kind.ARRAY and lt.array is not None and tt.array is not None:
            if lt.array[1] != tt.array[1]:
                return False
            local_id, target_id = lt.array[0], tt.array[0]
        elif lt.kind is Kind.FUNC_PROTO:
            lp, tp = local.params(lt), target.params(tt)
            if len(lp) != len(tp):
                return False
            for a, b in zip(lp, tp, strict=True):
                if not types_match(local, a, target, b, budget, behind_ptr, level - 1):
                    return False
            local_id, target_id = lt.size_or_type, tt.size_or_type
        else:
            return False
    raise CoreError(f"type {local_id} is nested too deeply")


def _enums_match(local: Btf, lt: BtfType, target: Btf, tt: BtfType, budget: Budget) -> bool:
    if lt.size_or_type != tt.size_or_type or lt.vlen > tt.vlen:
        return False
    # Each local name is looked up among the target's essential names (what the pairwise
    # comparisons of libbpf come to).
    target_names = {essential(target.name_at(n)) for n, _ in target.enumerators(tt)}
    budget.spend(tt.vlen + lt.vlen)
    for name_off, _ in local.enumerators(lt):
        name = local.name_at(name_off)
        if not (essential(name) in target_names if name else "" in target_names):
            return False
    return True


def _composites_match(
    local: Btf, lt: BtfType, target: Btf, tt: BtfType, budget: Budget, level: int
) -> bool:
    if lt.vlen > tt.vlen:
        return False
    for lm in lt.members:
        matched = False
        for tm in tt.members:
            budget.spend()
            if _names_match(local, lm.name, target, tm.name) and types_match(
                local, lm.type, target, tm.type, budget, False, level - 1
            ):
                matched = True
                break
        if not matched:
            return False
    return True


# -- matching a candidate -------------------------------------------------------------------------


def _match_member(
    local: Spec, acc: Accessor, target: Btf, target_id: int, spec: Spec, budget: Budget
) -> tuple[bool, int]:
    """Find local member `acc` in target composite `target_id`, through anonymous members;
    (found, the member's type id)."""
    tt = _skip(target, target_id)
    if tt.kind not in _COMPOSITE:
        return False, 0
    local_member = local.btf.type(acc.type_id).members[acc.idx]
    for i, member in enumerate(tt.members):
        budget.spend()
        if len(spec.raw) >= MAX_SPEC_LEN:
            raise CoreError("the field is nested too deeply in the target")
        offset = _member_offset(tt, i)
        spec.bit_offset += offset
        spec.raw.append(i)
        if not member.name:
            found, next_id = _match_member(local, acc, target, member.type, spec, budget)
            if found:
                return True, next_id
        elif member.name == local_member.name:
            spec.accessors.append(Accessor(tt.id, i, member.name))
            if fields_are_compat(local.btf, local_member.type, target, member.type):
                return True, member.type
            spec.accessors.pop()
            return False, 0
        spec.bit_offset -= offset
        spec.raw.pop()
    return False, 0


def match_spec(
    local: Spec, kind: CoreKind, target: Btf, target_id: int, budget: Budget
) -> Spec | None:
    """The target's spec for candidate `target_id`, or None where it does not match."""
    spec = Spec(target, target_id)
    if kind.type_based:
        if kind is CoreKind.TYPE_MATCHES:
            matched = types_match(local.btf, local.root, target, target_id, budget)
        else:
            matched = types_are_compat(local.btf, local.root, target, target_id, budget)
        return spec if matched else None
    if kind.enum_based:
        tt = _skip(target, target_id)
        if tt.kind not in _ENUMS:
            return None
        wanted = local.accessors[0].name or ""
        for i, (name_off, _) in enumerate(target.enumerators(tt)):
            name = target.name_at(name_off)
            if _names_essentially_equal(wanted, name):
                spec.accessors.append(Accessor(tt.id, i, name))
                spec.raw.append(i)
                return spec
        return None
    type_id = target_id
    for i, acc in enumerate(local.accessors):
        type_id = _skip_id(target, type_id)
        if acc.name is not None:
            found, type_id = _match_member(local, acc, target, type_id, spec, budget)
            if not found:
                return None
            continue
        if i > 0:
            tt = target.type(type_id)
            if tt.kind is not Kind.ARRAY or tt.array is None:
                return None
            if not _is_flex(target, spec.accessors[-1], tt.array[1]) and acc.idx >= tt.array[1]:
                return None
            type_id = _skip_id(target, tt.array[0])
        if len(spec.raw) >= MAX_SPEC_LEN:
            raise CoreError("the field is nested too deeply in the target")
        spec.accessors.append(Accessor(type_id, acc.idx, None))
        spec.raw.append(acc.idx)
        spec.bit_offset += acc.idx * _size(target, type_id) * 8
    return spec


# -- values ---------------------------------------------------------------------------------------


class _Poison(Exception):
    """The target lacks what the relocation needs: poison the instruction."""


@dataclass(slots=True)
class _Field:
    value: int
    size: int = 0  # the field's size, for a load or store of it (offsets only)
    type_id: int = 0  # its type, skipped, in the spec's BTF
    validate: bool = True


def _field_value(kind: CoreKind, spec: Spec | None) -> _Field:
    if kind is CoreKind.FIELD_EXISTS:
        return _Field(1 if spec is not None else 0)
    if spec is None:
        raise _Poison
    btf = spec.btf
    acc = spec.accessors[-1]
    if acc.name is None:  # an array element
        size = _size(btf, acc.type_id)
        if kind is CoreKind.FIELD_BYTE_OFFSET:
            return _Field(spec.bit_offset // 8, size, acc.type_id)
        if kind is CoreKind.FIELD_BYTE_SIZE:
            return _Field(size)
        raise CoreError(f"a {kind.label} relocation cannot apply to an array element")
    t = btf.type(acc.type_id)
    member = t.members[acc.idx]
    mt = _skip(btf, member.type)
    bit_off, bit_size = spec.bit_offset, _member_bits(t, acc.idx)
    bitfield = bit_size > 0
    if bitfield:
        byte_size = mt.size_or_type
        if byte_size <= 0 or byte_size > 8:
            raise CoreError(f"bitfield '{member.name}' has a {byte_size}-byte type")
        byte_off = bit_off // 8 // byte_size * byte_size
        while bit_off + bit_size - byte_off * 8 > byte_size * 8:
            if byte_size >= 8:
                raise CoreError(f"bitfield '{member.name}' cannot be read with a 64-bit load")
            byte_size *= 2
            byte_off = bit_off // 8 // byte_size * byte_size
    else:
        byte_size = _size(btf, mt.id)
        byte_off = bit_off // 8
        bit_size = byte_size * 8
    validate = not bitfield
    if kind is CoreKind.FIELD_BYTE_OFFSET:
        if bitfield:
            return _Field(byte_off, validate=False)
        return _Field(byte_off, byte_size, mt.id)
    if kind is CoreKind.FIELD_BYTE_SIZE:
        return _Field(byte_size, validate=validate)
    if kind is CoreKind.FIELD_SIGNED:
        if mt.kind in _ENUMS:
            signed = mt.kflag
        elif mt.kind is Kind.INT:
            signed = bool(btf.int_encoding(mt)[0] & _INT_SIGNED)
        else:
            signed = False
        return _Field(int(signed))
    if kind is CoreKind.FIELD_LSHIFT_U64:
        return _Field(64 - (bit_off + bit_size - byte_off * 8), validate=validate)
    return _Field(64 - bit_size)  # FIELD_RSHIFT_U64: never ambiguous


def _type_value(kind: CoreKind, spec: Spec | None) -> int:
    if spec is None:
        return 0
    if kind in (CoreKind.TYPE_ID_LOCAL, CoreKind.TYPE_ID_TARGET):
        return spec.root
    if kind in (CoreKind.TYPE_EXISTS, CoreKind.TYPE_MATCHES):
        return 1
    return _size(spec.btf, spec.root)  # TYPE_SIZE


def _enum_value(kind: CoreKind, spec: Spec | None) -> int:
    if kind is CoreKind.ENUMVAL_EXISTS:
        return 1 if spec is not None else 0
    if spec is None:
        raise _Poison
    acc = spec.accessors[0]
    t = spec.btf.type(acc.type_id)
    return spec.btf.enumerators(t)[acc.idx][1] & _U64


def _is_unsigned_int(btf: Btf, type_id: int) -> bool:
    """Not of encoding BTF_INT_SIGNED exactly (libbpf's test: a signed char passes)."""
    t = btf.type(type_id) if type_id else btf.decode(0)
    return t.kind is Kind.INT and btf.int_encoding(t)[0] != _INT_SIGNED


def calc(kind: CoreKind, local: Spec, target: Spec | None) -> Resolution:
    """bpf_core_calc_relo: the local and target values of one relocation."""
    try:
        if kind.field_based:
            orig = _field_value(kind, local)
            new = _field_value(kind, target)
            bad = False
            if orig.size != new.size and target is not None:
                lt = local.btf.type(orig.type_id) if orig.type_id else None
                tt = target.btf.type(new.type_id) if new.type_id else None
                both_ptrs = lt is not None and tt is not None and lt.kind is tt.kind is Kind.PTR
                both_unsigned = _is_unsigned_int(local.btf, orig.type_id) and _is_unsigned_int(
                    target.btf, new.type_id
                )
                bad = not (both_ptrs or both_unsigned)
            return Resolution(
                orig=orig.value,
                new=new.value,
                validate=orig.validate,
                orig_size=orig.size,
                new_size=new.size,
                bad_size_change=bad,
            )
        if kind.type_based:
            return Resolution(orig=_type_value(kind, local), new=_type_value(kind, target))
        return Resolution(orig=_enum_value(kind, local), new=_enum_value(kind, target))
    except _Poison:
        return Resolution(poison=True)


# -- resolving an object --------------------------------------------------------------------------


def resolve(core: ObjectCore, target: TargetBtf) -> dict[int, Resolution]:
    """Every relocation of the object against `target`, by record number, in libbpf's order
    (its candidate cache narrows as it goes). Errors are CoreErrors naming the relocation."""
    cache: dict[int, list[tuple[Btf, int]]] = {}
    results: dict[int, Resolution] = {}
    for section, record in core.records:
        try:
            results[record.number] = _resolve_one(core.btf, record, target, cache)
        except (CoreError, BtfError) as e:
            what = f"CO-RE relocation #{record.number} {core.describe(record)}"
            raise CoreError(f"{what}: {e}", section=section) from e
    return results


def _resolve_one(
    btf: Btf, record: CoreReloRecord, target: TargetBtf, cache: dict[int, list[tuple[Btf, int]]]
) -> Resolution:
    kind = CoreKind(record.kind)
    local = parse_spec(btf, record)
    if kind is CoreKind.TYPE_ID_LOCAL:
        return Resolution(orig=record.type_id, new=record.type_id, validate=False)
    root = btf.type(record.type_id)
    if not root.name:
        raise CoreError("anonymous types cannot be relocated")
    cands = cache.get(record.type_id)
    if cands is None:
        cands = cache[record.type_id] = _candidates(root, target)
    kept: list[tuple[Btf, int]] = []
    chosen: tuple[Spec, Resolution] | None = None
    budget = Budget()
    for cand_btf, cand_id in cands:
        spec = match_spec(local, kind, cand_btf, cand_id, budget)
        if spec is None:
            continue
        result = calc(kind, local, spec)
        if chosen is None:
            chosen = spec, result
        elif spec.bit_offset != chosen[0].bit_offset:
            raise CoreError(
                f"the target's candidates disagree: field offset {chosen[0].bit_offset} != "
                f"{spec.bit_offset} bits (types {chosen[0].root} and {cand_id})"
            )
        elif result.poison != chosen[1].poison or result.new != chosen[1].new:
            raise CoreError(
                f"the target's candidates disagree: {chosen[1].new} != {result.new} "
                f"(types {chosen[0].root} and {cand_id})"
            )
        kept.append((cand_btf, cand_id))
    if chosen is None:
        return calc(kind, local, None)
    cands[:] = kept
    return chosen[1]


def _candidates(root: BtfType, target: TargetBtf) -> list[tuple[Btf, int]]:
    """The target types of `root`'s kind with its essential name: vmlinux's; where it has
    none, every module's."""
    wanted = essential(root.name)
    vmlinux = target.vmlinux
    found = [(vmlinux, i) for i in target.named(vmlinux, wanted)]
    found = [(b, i) for b, i in found if _kinds_compat(b.type(i), root)]
    if found:
        return found
    for _, btf in target.module_btfs():
        found += [(btf, i) for i in target.named(btf, wanted) if _kinds_compat(btf.type(i), root)]
    return found


# -- patching -------------------------------------------------------------------------------------


def apply(
    code: bytes, relocations: Sequence[CoreRelocation], results: Mapping[int, Resolution]
) -> bytes:
    """The program's instructions with each relocation applied (bpf_core_patch_insn's rules)."""
    if not relocations:
        return code
    out = bytearray(code)
    count = len(code) // INSN_SIZE
    for relo in relocations:
        result = results.get(relo.record.number)
        try:
            if result is None:
                raise CoreError(f"CO-RE relocation #{relo.record.number} was not resolved")
            if not 0 <= relo.insn < count:
                raise CoreError(f"instruction {relo.insn} is outside the program")
            _patch(out, relo.insn, count, result)
        except CoreError as e:
            e.where(section=relo.section)
            raise
    return bytes(out)


def _patch(out: bytearray, index: int, count: int, r: Resolution) -> None:
    opcode, regs, off, imm = _INSN.unpack_from(out, index * INSN_SIZE)
    is_ld_imm64 = opcode == OPCODE_LD_IMM64
    if is_ld_imm64 and index + 1 >= count:
        raise CoreError(f"instruction {index}: a ld_imm64 cut short")
    if r.poison:
        _poison(out, index, is_ld_imm64)
        return
    cls = opcode & 7
    if cls in (_CLASS_ALU, _CLASS_ALU64):
        if opcode & _SRC_X:
            raise CoreError(f"instruction {index}: an ALU instruction with a register source")
        if r.validate and imm & _U64 != r.orig & _U64:
            raise CoreError(
                f"instruction {index} (ALU) holds {imm}, not the expected {r.orig} -> {r.new}"
            )
        new = r.new & 0xFFFFFFFF
        _INSN.pack_into(out, index * INSN_SIZE, opcode, regs, off, new - (new >> 31 << 32))
    elif cls in (_CLASS_LDX, _CLASS_ST, _CLASS_STX):
        if r.validate and off & _U64 != r.orig & _U64:
            raise CoreError(
                f"instruction {index} (LDX/ST/STX) has offset {off}, not the expected "
                f"{r.orig} -> {r.new}"
            )
        if r.new > _S16_MAX:
            raise CoreError(f"instruction {index}: offset {r.new} does not fit a load or store")
        if r.bad_size_change:  # the field's type changed: the verifier is told where
            _poison(out, index, False)
            return
        if r.new_size != r.orig_size:
            size = _SIZE_BYTES[opcode & 0x18]
            if size != r.orig_size:
                raise CoreError(
                    f"instruction {index} accesses {size} bytes; the field has {r.orig_size}"
                )
            new_size = _BYTES_SIZE.get(r.new_size)
            if new_size is None:
                raise CoreError(f"instruction {index}: no load or store of {r.new_size} bytes")
            opcode = (opcode & ~0x18) | new_size
        _INSN.pack_into(out, index * INSN_SIZE, opcode, regs, r.new, imm)
    elif cls == _CLASS_LD and is_ld_imm64:
        _, regs2, off2, imm2 = _INSN.unpack_from(out, (index + 1) * INSN_SIZE)
        if regs >> 4 or off or out[(index + 1) * INSN_SIZE] or regs2 or off2:
            raise CoreError(f"instruction {index} (ld_imm64) has an unexpected form")
        value = (imm & 0xFFFFFFFF) | (imm2 & 0xFFFFFFFF) << 32
        if r.validate and value != r.orig & _U64:
            raise CoreError(
                f"instruction {index} (ld_imm64) holds {value}, not the expected "
                f"{r.orig} -> {r.new}"
            )
        lo, hi = r.new & 0xFFFFFFFF, (r.new >> 32) & 0xFFFFFFFF
        _INSN.pack_into(out, index * INSN_SIZE, opcode, regs, off, lo - (lo >> 31 << 32))
        _INSN.pack_into(out, (index + 1) * INSN_SIZE, 0, 0, 0, hi - (hi >> 31 << 32))
    else:
        raise CoreError(f"instruction {index} (opcode {opcode:#04x}) cannot be relocated")


def _poison(out: bytearray, index: int, is_ld_imm64: bool) -> None:
    """`call 0xbad2310` (both halves of a ld_imm64): refused by the verifier if reachable."""
    for i in (index, index + 1) if is_ld_imm64 else (index,):
        _INSN.pack_into(out, i * INSN_SIZE, 0x85, 0, 0, POISON_HELPER)


# -- records of the object ------------------------------------------------------------------------


def object_core(
    btf: Btf, relos: Mapping[str, Sequence[CoreReloRecord]], spans: Mapping[str, list[int]]
) -> ObjectCore | None:
    """The object's records that lie in a function (`spans`: each section's function starts
    and ends, disjoint, flattened and sorted), in the order of `.BTF.ext`; None where there are
    none.
    Records elsewhere are left alone, as libbpf leaves them."""
    kept = []
    for section, records in relos.items():
        bounds = spans.get(section, [])
        for record in records:
            if bisect.bisect_right(bounds, record.insn) % 2:
                kept.append((section, record))
    if not kept:
        return None
    kept.sort(key=lambda item: item[1].number)
    return ObjectCore(btf, tuple(kept))


def poisoned_relocation(core: ObjectCore, relocations: Sequence[CoreRelocation], insn: int) -> str:
    """What the verifier's refusal of poisoned instruction `insn` means: the relocation this
    kernel lacks ('' where no relocation of the program is at `insn`)."""
    for relo in relocations:
        if relo.insn == insn:
            return f"CO-RE relocation {core.describe(relo.record)} not satisfied by this kernel"
    return ""


# -- a target read from a file ----------------------------------------------------------------

_ELF_HEADER = struct.Struct("<16sHHIQQQIHHHHHH")
_SECTION = struct.Struct("<IIQQQQIIQQ")


def read_target_btf(data: bytes, name: str) -> TargetBtf:
    """A target from a file's bytes: raw BTF (/sys/kernel/btf/vmlinux), or an ELF file of any
    machine with a `.BTF` section (a kernel's vmlinux, an object built with -g). Errors are
    CoreErrors naming the file."""
    try:
        raw = _elf_btf(data) if data[:4] == b"\x7fELF" else data
        return TargetBtf(name, parse_btf(raw))
    except ObjectFormatError as e:
        raise CoreError(f"target BTF {name}: {e}") from e


def _elf_btf(data: bytes) -> bytes:
    """The `.BTF` section of a 64-bit little-endian ELF file."""
    if len(data) < _ELF_HEADER.size or data[4] != 2 or data[5] != 1:
        raise CoreError("not a 64-bit little-endian ELF file")
    header = _ELF_HEADER.unpack_from(data)
    shoff, shentsize, shnum, shstrndx = header[6], header[11], header[12], header[13]
    if shentsize != _SECTION.size or not 0 < shstrndx < shnum or shoff + shnum * 64 > len(data):
        raise CoreError("the ELF section header table is malformed or truncated")
    sections = [_SECTION.unpack_from(data, shoff + 64 * i) for i in range(shnum)]
    names_at, names_size = sections[shstrndx][4], sections[shstrndx][5]
    if names_at + names_size > len(data):
        raise CoreError("the ELF section name table is truncated")
    names = data[names_at : names_at + names_size]
    for name_off, _, _, _, offset, size, *_ in sections:
        if names[name_off : name_off + 5] == b".BTF\0":
            if offset + size > len(data):
                raise CoreError("the .BTF section is truncated")
            return data[offset : offset + size]
    raise CoreError("the ELF file has no .BTF section")
