"""What a run did to each object: its status, the pins it made or kept, what it skipped, and
where its time went. Plain values, apart from the kernel work that produces them (apply.py),
so that a reload with nothing to do, `status` and the reports need none of that work's code.
The same records are what the state file keeps between runs (state.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from bpfloader.obj.bpftypes import PinKind
from bpfloader.obj.ownership import Ownership

if TYPE_CHECKING:
    from bpfloader.loader.plan import ObjectPlan
    from bpfloader.loader.source import SourceRead


class Status(StrEnum):
    LOADED = "loaded"
    SKIPPED = "skipped"
    FAILED = "failed"
    PARTIAL = "partial"  # a run was killed while it published the pins (state and status only)


class Action(StrEnum):
    """What a run does, or did, with one map or program."""

    CREATE = "create"  # maps: create and pin
    LOAD = "load"  # programs: load and pin
    REUSE = "reuse"  # a pin is already there: check it matches and keep it
    REPLACE = "replace"  # reload: a new program (or recreated map) swapped in for the pinned one
    KEEP = "keep"  # reload: the object did not change; nothing is touched
    UPDATE = "update"  # reload: the pinned link now runs the new program (BPF_LINK_UPDATE)
    SKIP = "skip"  # gated out


UNKNOWN_OWNER = Ownership(mode=0)  # what a state rebuilt from the pins knows: nothing


@dataclass(frozen=True)
class Pin:
    """A pin the loader made or kept (a map, a program, or the link of a declared attachment,
    whose `name` is its program's): as a run reports it, and as the state file records it
    (which keeps neither `action`, read back as KEEP, nor `jited_size` and `note`)."""

    path: str
    kind: PinKind
    name: str  # the map's name, or the program's function name
    kernel_id: int = 0  # 0: not known (a state rebuilt from the pins)
    owner: Ownership = UNKNOWN_OWNER
    action: Action = Action.KEEP
    verified_insns: int | None = None  # programs
    load_seconds: float | None = None  # programs: time inside BPF_PROG_LOAD
    jited_size: int | None = None  # programs
    note: str = ""  # why a map was recreated
    section: str = ""  # programs: the code section, which says the `$` variant pinned
    target: str = ""  # links: where the program is attached (`bpfloader attach`'s syntax)
    declared: bool = True  # links: False for one made by hand (`bpfloader attach --pin`)

    @property
    def made(self) -> bool:
        """Made by this run (not found in place and kept)."""
        return self.action not in (Action.REUSE, Action.KEEP, Action.UPDATE)


@dataclass(frozen=True)
class Skipped:
    """A map or program left out, and why (its gates, a variant pinned before it, an optional
    program the kernel refused)."""

    kind: PinKind
    name: str  # the map's name, or the program's function name
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
    """What became of one object: loaded, skipped or failed, and its pins. `read` is what
    reading its file found (its hash, whether it was trusted)."""

    plan: ObjectPlan
    read: SourceRead
    status: Status
    reason: str = ""
    pins: list[Pin] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    # The pins a `load` kept that are not known to come from this file (state.stale_pins), and
    # why; a reload replaces them.
    stale: list[str] = field(default_factory=list)
    stale_reason: str = ""

    @property
    def path(self) -> str:
        return self.plan.path
