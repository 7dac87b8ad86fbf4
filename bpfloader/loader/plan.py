"""Planning: from parsed objects to a printable list of decisions. Pure: no syscalls.

A plan says, for every map and program, where it will be pinned, with which owner and mode,
and whether it is created (or reused, when a pin is already there) or skipped and why. An
object whose declarations cannot be honoured (bad names, colliding pins, two variants of one
program passing their gates) is failed here, before anything reaches the kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bpfloader.errors import LoaderError, PlanError, show_name
from bpfloader.loader.gates import (
    Environment,
    android_map_for_kernel,
    loader_skip_reason,
    skip_reason,
)
from bpfloader.loader.limits import MapMemoryCeiling, RunMapMemory
from bpfloader.loader.naming import (
    check_subdir,
    given_pin_path,
    map_pin_name,
    object_name,
    pin_path,
    program_pin_name,
)
from bpfloader.loader.results import Action, Skipped
from bpfloader.obj.bpftypes import MapType, PinKind, map_facts

if TYPE_CHECKING:
    from bpfloader.obj.ownership import Ownership
    from bpfloader.obj.spec import MapSpec, ObjectSpec, ProgramSpec


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
    or skip. `variant_of` names the first `$` variant passing its gates at the same pin when
    this one passes too: then this one is skipped, or, if every variant ahead of it is
    optional, loaded only if they all fail to load (`is_fallback`)."""

    spec: ProgramSpec
    pin_path: str
    action: Action
    reason: str = ""
    variant_of: str = ""

    @property
    def is_fallback(self) -> bool:
        return bool(self.variant_of) and self.action is not Action.SKIP

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
    unchanged: bool = False  # reload: as recorded, every pin in place; left alone, unparsed

    @property
    def path(self) -> str:
        return self.source.path


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
        run_memory: RunMapMemory | None = None,
    ):
        self.env = env
        self.pin_root = pin_root
        self.pin_exists = pin_exists
        self.map_ceiling = map_ceiling
        self.run_memory = run_memory  # the maps of every object planned so far, and their ceiling
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
            problem = self.run_memory.problem(maps) if self.run_memory is not None else None
            if problem:
                raise PlanError(problem, section=spec.maps_section)
            self._claim(source, maps, programs, spec.maps_section)
            if self.run_memory is not None:
                self.run_memory.count(maps)
        except LoaderError as e:
            return self.failed(source, e, critical)
        return ObjectPlan(source=source, spec=spec, maps=maps, programs=programs, critical=critical)

    def _subdir(self, source: SourceObject, pin_subdir: str) -> str:
        if pin_subdir:
            return check_subdir(pin_subdir, "pin_subdir")
        return check_subdir(source.location, "location directory")

    def _map(self, source: SourceObject, obj: ObjectSpec, spec: MapSpec) -> MapPlan:
        if not _is_libbpf(obj):
            spec = android_map_for_kernel(spec, self.env)
        try:
            if spec.pin_path:
                path = given_pin_path(self.pin_root, spec.pin_path, "map pin")
            else:
                name = map_pin_name(_object_name(obj), spec.name, shared=spec.shared)
                path = pin_path(self.pin_root, self._subdir(source, spec.pin_subdir), name)
        except LoaderError as e:
            e.where(section=obj.maps_section)
            raise
        reason = skip_reason(spec.gates, self.env)
        if reason:
            return MapPlan(spec, path, Action.SKIP, reason)
        if map_facts(spec.type).needs_btf and not spec.btf_value_type_id:
            raise PlanError(untyped_map(obj, spec), section=obj.maps_section)
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
        """Android's rule for `$` variants (loadCodeSections in its loader): code sections are
        taken in the order of the section headers, and of those sharing one pin the first whose
        gates pass is pinned; a later one that passes too finds the pin taken and is skipped.
        An optional variant that fails to load leaves the pin free for the next one, which is
        why a variant behind optional ones is planned as their fallback."""
        skipped_maps = {m.spec.name: m.reason for m in maps if m.action is Action.SKIP}
        plans: list[ProgramPlan] = []
        passing: dict[str, list[ProgramSpec]] = {}  # pin path -> the variants passing there
        for spec in obj.programs:
            try:
                if spec.pin_path:
                    path = given_pin_path(self.pin_root, spec.pin_path, "program pin")
                else:
                    stem = spec.pin_section
                    name = program_pin_name(_object_name(obj), stem, libbpf=_is_libbpf(obj))
                    path = pin_path(self.pin_root, self._subdir(source, spec.pin_subdir), name)
            except LoaderError as e:
                e.where(section=spec.section)
                raise
            reason = skip_reason(spec.gates, self.env)
            if reason is not None:
                plans.append(ProgramPlan(spec, path, Action.SKIP, reason))
                continue
            ahead = passing.setdefault(path, [])
            variant_of = ahead[0].section if ahead else ""
            if ahead:
                _check_variants(obj, ahead[0], spec, path)
                if not all(variant.optional for variant in ahead):
                    reason = variant_skipped(variant_of)
                    plans.append(ProgramPlan(spec, path, Action.SKIP, reason, variant_of))
                    continue
            # A fallback that cannot load is no reason to fail: the variant ahead may load.
            reason = self._missing_map(spec, skipped_maps, spec.optional or bool(ahead))
            if reason is not None:
                plans.append(ProgramPlan(spec, path, Action.SKIP, reason))
                continue
            ahead.append(spec)
            if self.pin_exists(path):
                action = Action.REPLACE if self.replace else Action.REUSE
            else:
                action = Action.LOAD
            plans.append(ProgramPlan(spec, path, action, variant_of=variant_of))
        return tuple(plans)

    @staticmethod
    def _missing_map(spec: ProgramSpec, skipped_maps: dict[str, str], optional: bool) -> str | None:
        """A program using a gated-out map cannot load: skipped if optional, else an error."""
        for ref in spec.map_refs:
            if ref.map_name in skipped_maps:
                reason = f"uses map '{ref.map_name}', skipped here ({skipped_maps[ref.map_name]})"
                if optional:
                    return reason
                raise PlanError(reason, section=spec.section)
        return None

    def unchanged(self, source: SourceObject, pin_paths: list[str], critical: bool) -> ObjectPlan:
        """An object a reload leaves alone, unparsed: its recorded pins stay claimed by it."""
        for path in pin_paths:
            self.claimed.setdefault(path, source.path)
        return ObjectPlan(source=source, critical=critical, unchanged=True)

    def _claim(
        self,
        source: SourceObject,
        maps: tuple[MapPlan, ...],
        programs: tuple[ProgramPlan, ...],
        maps_section: str,
    ) -> None:
        """Two objects may share a `shared` map; any other pin path belongs to one object."""
        mine: set[str] = set()
        items: tuple[MapPlan | ProgramPlan, ...] = (*maps, *programs)
        for plan in items:
            if plan.action is Action.SKIP or plan.pin_path in mine:  # `$` variants share one
                continue
            owner = self.claimed.get(plan.pin_path)
            shared = isinstance(plan, MapPlan) and plan.spec.shared
            if owner is not None and not shared:
                section = plan.spec.section if isinstance(plan, ProgramPlan) else maps_section
                raise PlanError(f"pin {plan.pin_path} is already made by {owner}", section=section)
            mine.add(plan.pin_path)
        for path in mine:
            self.claimed.setdefault(path, source.path)


