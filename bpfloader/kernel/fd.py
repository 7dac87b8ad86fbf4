"""Fd: a file descriptor this process owns, closed once."""

from __future__ import annotations

import os


class Fd:
    """Owns one file descriptor: `close()` closes it the first time and does nothing after,
    and a `with` block closes it at its end. `number` is the descriptor while it is open."""

    __slots__ = ("_number",)

    def __init__(self, number: int):
        self._number = number

    @property
    def number(self) -> int:
        if self._number < 0:
            raise ValueError("the file descriptor is closed")
        return self._number

    @property
    def closed(self) -> bool:
        return self._number < 0

    def close(self) -> None:
        number, self._number = self._number, -1
        if number >= 0:
            os.close(number)

    def __enter__(self) -> Fd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Fd({self._number})" if self._number >= 0 else "Fd(closed)"
