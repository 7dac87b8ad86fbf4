"""What the two event map consumers share: waiting with epoll, callbacks, iteration."""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable, Iterator
from typing import Any


class EventStream:
    """Records that programs send through a map, read as they come.

    read() takes what is there now; poll(timeout) waits up to `timeout` seconds (None: as
    long as it takes) for at least one record; consume(callback, timeout) hands each polled
    record to `callback`; records(idle_timeout) iterates until nothing came for that long.
    """

    def __init__(self, map_fd: int, path: str | None):
        self.fd = map_fd
        self.path = path
        self._epoll = select.epoll()

    def _watch(self, fd: int) -> None:
        self._epoll.register(fd, select.EPOLLIN)

    def read(self) -> list[bytes]:
        """The records there now, without waiting; [] if none."""
        raise NotImplementedError

    def poll(self, timeout: float | None = None) -> list[bytes]:
        """The records there, waiting up to `timeout` seconds (None: as long as it takes)
        for at least one; [] if none came in time."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (records := self.read()):
            remaining = -1.0 if deadline is None else deadline - time.monotonic()
            if deadline is not None and remaining <= 0:
                return []
            self._epoll.poll(remaining)
        return records

    def consume(self, callback: Callable[[bytes], Any], timeout: float | None = None) -> int:
        """poll(timeout), then callback(record) for each record; how many there were."""
        records = self.poll(timeout)
        for record in records:
            callback(record)
        return len(records)

    def records(self, idle_timeout: float | None = None) -> Iterator[bytes]:
        """Each record as it comes, until none came for `idle_timeout` seconds (None: for
        ever)."""
        while batch := self.poll(idle_timeout):
            yield from batch

    def __iter__(self) -> Iterator[bytes]:
        return self.records()

    def close(self) -> None:
        """Close the map's fd. Twice does nothing."""
        if self.fd >= 0:
            self._epoll.close()
            os.close(self.fd)
            self.fd = -1
