"""What a run did to each object: its status, the pins it made or kept, what it skipped, and
where its time went. Plain values, apart from the kernel work that produces them (apply.py),
so that a reload with nothing to do, `status` and the reports need none of that work's code."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bpfloader.loader.plan import Action, ObjectPlan
    from bpfloader.obj.ownership import Ownership


class Status(StrEnum):
    LOADED = "loaded"
    SKIPPED = "skipped"
    FAILED = "failed"


@dataclass(frozen=True)
class PinRecord:
    """A pin this run made or found and kept."""

    path: str
    kind: str  # "map" or "program"
    name: str  # map name or program section
    kernel_id: int
    owner: Ownership
    action: Action
    verified_insns: int | None = None
    load_seconds: float | None = None
    jited_size: int | None = None
    note: str = ""  # why a map was recreated


@dataclass(frozen=True)
class Skipped:
    """A map or program left out, and why (its gates, or an optional program refused)."""

    kind: str  # "map" or "program"
    name: str
    reason: str


@dataclass
class Timings:
    """Where an object's time went (`load --stats`): reading and planning it, inside the bpf()
    calls that make kernel objects (the floor), and pinning (pin, owner and mode, rename)."""

    parse: float = 0.0
    kernel: float = 0.0
    pin: float = 0.0


@dataclass
class ObjectResult:
    """What became of one object: loaded, skipped or failed, and its pins."""

    plan: ObjectPlan
    status: Status
    reason: str = ""
    pins: list[PinRecord] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)

    @property
    def path(self) -> str:
        return self.plan.path