def variant_skipped(pinned: str) -> str:
    """Why a `$` variant is not pinned: `pinned`, ahead of it, is. (Where a line does not name
    the program already, variant_note says which variant this is.)"""
    return f"'{show_name(pinned)}' was pinned first"


def variant_note(plan: MapPlan | ProgramPlan) -> str:
    """What a line about a plan's pin adds for a `$` variant ('' for anything else): which
    variant it is, and for a fallback, when it loads. A skip's note goes before its reason."""
    if not isinstance(plan, ProgramPlan) or "$" not in plan.spec.section:
        return ""
    if plan.action is Action.SKIP:
        return variant_label(plan)
    note = f"  variant '{show_name(plan.spec.section)}'"
    if plan.is_fallback:
        note += ", loaded only if the optional variants ahead of it fail to load"
    return note


def variant_label(plan: ProgramPlan) -> str:
    """What goes before a reason about a `$` variant: which one ('' for other programs)."""
    section = plan.spec.section
    return f"variant '{show_name(section)}': " if "$" in section else ""


def variant_outcome(plan: ProgramPlan, pinned: Mapping[str, str]) -> str | None:
    """Why a program the plan gave a variant role is not loaded, now that the variants ahead
    of it have been tried (`pinned`: pin path -> the section pinned there by this object), or
    None when it is to be loaded: a fallback whose variants ahead all failed."""
    winner = pinned.get(plan.pin_path) if plan.variant_of else None
    if winner is not None:
        return variant_skipped(winner)
    return plan.reason if plan.action is Action.SKIP else None


