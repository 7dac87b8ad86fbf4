"""BpfMap: a pinned map as a Python mapping."""

from __future__ import annotations

import errno
import os
from collections.abc import ItemsView, Iterable, Iterator, Mapping, MutableMapping, ValuesView
from typing import Any

from bpfloader.client.codec import Codec, ValueType
from bpfloader.client.pinned import open_pin
from bpfloader.errors import KernelError, LoaderError, MapError
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import system
from bpfloader.kernel.syscall import UNSUPPORTED_ERRNOS
from bpfloader.obj.bpftypes import MapType, PinKind, map_facts

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2
MAX_RESTARTS = 100


class BpfMap(MutableMapping[Any, Any]):
    """A map opened from its pin. Keys and values are converted by `key` and `value`:
    a struct format ("I", "<Q", "4sI"), a ctypes type, or None for raw bytes. Their sizes are
    checked against the kernel's own description of the map when it is opened.

    Per-CPU maps hold one value per possible CPU: reading gives a list of them, in CPU order,
    and writing takes such a list.

    Iteration (keys, items(), values(), len) walks the map with BPF_MAP_GET_NEXT_KEY while
    other processes and programs may change it. It yields every key that is in the map for the
    whole walk exactly once, never a key twice; keys added or deleted during the walk may or
    may not appear, and items() skips keys deleted between their key and their value. When
    the key the walk stands on is deleted, the kernel starts it over from the first key; the
    walk then skips the keys it already gave. A map changing so fast that the walk restarts
    more than MAX_RESTARTS times raises MapError instead of walking forever.
    """

    def __init__(
        self, fd: int, key: ValueType = None, value: ValueType = None, path: str | None = None
    ):
        self.fd = fd
        self.path = path
        try:
            self.info = kmaps.map_info(fd)
            self.type = self.info.type
            self.facts = map_facts(self.type)
            if self.facts.keyless:
                raise MapError(f"a {type_name(self.type)} map has no keys: {self.facts.keyless}")
            self._key = Codec(key, self.info.key_size, "key")
            self._value = Codec(value, self.info.value_size, "value")
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
        cls, path: str, *, key: ValueType = None, value: ValueType = None, readonly: bool = False
    ) -> BpfMap:
        return cls(open_pin(path, PinKind.MAP, readonly=readonly), key, value, path)

    def close(self) -> None:
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
        data = kmaps.lookup(self.fd, self._key.encode(key), self._stored_size)
        if data is None:
            raise KeyError(key)
        return self._decode_value(data)

    def __contains__(self, key: object) -> bool:
        return kmaps.lookup(self.fd, self._key.encode(key), self._stored_size) is not None

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update_elem(key, value, BPF_ANY)

    def update_elem(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        """Write one element. BPF_NOEXIST refuses an existing key (KernelError EEXIST),
        BPF_EXIST a missing one (KernelError ENOENT)."""
        kmaps.update(self.fd, self._key.encode(key), self._encode_value(value), flags)

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
        if not kmaps.delete(self.fd, self._key.encode(key)):
            raise KeyError(key)

    def clear(self) -> None:
        """Delete every element; in an array, where none can be deleted, zero every value."""
        if self.facts.every_index:
            zero = bytes(self._stored_size)
            for index in range(self.info.max_entries):
                kmaps.update(self.fd, index.to_bytes(self.info.key_size, "little"), zero)
            return
        for key in list(self._walk()):
            kmaps.delete(self.fd, key)

    # ---- iteration ---------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        return (self._key.decode(key) for key in self._walk())

    def __len__(self) -> int:
        return sum(1 for _ in self._walk())

    def items(self) -> ItemsView[Any, Any]:
        return _Items(self)

    def values(self) -> ValuesView[Any]:
        return _Values(self)

    def lookup_batch(self, batch_size: int = 256) -> list[tuple[Any, Any]]:
        """Every (key, value), read `batch_size` at a time with BPF_MAP_LOOKUP_BATCH (one
        syscall per batch); on a kernel or map type without it, key by key like items()."""
        try:
            raw = self._read_batches(batch_size)
        except KernelError as e:
            if e.errno not in UNSUPPORTED_ERRNOS:
                raise
            raw = list(self._raw_items())
        return [(self._key.decode(k), self._decode_value(v)) for k, v in raw]

    def _read_batches(self, batch_size: int) -> list[tuple[bytes, bytes]]:
        found: list[tuple[bytes, bytes]] = []
        token: bytes | None = None
        while True:
            try:
                batch, next_token = kmaps.lookup_batch(
                    self.fd, token, batch_size, self.info.key_size, self._stored_size
                )
            except KernelError as e:
                if e.errno != errno.ENOSPC:
                    raise
                batch_size *= 2  # one hash bucket holds more elements than a batch
                continue
            found.extend(batch)
            if next_token is None:
                return found
            token = next_token

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

    def _encode_value(self, value: Any) -> bytes:
        if not self.cpus:
            return self._value.encode(value)
        if not isinstance(value, list) or len(value) != self.cpus:
            raise MapError(
                f"a per-CPU map takes a list of {self.cpus} values (one per possible CPU),"
                f" not {value!r}",
                file=self.path,
            )
        return b"".join(self._value.encode(v).ljust(self._slot, b"\0") for v in value)

    def _decode_value(self, data: bytes) -> Any:
        if not self.cpus:
            return self._value.decode(data)
        size = self.info.value_size
        return [
            self._value.decode(data[cpu * self._slot : cpu * self._slot + size])
            for cpu in range(self.cpus)
        ]


class _Items(ItemsView[Any, Any]):
    _mapping: BpfMap

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        bpf_map = self._mapping
        for key, value in bpf_map._raw_items():
            yield bpf_map._key.decode(key), bpf_map._decode_value(value)


class _Values(ValuesView[Any]):
    _mapping: BpfMap

    def __iter__(self) -> Iterator[Any]:
        bpf_map = self._mapping
        for _, value in bpf_map._raw_items():
            yield bpf_map._decode_value(value)


def type_name(map_type: int) -> str:
    try:
        return MapType(map_type).name
    except ValueError:
        return f"type {map_type}"
