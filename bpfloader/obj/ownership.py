"""Who a pin belongs to and who may open it: what an object (or its policy) declares."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Ownership:
    """Owner, group and mode of a pin."""

    uid: int = 0
    gid: int = 0
    mode: int = 0o600

    def __str__(self) -> str:
        return f"{self.uid}:{self.gid} {self.mode:04o}"
