"""Resource limits: how much memory a map, and all the maps of a run, may claim; RLIMIT_MEMLOCK
on old kernels; RLIMIT_NOFILE, said as what it is when an object meets it.

A map's max_entries is a number in a file; the kernel allocates what it says (array and
preallocated hash maps at creation). A typo or a corrupted object asking for 2^32 entries
must be refused by name, by a ceiling the administrator can set, not end with the OOM killer
in the middle of boot. A ceiling per map is not enough on its own (five maps of 24% each pass
it), so the run has one too: the maps of all its objects together.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bpfloader.errors import KernelError, LoaderError
from bpfloader.journal import Reporter
from bpfloader.kernel import system
from bpfloader.loader import events
from bpfloader.loader.results import Action
from bpfloader.obj.bpftypes import map_facts

if TYPE_CHECKING:
    from bpfloader.loader.plan import MapPlan, ObjectPlan
    from bpfloader.obj.spec import MapSpec

DEFAULT_MAP_MEMORY = "25%"  # of physical memory, per map
# Of physical memory, for the maps of a whole run: twice the ceiling of one map, so that one map
# at its ceiling never stops the rest, and half the memory left to everything else at boot.
DEFAULT_RUN_MAP_MEMORY = "50%"
PAGE = 4096
# Before 5.11 the kernel charged BPF memory to RLIMIT_MEMLOCK; from 5.11 it is charged to
# the memory cgroup and the limit no longer applies.
MEMCG_ACCOUNTING = (5, 11, 0)

_SIZE = re.compile(r"(\d+)\s*([KMGT]?)(i?B)?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _round8(size: int) -> int:
    return (size + 7) & ~7


def map_memory(spec: MapSpec, possible_cpus: int) -> int:
    """The bytes a map's elements take when it is full: what the kernel allocates up front for
    arrays and preallocated hashes, and what any map may grow to. The kernel's own
    bookkeeping per element comes on top, so this is a lower bound of the real cost."""
    entries = spec.max_entries
    facts = map_facts(spec.type)
    if facts.capacity == "bytes":
        return entries  # max_entries is the ring's size in bytes
    if facts.capacity == "pages":
        return entries * PAGE
    if facts.local_storage:
        return 0  # one value per socket/inode/task/cgroup, made when used; max_entries is 0
    value = _round8(spec.value_size)
    if facts.per_cpu:
        value *= possible_cpus
    return entries * (_round8(spec.key_size) + value)


@dataclass(frozen=True)
class MapMemoryCeiling:
    """Per map; `limit` 0 means no ceiling."""

    limit: int
    possible_cpus: int

    def problem(self, spec: MapSpec) -> str | None:
        need = map_memory(spec, self.possible_cpus)
        if not self.limit or need <= self.limit:
            return None
        return (
            f"map '{spec.name}': {_declared(spec)} need at least {human_size(need)}, above the "
            f"map memory ceiling of {human_size(self.limit)} (--max-map-memory)"
        )


def _declared(spec: MapSpec) -> str:
    """What in the definition makes a map big, in its own terms."""
    facts = map_facts(spec.type)
    if facts.capacity == "bytes":
        return f"max_entries {spec.max_entries} (the ring's bytes)"
    if facts.capacity == "pages":
        return f"max_entries {spec.max_entries} (pages)"
    per_cpu = " per CPU" if facts.per_cpu else ""
    return (
        f"max_entries {spec.max_entries} of key_size {spec.key_size} and "
        f"value_size {spec.value_size}{per_cpu}"
    )


def parse_size(text: str, physical_memory: int) -> int:
    """'512M', '2GiB', '1048576', '25%' (of physical memory), '0' (no ceiling) -> bytes."""
    text = text.strip()
    if text.endswith("%"):
        percent = float(text[:-1])
        if not 0 <= percent <= 100:
            raise ValueError(f"not a percentage of memory: {text}")
        return int(physical_memory * percent / 100)
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (e.g. 512M, 2G, 25%, 0 for none)")
    return int(match[1]) * _UNITS[match[2].upper()]


def human_size(size: int) -> str:
    for unit in ("T", "G", "M", "K"):
        if size >= _UNITS[unit]:
            return f"{size / _UNITS[unit]:.1f} {unit}iB"
    return f"{size} bytes"


def map_ceiling(limit: int | None) -> MapMemoryCeiling:
    """The ceiling for this machine: `limit` bytes, or DEFAULT_MAP_MEMORY when None."""
    if limit is None:
        limit = parse_size(DEFAULT_MAP_MEMORY, system.physical_memory())
    return MapMemoryCeiling(limit, len(system.possible_cpus()))


@dataclass
class RunMapMemory:
    """The maps of a whole run against one ceiling (`limit` bytes; 0: none), counted as the
    planner takes the objects in directory order: an object whose maps would take the total
    above it fails, and those after it may still fit.

    Every map an object plans to hold counts, created or reused from its pin alike: a reused map
    takes its memory as much as a new one, and so a run decides the same whatever pins an earlier
    run left (a map two objects share counts once). What is counted stays counted, whether or
    not the object then loads: the decision depends on the declarations alone, never on the
    kernel or on which object finished loading first. Objects a reload leaves unchanged are not
    read again, so their maps are not counted: a reload checks what it loads, a boot checks all."""

    limit: int
    possible_cpus: int
    counted: dict[str, int] = field(default_factory=dict)  # pin path -> bytes

    @property
    def total(self) -> int:
        return sum(self.counted.values())

    def problem(self, maps: Iterable[MapPlan]) -> str | None:
        """Why an object with these maps would take the run over the ceiling, or None. Nothing
        is counted until `count`."""
        added = self._added(maps)
        need = sum(added.values())
        if not self.limit or self.total + need <= self.limit:
            return None
        return (
            f"its maps need at least {human_size(need)}, which would take the run's maps to "
            f"{human_size(self.total + need)}, above the run's map memory ceiling of "
            f"{human_size(self.limit)} (--max-run-map-memory)"
        )

    def count(self, maps: Iterable[MapPlan]) -> None:
        self.counted.update(self._added(maps))

    def _added(self, maps: Iterable[MapPlan]) -> dict[str, int]:
        """The maps (skipped ones aside) not counted yet, by pin path."""
        return {
            m.pin_path: map_memory(m.spec, self.possible_cpus)
            for m in maps
            if m.action is not Action.SKIP and m.pin_path not in self.counted
        }


def run_map_memory(limit: int | None) -> RunMapMemory:
    """The run's ceiling for this machine: `limit` bytes, or DEFAULT_RUN_MAP_MEMORY when None."""
    if limit is None:
        limit = parse_size(DEFAULT_RUN_MAP_MEMORY, system.physical_memory())
    return RunMapMemory(limit, len(system.possible_cpus()))


