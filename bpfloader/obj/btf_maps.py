"""BTF-defined maps: the variables of the `.maps` section, read through their BTF types.

libbpf's macros encode each attribute of a map in the *type* of a struct member:
`__uint(max_entries, 16)` is `int (*max_entries)[16]` (a pointer to an array whose length is
the value), `__type(key, T)` is `T *key`, and `__array(values, T)` is `T *values[]`, an array of
pointers to the inner map's definition (a map of maps) or to a function prototype (a prog
array). Initial `values` are relocations in `.rel.maps` pointing into that array.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.bpftypes import MapType
from bpfloader.obj.btf import Btf, BtfError, Kind
from bpfloader.obj.elf import STT_FUNC, STT_OBJECT, Relocation, Symbol
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.spec import MapSlot, MapSpec

MAPS_SECTION = ".maps"
LIBBPF_PIN_NONE = 0
LIBBPF_PIN_BY_NAME = 1
R_BPF_64_ABS64 = 2
POINTER_SIZE = 8
MAP_FD_SIZE = 4  # the value of a map of maps or a prog array, as user space writes it

_UINT_FIELDS = (
    "type",
    "key_size",
    "value_size",
    "max_entries",
    "map_flags",
    "numa_node",
    "map_extra",
    "pinning",
)
_MAPS_OF_MAPS = (MapType.ARRAY_OF_MAPS, MapType.HASH_OF_MAPS)


def _err(reason: str) -> ObjectFormatError:
    return ObjectFormatError(reason, section=MAPS_SECTION)


@dataclass
class _Def:
    """What one map definition struct says, field by field."""

    name: str
    uints: dict[str, int]
    key_type: int = 0
    value_type: int = 0
    key_size: int | None = None
    value_size: int | None = None
    values_offset: int | None = None  # byte offset of `values` in the definition
    inner: MapSpec | None = None
    prog_values: bool = False


def read_btf_maps(
    btf: Btf | None, symbols: list[Symbol], relocations: Iterable[Relocation]
) -> list[MapSpec]:
    """The maps declared in `.maps`, in the order of their definitions."""
    datasec = btf.datasec(MAPS_SECTION) if btf is not None else None
    if btf is None or datasec is None:
        raise _err(
            "BTF-defined maps need the object's BTF, which it lacks: build it with `bpfloader "
            "build` (which compiles with -g) or clang -g, and keep the .BTF section when stripping"
        )
    objects = {s.name: s for s in symbols if s.type == STT_OBJECT}
    offsets = {name: s.value for name, s in objects.items()}
    # By offset (file order among equals), so that each map finds its own by bisection.
    by_offset = sorted(relocations, key=_offset)
    maps = []
    for var in datasec.sec_vars:
        var_type = btf.type(var.type)
        name = var_type.name
        if name not in offsets:
            raise _err(f"map '{name}' has no symbol")
        start = offsets[name]
        try:
            definition = _read_def(btf, name, var_type.size_or_type)
        except BtfError as e:
            raise _err(f"map '{name}': {e}") from e
        # The symbol's size, not the type's: initial `values` extend the flexible array.
        slots = _slots(definition, start, objects[name].size, by_offset, offsets)
        maps.append(_spec(definition, slots))
    return maps


def _read_def(btf: Btf, name: str, type_id: int) -> _Def:
    struct_type = btf.resolve(type_id)
    if struct_type.kind is not Kind.STRUCT:
        raise BtfError(f"its definition is a {struct_type.kind.name}, not a struct")
    found = _Def(name, {})
    seen: set[str] = set()
    for member in struct_type.members:
        field = member.name
        if field in seen:  # a compiler never repeats one; a crafted struct would, 65535 times
            raise BtfError(f"field '{field}' is given twice in its definition")
        seen.add(field)
        if field in _UINT_FIELDS:
            found.uints[field] = _uint(btf, member.type, field)
        elif field in ("key", "value"):
            pointee = _pointee(btf, member.type, field)
            size = btf.size_of(pointee)
            if field == "key":
                found.key_type, found.key_size = pointee, size
            else:
                found.value_type, found.value_size = pointee, size
        elif field == "values":
            found.values_offset = member.bit_offset // 8
            _read_values(btf, found, member.type)
        else:
            raise BtfError(f"unknown field '{field}' in its definition")
    return found


def _uint(btf: Btf, type_id: int, field: str) -> int:
    """`__uint(field, N)`: a pointer to an array of N elements."""
    array = btf.resolve(_pointee(btf, type_id, field))
    if array.kind is not Kind.ARRAY or array.array is None:
        raise BtfError(f"field '{field}' is not declared with __uint()")
    return array.array[1]


def _pointee(btf: Btf, type_id: int, field: str) -> int:
    pointer = btf.resolve(type_id)
    if pointer.kind is not Kind.PTR:
        raise BtfError(
            f"field '{field}' is a {pointer.kind.name}, not declared with libbpf's macros"
        )
    return pointer.size_or_type


def _read_values(btf: Btf, found: _Def, type_id: int) -> None:
    """`__array(values, T)`: T a map definition (the inner map) or a function prototype."""
    array = btf.resolve(type_id)
    if array.kind is not Kind.ARRAY or array.array is None:
        raise BtfError("field 'values' is not declared with __array()")
    target = btf.resolve(_pointee(btf, array.array[0], "values"))
    if target.kind is Kind.FUNC_PROTO:
        found.prog_values = True
    elif target.kind is Kind.STRUCT:
        inner = _read_def(btf, f"{found.name}.inner", target.id)
        if inner.values_offset is not None:
            raise BtfError("an inner map cannot have values of its own")
        found.inner = _spec(inner, ())
    else:
        raise BtfError(f"'values' points to a {target.kind.name}, not a map or a function")


def _map_type(definition: _Def) -> MapType:
    number = definition.uints.get("type")
    if number is None:
        raise _err(f"map '{definition.name}' has no type")
    try:
        found = MapType(number)
    except ValueError as e:
        raise _err(f"map '{definition.name}' has unknown map type {number}") from e
    if found is MapType.UNSPEC:
        raise _err(f"map '{definition.name}' has map type 0 (UNSPEC)")
    return found


def _size(definition: _Def, which: str, from_type: int | None) -> int:
    given = definition.uints.get(f"{which}_size")
    if given is not None and from_type is not None and given != from_type:
        raise _err(
            f"map '{definition.name}': {which}_size {given} disagrees with its {which} type "
            f"({from_type} bytes)"
        )
    return given if given is not None else from_type or 0


def _spec(definition: _Def, slots: tuple[MapSlot, ...]) -> MapSpec:
    name = definition.name
    map_type = _map_type(definition)
    value_size = _size(definition, "value", definition.value_size)
    if map_type in _MAPS_OF_MAPS:
        if definition.inner is None:
            raise _err(
                f"map '{name}' is a map of maps without its inner map "
                "(declare it with __array(values, struct ...))"
            )
        value_size = value_size or MAP_FD_SIZE
    elif definition.inner is not None:
        raise _err(f"map '{name}' has an inner map but is a {map_type.name}, not a map of maps")
    if definition.prog_values:
        if map_type is not MapType.PROG_ARRAY:
            raise _err(f"map '{name}' has program values but is a {map_type.name}")
        value_size = value_size or MAP_FD_SIZE
    pinning = definition.uints.get("pinning", LIBBPF_PIN_NONE)
    if pinning not in (LIBBPF_PIN_NONE, LIBBPF_PIN_BY_NAME):
        raise _err(
            f"map '{name}' has pinning {pinning}; only LIBBPF_PIN_NONE (0) and "
            "LIBBPF_PIN_BY_NAME (1) are supported"
        )
    typed = definition.value_type != 0  # keyless types (bloom filters) have a value type only
    return MapSpec(
        name=name,
        type=map_type,
        key_size=_size(definition, "key", definition.key_size),
        value_size=value_size,
        max_entries=definition.uints.get("max_entries", 0),
        flags=definition.uints.get("map_flags", 0),
        owner=Ownership(),
        shared=pinning == LIBBPF_PIN_BY_NAME,
        btf_key_type_id=definition.key_type if typed else 0,
        btf_value_type_id=definition.value_type if typed else 0,
        inner=definition.inner,
        slots=slots,
        numa_node=definition.uints.get("numa_node", 0),
        map_extra=definition.uints.get("map_extra", 0),
    )


def _slots(
    definition: _Def,
    start: int,
    size: int,
    relocations: list[Relocation],
    offsets: dict[str, int],
) -> tuple[MapSlot, ...]:
    """The initial `values` of a map: relocations that land in its `values` array
    (`relocations`: ordered by offset)."""
    found = []
    lo = bisect.bisect_left(relocations, start, key=_offset)
    for reloc in relocations[lo : bisect.bisect_left(relocations, start + size, lo, key=_offset)]:
        where = reloc.offset - start
        if definition.values_offset is None or where < definition.values_offset:
            raise _err(f"map '{definition.name}': a relocation at byte {where} is not in 'values'")
        index, rest = divmod(where - definition.values_offset, POINTER_SIZE)
        if rest or reloc.type != R_BPF_64_ABS64:
            raise _err(f"map '{definition.name}': a relocation at byte {where} is not a pointer")
        symbol = reloc.symbol
        is_program = symbol.type == STT_FUNC
        if not is_program and symbol.name not in offsets:
            raise _err(
                f"map '{definition.name}': element {index} names '{symbol.name}', "
                "neither a program nor a map"
            )
        if is_program != definition.prog_values:
            kind = "programs" if definition.prog_values else "maps"
            raise _err(f"map '{definition.name}': element {index} must name one of its {kind}")
        found.append(MapSlot(index, symbol.name, is_program))
    return tuple(sorted(found, key=lambda s: s.index))


def _offset(reloc: Relocation) -> int:
    return reloc.offset