def _is_libbpf(obj: ObjectSpec) -> bool:
    from bpfloader.obj.spec import ObjectStyle  # loaded with the object's spec

    return obj.style is ObjectStyle.LIBBPF


def _object_name(obj: ObjectSpec) -> str:
    """FILENAME of the object's pins, by the rule of its style (naming.object_name)."""
    return object_name(obj.path, libbpf=_is_libbpf(obj))


def _check_variants(obj: ObjectSpec, first: ProgramSpec, spec: ProgramSpec, path: str) -> None:
    """Two programs passing their gates at one pin must be `$` variants of one Android
    program; anything else (libbpf functions of one section, two sections that only meet
    once what a pin may not hold becomes '_') is an error naming both."""
    if _is_libbpf(obj):
        raise PlanError(
            f"programs '{first.name}' (section '{first.section}') and "
            f"'{spec.name}' (section '{spec.section}') would both be pinned at {path}",
            section=spec.section,
        )
    if first.base_section != spec.base_section:
        raise PlanError(
            f"sections '{first.section}' and '{spec.section}' are not variants of one program "
            f"but would both be pinned at {path}",
            section=spec.section,
        )


def planned_skips(plan: ObjectPlan) -> list[Skipped]:
    """The maps and programs the plan leaves out, and why."""
    maps = [
        Skipped(PinKind.MAP, m.spec.name, m.reason) for m in plan.maps if m.action is Action.SKIP
    ]
    return maps + [
        Skipped(PinKind.PROGRAM, p.spec.name, variant_label(p) + p.reason)
        for p in plan.programs
        if p.action is Action.SKIP
    ]


BUILD_WITH_BTF = (
    "build it with `bpfloader build` (which compiles with -g) or clang -g, and keep the .BTF "
    "section when stripping"
)


def untyped_map(obj: ObjectSpec, spec: MapSpec) -> str:
    """Why a map that the kernel makes only with BTF types has none, and what to do."""
    return (
        f"map '{spec.name}': a {MapType(spec.type).name} map needs BTF types, and "
        + missing_types(obj, spec.name)
    )


def missing_types(obj: ObjectSpec, map_name: str, *, refused: bool = False) -> str:
    """Why map `map_name` has no BTF types: the object has no BTF, the kernel `refused` it, or
    the object's BTF does not annotate the map; with what to do about it."""
    if obj.btf is None:
        return f"the object has no BTF: {BUILD_WITH_BTF}"
    if refused:
        return "the kernel refused the object's BTF (see the warning before this)"
    return (
        f"the object's BTF has none for it (no ____btf_map_{map_name}: declare it with "
        "bpf_helpers.h's macros)"
    )