def open_files_error(error: BaseException, plan: ObjectPlan) -> LoaderError | None:
    """An object's failure for want of file descriptors (EMFILE, here or in the cause it was
    raised from) said as what it is, or None for any other failure. EMFILE surfaces where the
    next fd happened to be needed, often naming a staging path; the cause is the object's size
    against RLIMIT_NOFILE (an fd per map and program while it loads)."""
    seen: BaseException | None = error
    while seen is not None and not (isinstance(seen, OSError) and seen.errno == errno.EMFILE):
        seen = seen.__cause__
    if seen is None:
        return None
    soft, _ = system.open_files_limit()
    maps = sum(1 for m in plan.maps if m.action is not Action.SKIP)
    programs = sum(1 for p in plan.programs if p.action is not Action.SKIP)
    found = LoaderError(
        f"too many open files: the limit is {soft} (RLIMIT_NOFILE) and the object needs more "
        f"(it has {_count(maps, 'map')} and {_count(programs, 'program')}; raise LimitNOFILE=)",
        file=plan.path,
    )
    found.__cause__ = error
    return found


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def raise_memlock_if_needed(kernel: tuple[int, int, int], reporter: Reporter) -> None:
    """On kernels that charge maps and programs to RLIMIT_MEMLOCK, lift it for this process,
    as libbpf does: its usual default (64 KiB or 8 MiB) is used up by a few maps. Without
    CAP_SYS_RESOURCE only the soft limit can go up, as far as the hard one."""
    if kernel >= MEMCG_ACCOUNTING:
        return
    soft, hard = system.memlock_limit()
    if soft == system.RLIM_INFINITY:
        return
    charged = f"kernel {'.'.join(map(str, kernel))} charges BPF maps and programs to RLIMIT_MEMLOCK"
    try:
        system.set_memlock_limit(system.RLIM_INFINITY, system.RLIM_INFINITY)
    except KernelError as e:
        if hard != soft:
            system.set_memlock_limit(hard, hard)
        reporter.emit(events.memlock_low(charged, _limit_text(hard), e.reason))
        return
    reporter.emit(events.memlock_raised(charged, _limit_text(soft), _limit_text(hard)))


def _limit_text(limit: int) -> str:
    return "unlimited" if limit == system.RLIM_INFINITY else human_size(limit)
