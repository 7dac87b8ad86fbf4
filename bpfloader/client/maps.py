"""BpfMap: a pinned map as a Python mapping, its keys and values typed by the map's BTF or by
the caller."""

from __future__ import annotations

import errno
import os
from collections.abc import ItemsView, Iterable, Iterator, Mapping, MutableMapping, ValuesView
from typing import Any, NoReturn

from bpfloader.client.codec import FROM_BTF, Codec, ValueType
from bpfloader.client.layouts import Layout
from bpfloader.client.pinned import map_pin_path, open_pin
from bpfloader.errors import KernelError, LoaderError, MapError
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import system
from bpfloader.kernel.maps import MapInfo
from bpfloader.kernel.pins import BPF_F_RDONLY
from bpfloader.kernel.syscall import UNSUPPORTED_ERRNOS
from bpfloader.locations import DEFAULT_PIN_ROOT
from bpfloader.obj.bpftypes import MapType, PinKind, map_facts

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
MAX_RESTARTS = 100
MAX_BATCH_BYTES = 64 << 20  # what one lookup_batch call may ask the kernel to copy out


class BpfMap(MutableMapping[Any, Any]):
    """A map opened from its pin, as a Python mapping: m[k], m[k] = v, del m[k], `in`,
    iteration, len, items(), update(), clear().

    Keys and values are typed by the map's BTF by default (maps built with -g have it): ints,
    enums, structs as frozen dataclasses with named fields, arrays as tuples, char arrays as
    bytes (bpfloader.client.layouts says each); `key_type` and `value_type` are what they
    decode into (`m.value_type(pid=1, comm=b"sh")` builds a struct value). `key` and `value`,
    when given, win: a struct format ("I", "<Q", "4sI"), a ctypes type, or None for raw bytes
    (as is a map without BTF). Their sizes are checked against the kernel's own description of
    the map when it is opened. Reading a map's BTF takes CAP_SYS_ADMIN: another process gives
    `key` and `value` itself.

    Per-CPU maps hold one value per possible CPU: reading gives a list of them, in CPU order,
    and writing takes such a list.

    Iteration (keys, items(), values(), len) walks the map with BPF_MAP_GET_NEXT_KEY while
    other processes and programs may change it. It yields every key that is in the map for the
    whole walk exactly once, never a key twice; keys added or deleted during the walk may or
    may not appear, and items() skips keys deleted between their key and their value. When
    the key the walk stands on is deleted, the kernel starts it over from the first key; the
    walk then skips the keys it already gave. A map changing so fast that the walk restarts
    more than MAX_RESTARTS times raises MapError instead of walking forever.

    Errors: KernelError (an OSError with the kernel's errno) for what the kernel refused,
    MapError (a ValueError) for a key or value that does not fit the map, MapTypeError (a
    TypeError) for one of a Python type the map's type does not take.
    """

    def __init__(
        self,
        fd: int,
        key: ValueType = FROM_BTF,
        value: ValueType = FROM_BTF,
        path: str | None = None,
        *,
        readonly: bool = False,
    ):
        """Take over `fd`, a map fd (closed here if this fails); `readonly`: `fd` was opened
        read-only, which errors say when a write is refused."""
        self.fd = fd
        self.path = path
        self.readonly = readonly
        try:
            self.info = kmaps.map_info(fd)
            self.type = self.info.type
            self.facts = map_facts(self.type)
            if self.facts.keyless:
                raise MapError(f"a {type_name(self.type)} map has no keys: {self.facts.keyless}")
            key_kind, value_kind = _kinds(self.info, key, value)
            # How keys and values are converted (client/codec.py), each side by its type.
            self.key_codec = Codec(key_kind, self.info.key_size, "key")
            self.value_codec = Codec(value_kind, self.info.value_size, "value")
            # The kernel copies per-CPU values out 8-byte aligned, one per possible CPU.
            self.cpus = len(system.possible_cpus()) if self.facts.per_cpu else 0
            self._slot = (self.info.value_size + 7) & ~7
            self._stored_size = self._slot * self.cpus if self.cpus else self.info.value_size
        except BaseException as e:
            os.close(fd)
            if isinstance(e, LoaderError):
                e.where(file=path)
                raise
            raise

    @classmethod
    def open(
        cls,
        path: str,
        *,
        key: ValueType = FROM_BTF,
        value: ValueType = FROM_BTF,
        readonly: bool = False,
    ) -> BpfMap:
        """Open the map pinned at `path`. `key` and `value` type it (see the class); by
        default the map's own BTF types. A member of the pin's group whose mode lets the group
        only read (0640, 0440) opens it with `readonly=True`, and can then read but not write.

        PinOpenError (an OSError) where the kernel refused the pin, saying why: no such pin,
        or what the pin's owner, group and mode allow you; PinError for a pin of a program or
        link; MapError or MapTypeError for types that do not fit the map."""
        fd = open_pin(path, PinKind.MAP, readonly=readonly)
        return cls(fd, key, value, path, readonly=readonly)

    @classmethod
    def open_named(
        cls,
        obj: str | None,
        name: str,
        *,
        pin_root: str = DEFAULT_PIN_ROOT,
        subdir: str = "",
        key: ValueType = FROM_BTF,
        value: ValueType = FROM_BTF,
        readonly: bool = False,
    ) -> BpfMap:
        """Open map `name` of object `obj` where the loader pins it (README "Pin names"):
        `BpfMap.open_named("myschedtp", "cpu_pid_map")` opens
        /sys/fs/bpf/map_myschedtp_cpu_pid_map. `obj` is the object's FILENAME or its file's
        name (`netd.o`, `offload@mainline.o`, `minimal.bpf.o`: each format's rule); None for a
        shared map (map__NAME). `subdir`: the directory under `pin_root` its pins are in (the
        object's subdirectory of /etc/bpf, or its `pin_subdir`). An Android 2026 object's pins
        are where the object says: open() those by path. The rest is as open()."""
        path = map_pin_path(obj, name, pin_root=pin_root, subdir=subdir)
        return cls.open(path, key=key, value=value, readonly=readonly)

    @property
    def key_type(self) -> type | str:
        """What keys are made of: the class the map's BTF key type decodes into (a dataclass,
        an IntEnum, int, tuple, bytes), or the type given as `key` (bytes for raw keys)."""
        return self.key_codec.python_type

    @property
    def value_type(self) -> type | str:
        """As key_type, for values (of one CPU, in a per-CPU map)."""
        return self.value_codec.python_type

    def close(self) -> None:
        """Close the map's fd (the pin and the map stay). Closing twice does nothing."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> BpfMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<BpfMap {type_name(self.type)} {self.info.name!r} id {self.info.id}>"

    # ---- elements ---------------------------------------------------------------------------

    def __getitem__(self, key: Any) -> Any:
        data = kmaps.lookup(self.fd, self._encode_key(key), self._stored_size)
        if data is None:
            raise KeyError(key)
        return self._decode_value(data)

    def __contains__(self, key: object) -> bool:
        return kmaps.lookup(self.fd, self._encode_key(key), self._stored_size) is not None

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update_elem(key, value, BPF_ANY)

    def update_elem(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        """Write one element. BPF_NOEXIST refuses an existing key (KernelError EEXIST),
        BPF_EXIST a missing one (KernelError ENOENT)."""
        self._update(self._encode_key(key), self._encode_value(value), flags)

    def update(self, other: Any = (), /, *, flags: int = BPF_ANY, **named: Any) -> None:
        """MutableMapping.update, each element written with `flags` (see update_elem)."""
        if named:
            raise MapError("map keys are not names: pass a mapping or (key, value) pairs")
        pairs: Iterable[tuple[Any, Any]] = other.items() if isinstance(other, Mapping) else other
        for key, value in pairs:
            self.update_elem(key, value, flags)

    def __delitem__(self, key: Any) -> None:
        if self.facts.every_index:
            raise MapError(
                f"elements of a {type_name(self.type)} map cannot be deleted", file=self.path
            )
        if not self._delete(self._encode_key(key)):
            raise KeyError(key)

    def clear(self) -> None:
        """Delete every element; in an array, where none can be deleted, zero every value."""
        if self.facts.every_index:
            zero = bytes(self._stored_size)
            for index in range(self.info.max_entries):
                self._update(index.to_bytes(self.info.key_size, "little"), zero, BPF_ANY)
            return
        for key in list(self._walk()):
            self._delete(key)

    def _update(self, key: bytes, value: bytes, flags: int) -> None:
        try:
            kmaps.update(self.fd, key, value, flags)
        except KernelError as e:
            self._refused(e)

    def _delete(self, key: bytes) -> bool:
        try:
            return kmaps.delete(self.fd, key)
        except KernelError as e:
            self._refused(e)

    def _refused(self, e: KernelError) -> NoReturn:
        """Raise a refused write, said as why where EPERM means this map cannot be written."""
        if e.errno != errno.EPERM:
            raise e.where(file=self.path)
        if self.readonly:
            why = "the map was opened read-only (readonly=True): open it read-write to change it"
        elif self.info.flags & BPF_F_RDONLY:
            why = "the map is read-only to user space (created with BPF_F_RDONLY)"
        else:
            why = "the map is frozen: read-only to user space (BPF_MAP_FREEZE; .rodata is)"
        said = e.explained(f"{e.operation} failed: EPERM: {why}")
        raise said.where(file=self.path) from e

    # ---- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        return (self.key_codec.decode(key) for key in self._walk())

    def __len__(self) -> int:
        return sum(1 for _ in self._walk())

    def items(self) -> ItemsView[Any, Any]:
        """(key, value) of every element, one lookup per key of the walk (see the class)."""
        return _Items(self)

    def values(self) -> ValuesView[Any]:
        """The value of every element, as items() finds them."""
        return _Values(self)

    def lookup_batch(self, batch_size: int = 256) -> list[tuple[Any, Any]]:
        """Every (key, value), read `batch_size` at a time with BPF_MAP_LOOKUP_BATCH (one
        syscall per batch); on a kernel or map type without it, key by key like items(). A
        batch is never larger than the map, nor than MAX_BATCH_BYTES of keys and values."""
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"a batch holds at least 1 element, not {batch_size!r}")
        try:
            raw = self._read_batches(min(batch_size, self._largest_batch()))
        except KernelError as e:
            if e.errno not in UNSUPPORTED_ERRNOS:
                raise
            raw = list(self._raw_items())
        return [(self.key_codec.decode(k), self._decode_value(v)) for k, v in raw]

    def _read_batches(self, batch_size: int) -> list[tuple[bytes, bytes]]:
        found: list[tuple[bytes, bytes]] = []
        token: bytes | None = None
        while True:
            try:
                batch, next_token = kmaps.lookup_batch(
                    self.fd, token, batch_size, self.info.key_size, self._stored_size
                )
            except KernelError as e:
                if e.errno != errno.ENOSPC or batch_size >= self._largest_batch():
                    raise
                # one hash bucket holds more elements than a batch
                batch_size = min(batch_size * 2, self._largest_batch())
                continue
            found.extend(batch)
            if next_token is None:
                return found
            token = next_token

    def _largest_batch(self) -> int:
        element = self.info.key_size + self._stored_size
        return max(1, min(self.info.max_entries, MAX_BATCH_BYTES // max(element, 1)))

    def _walk(self) -> Iterator[bytes]:
        """Every key once, as bytes (see the class docstring for what a walk guarantees).

        Within one pass a forward walk never meets a key twice: meeting one again means the
        kernel restarted the pass from the first key."""
        given: set[bytes] = set()
        this_pass: set[bytes] = set()
        restarts = 0
        key: bytes | None = None
        while (key := kmaps.next_key(self.fd, key, self.info.key_size)) is not None:
            if key in this_pass:
                restarts += 1
                if restarts > MAX_RESTARTS:
                    raise MapError(
                        f"the map changed under iteration: restarted {restarts} times",
                        file=self.path,
                    )
                this_pass.clear()
            this_pass.add(key)
            if key not in given:
                given.add(key)
                yield key

    def _raw_items(self) -> Iterator[tuple[bytes, bytes]]:
        for key in self._walk():
            value = kmaps.lookup(self.fd, key, self._stored_size)
            if value is not None:  # deleted between its key and its value
                yield key, value

    def _encode_key(self, key: Any) -> bytes:
        try:
            return self.key_codec.encode(key)
        except LoaderError as e:
            e.where(file=self.path)
            raise

    def _encode_value(self, value: Any) -> bytes:
        try:
            if not self.cpus:
                return self.value_codec.encode(value)
            if not isinstance(value, list) or len(value) != self.cpus:
                raise MapError(
                    f"a per-CPU map takes a list of {self.cpus} values (one per possible CPU),"
                    f" not {value!r}"
                )
            return b"".join(self.value_codec.encode(v).ljust(self._slot, b"\0") for v in value)
        except LoaderError as e:
            e.where(file=self.path)
            raise

    def _decode_value(self, data: bytes) -> Any:
        if not self.cpus:
            return self.value_codec.decode(data)
        size = self.info.value_size
        return [
            self.value_codec.decode(data[cpu * self._slot : cpu * self._slot + size])
            for cpu in range(self.cpus)
        ]


class _Items(ItemsView[Any, Any]):
    _mapping: BpfMap

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        bpf_map = self._mapping
        for key, value in bpf_map._raw_items():
            yield bpf_map.key_codec.decode(key), bpf_map._decode_value(value)


class _Values(ValuesView[Any]):
    _mapping: BpfMap

    def __iter__(self) -> Iterator[Any]:
        bpf_map = self._mapping
        for _, value in bpf_map._raw_items():
            yield bpf_map._decode_value(value)


def _kinds(info: MapInfo, key: ValueType, value: ValueType) -> tuple[Any, Any]:
    """What the codecs take: each type given, or for FROM_BTF the layout of the map's BTF type
    (raw bytes where it has none)."""
    wanted = {
        what: type_id
        for what, given, type_id in (
            ("key", key, info.btf_key_type_id),
            ("value", value, info.btf_value_type_id),
        )
        if given is FROM_BTF and type_id
    }
    layouts = _btf_layouts(info, wanted) if wanted else {}
    return (
        layouts.get("key") if key is FROM_BTF else key,
        layouts.get("value") if value is FROM_BTF else value,
    )


def _btf_layouts(info: MapInfo, wanted: dict[str, int]) -> dict[str, Layout]:
    from bpfloader.client.layouts import layout
    from bpfloader.kernel.btf import loaded_btf
    from bpfloader.obj.btf import BtfError, parse_btf

    try:
        raw = loaded_btf(info.btf_id)
    except KernelError as e:
        if e.errno != errno.EPERM:
            raise
        raise e.explained(
            f"the map's {' and '.join(wanted)} types are in its BTF (id {info.btf_id}), which"
            f" the kernel shows only to CAP_SYS_ADMIN: give {'= and '.join(wanted)}= types"
            " (None for raw bytes)"
        ) from e
    try:
        btf = parse_btf(raw)
    except BtfError as e:
        raise MapError(f"the map's BTF (id {info.btf_id}): {e.reason}") from e
    sizes = {"key": info.key_size, "value": info.value_size}
    return {what: layout(btf, type_id, sizes[what], what) for what, type_id in wanted.items()}


def type_name(map_type: int) -> str:
    """A map type's name (HASH, RINGBUF, ...), or its number for one this package lacks."""
    try:
        return MapType(map_type).name
    except ValueError:
        return f"type {map_type}"
