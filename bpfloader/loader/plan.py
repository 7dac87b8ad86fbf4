"""Planning: from parsed objects to a printable list of decisions. Pure: no syscalls.

A plan says, for every map and program, where it will be pinned, with which owner and mode,
and whether it is created (or reused, when a pin is already there) or skipped and why. An
object whose declarations cannot be honoured (bad names, colliding pins, two variants of one
program passing their gates) is failed here, before anything reaches the kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from bpfloader.errors import LoaderError, PlanError
from bpfloader.loader.gates import Environment, loader_skip_reason, skip_reason
from bpfloader.loader.limits import MapMemoryCeiling
from bpfloader.loader.naming import (
    check_subdir,
    map_pin_name,
    object_name,
    pin_path,
    program_pin_name,
)

if TYPE_CHECKING:
    from bpfloader.obj.ownership import Ownership
    from bpfloader.obj.spec import MapSpec, ObjectSpec, ProgramSpec


class Action(StrEnum):
    CREATE = "create"  # maps: create and pin
    LOAD = "load"  # programs: load and pin
    REUSE = "reuse"  # a pin is already there: check it matches and keep it
    REPLACE = "replace"  # reload: a new program (or recreated map) swapped in for the pinned one
    KEEP = "keep"  # reload: the object did not change; nothing is touched
    SKIP = "skip"  # gated out


@dataclass(frozen=True)
class SourceObject:
    """An object file found by the scan; `location` is its subdirectory ('' at the top)."""

    path: str
    location: str = ""


@dataclass(frozen=True)
class MapPlan:
    """What the run will do with one map: where it is pinned, and create, reuse or skip."""

    spec: MapSpec
    pin_path: str
    action: Action
    reason: str = ""

    @property
    def owner(self) -> Ownership:
        return self.spec.owner


@dataclass(frozen=True)
class ProgramPlan:
    """What the run will do with one program: where it is pinned, and load, reuse, replace
    or skip."""

    spec: ProgramSpec
    pin_path: str
    action: Action
    reason: str = ""

    @property
    def owner(self) -> Ownership:
        return self.spec.owner


@dataclass(frozen=True)
class ObjectPlan:
    """One object file: its spec and the plan of its maps and programs, or why it is skipped
    or failed before anything reaches the kernel."""

    source: SourceObject
    spec: ObjectSpec | None = None
    maps: tuple[MapPlan, ...] = ()
    programs: tuple[ProgramPlan, ...] = ()
    skip_reason: str | None = None
    error: LoaderError | None = None
    critical: bool = False
    sha256: str | None = None  # of the file's content, when it could be read
    untrusted: str | None = None  # why the trust policy would refuse it (let through: insecure)
    parse_seconds: float = 0.0  # reading, parsing and planning it (`load --stats`)
    unchanged: bool = False  # reload: as recorded, every pin in place; left alone, unparsed

    @property
    def path(self) -> str:
        return self.source.path


@dataclass
class RunPlan:
    """Every object of the source directory, in directory order (what `--dry-run` prints)."""

    objects: list[ObjectPlan] = field(default_factory=list)


PinExists = Callable[[str], bool]


class Planner:
    """Plans objects one after another, remembering which pin paths earlier objects claimed."""

    def __init__(
        self,
        env: Environment,
        pin_root: str,
        pin_exists: PinExists,
        *,
        replace: bool = False,
        map_ceiling: MapMemoryCeiling | None = None,
    ):
        self.env = env
        self.pin_root = pin_root
        self.pin_exists = pin_exists
        self.map_ceiling = map_ceiling
        self.replace = replace  # reload: programs already pinned are loaded anew and swapped in
        self.claimed: dict[str, str] = {}  # pin path -> object path that will make it

    def failed(self, source: SourceObject, error: LoaderError, critical: bool) -> ObjectPlan:
        return ObjectPlan(source=source, error=error.where(file=source.path), critical=critical)

    def plan(self, source: SourceObject, spec: ObjectSpec) -> ObjectPlan:
        critical = spec.is_critical
        reason = loader_skip_reason(spec.min_loader, spec.max_loader, self.env)
        if reason:
            return ObjectPlan(source=source, spec=spec, skip_reason=reason, critical=critical)
        try:
            maps = tuple(self._map(source, spec, m) for m in spec.maps)
            programs = self._programs(source, spec, maps)
            self._claim(source, maps, programs)
        except LoaderError as e:
            return self.failed(source, e, critical)
        return ObjectPlan(source=source, spec=spec, maps=maps, programs=programs, critical=critical)

    def _subdir(self, source: SourceObject, pin_subdir: str) -> str:
        if pin_subdir:
            return check_subdir(pin_subdir, "pin_subdir")
        return check_subdir(source.location, "location directory")

    def _map(self, source: SourceObject, obj: ObjectSpec, spec: MapSpec) -> MapPlan:
        try:
            name = map_pin_name(object_name(obj.path), spec.name, shared=spec.shared)
            path = pin_path(self.pin_root, self._subdir(source, spec.pin_subdir), name)
        except LoaderError as e:
            raise e.where(section="maps") from None
        reason = skip_reason(spec.gates, self.env)
        if reason:
            return MapPlan(spec, path, Action.SKIP, reason)
        if self.map_ceiling is not None:
            for declared in (spec, spec.inner) if spec.inner else (spec,):
                problem = self.map_ceiling.problem(declared)
                if problem:
                    raise PlanError(problem, section=obj.maps_section)
        claimed_shared = spec.shared and path in self.claimed
        action = Action.REUSE if claimed_shared or self.pin_exists(path) else Action.CREATE
        return MapPlan(spec, path, action)

    def _programs(
        self, source: SourceObject, obj: ObjectSpec, maps: tuple[MapPlan, ...]
    ) -> tuple[ProgramPlan, ...]:
        skipped_maps = {m.spec.name: m.reason for m in maps if m.action is Action.SKIP}
        plans: list[ProgramPlan] = []
        passing: dict[str, ProgramSpec] = {}  # pin path -> the variant that will be pinned there
        for spec in obj.programs:
            try:
                name = program_pin_name(object_name(obj.path), spec.pin_section)
                path = pin_path(self.pin_root, self._subdir(source, spec.pin_subdir), name)
            except LoaderError as e:
                raise e.where(section=spec.section) from None
            reason = skip_reason(spec.gates, self.env)
            if reason is None:
                reason = self._missing_map(spec, skipped_maps)
            if reason is not None:
                plans.append(ProgramPlan(spec, path, Action.SKIP, reason))
                continue
            if path in passing:
                first = passing[path]
                from bpfloader.obj.spec import ObjectStyle  # loaded with the object's spec

                if obj.style is ObjectStyle.LIBBPF:
                    raise PlanError(
                        f"programs '{first.function}' (section '{first.section}') and "
                        f"'{spec.function}' (section '{spec.section}') would both be pinned "
                        f"at {path}",
                        section=spec.section,
                    )
                raise PlanError(
                    f"sections '{first.section}' and '{spec.section}' both pass their "
                    f"gates and would both be pinned at {path}",
                    section=spec.section,
                )
            passing[path] = spec
            if self.pin_exists(path):
                action = Action.REPLACE if self.replace else Action.REUSE
            else:
                action = Action.LOAD
            plans.append(ProgramPlan(spec, path, action))
        return tuple(plans)

    @staticmethod
    def _missing_map(spec: ProgramSpec, skipped_maps: dict[str, str]) -> str | None:
        """A program using a gated-out map cannot load: skipped if optional, else an error."""
        for ref in spec.map_refs:
            if ref.map_name in skipped_maps:
                reason = f"uses map '{ref.map_name}', skipped here ({skipped_maps[ref.map_name]})"
                if spec.optional:
                    return reason
                raise PlanError(reason, section=spec.section)
        return None

    def unchanged(self, source: SourceObject, pin_paths: list[str], critical: bool) -> ObjectPlan:
        """An object a reload leaves alone, unparsed: its recorded pins stay claimed by it."""
        for path in pin_paths:
            self.claimed.setdefault(path, source.path)
        return ObjectPlan(source=source, critical=critical, unchanged=True)

    def _claim(
        self, source: SourceObject, maps: tuple[MapPlan, ...], programs: tuple[ProgramPlan, ...]
    ) -> None:
        """Two objects may share a `shared` map; any other pin path belongs to one object."""
        mine: list[str] = []
        items: tuple[MapPlan | ProgramPlan, ...] = (*maps, *programs)
        for plan in items:
            if plan.action is Action.SKIP:
                continue
            owner = self.claimed.get(plan.pin_path)
            shared = isinstance(plan, MapPlan) and plan.spec.shared
            if owner is not None and not shared:
                section = plan.spec.section if isinstance(plan, ProgramPlan) else "maps"
                raise PlanError(f"pin {plan.pin_path} is already made by {owner}", section=section)
            mine.append(plan.pin_path)
        for path in mine:
            self.claimed.setdefault(path, source.path)
