"""BpfMap: a pinned map as a Python mapping."""

from __future__ import annotations

import os
from collections.abc import Iterator, MutableMapping
from typing import Any

from bpfloader.client.codec import Codec, ValueType
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import pins as kpins

BPF_ANY, BPF_NOEXIST, BPF_EXIST = 0, 1, 2


class BpfMap(MutableMapping[Any, Any]):
    """A map opened from its pin. Keys and values are converted by `key` and `value`:
    a struct format ("I", "<Q", "4sI"), a ctypes type, or None for raw bytes. Their sizes are
    checked against the kernel's own description of the map when it is opened."""

    def __init__(self, fd: int, key: ValueType = None, value: ValueType = None):
        self.fd = fd
        try:
            self.info = kmaps.map_info(fd)
            self._key = Codec(key, self.info.key_size, "key")
            self._value = Codec(value, self.info.value_size, "value")
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def open(
        cls, path: str, *, key: ValueType = None, value: ValueType = None, readonly: bool = False
    ) -> BpfMap:
        return cls(kpins.open_pinned(path, readonly=readonly), key, value)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> BpfMap:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getitem__(self, key: Any) -> Any:
        data = kmaps.lookup(self.fd, self._key.encode(key), self.info.value_size)
        if data is None:
            raise KeyError(key)
        return self._value.decode(data)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.update_elem(key, value, BPF_ANY)

    def update_elem(self, key: Any, value: Any, flags: int = BPF_ANY) -> None:
        kmaps.update(self.fd, self._key.encode(key), self._value.encode(value), flags)

    def __delitem__(self, key: Any) -> None:
        if not kmaps.delete(self.fd, self._key.encode(key)):
            raise KeyError(key)

    def __iter__(self) -> Iterator[Any]:
        key = None
        while (key := kmaps.next_key(self.fd, key, self.info.key_size)) is not None:
            yield self._key.decode(key)

    def __len__(self) -> int:
        return sum(1 for _ in self)
