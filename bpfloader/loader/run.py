"""Runs of the loader: `load` (boot) and `reload` (make the pins match the directory again).
Each takes the run lock, plans every object as it is read (source.py), applies (apply.py),
records the state (state.py) and, for a reload, removes the pins of objects no longer there.
`unload` is in unload.py."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bpfloader.errors import LoaderError
from bpfloader.journal import Reporter
from bpfloader.kernel import system
from bpfloader.loader import events
from bpfloader.loader.gates import Environment
from bpfloader.loader.limits import map_ceiling, raise_memlock_if_needed, run_map_memory
from bpfloader.loader.lock import run_lock
from bpfloader.loader.parallel import apply_all, default_jobs
from bpfloader.loader.pin_root import PinRoot
from bpfloader.loader.plan import Planner
from bpfloader.loader.results import ObjectResult, Pin, Status
from bpfloader.loader.scan import scan
from bpfloader.loader.source import (
    DEFAULT_MAX_OBJECT_BYTES,
    PlannedObject,
    RunPlan,
    plan_sources,
)
from bpfloader.loader.state import (
    Interrupted,
    LoaderState,
    ObjectState,
    clear_publishing,
    environment_key,
    next_state,
    read_interrupted,
    rebuild,
    record_publishing,
    recorded_state,
    refuse_other_pin_root,
    remove_leftovers,
    stale_pins,
    stale_reason,
    with_interrupted,
    without_missing_pins,
    write_loaded_marker,
    write_state,
)
from bpfloader.loader.state_dir import StateDir
from bpfloader.locations import DEFAULT_PIN_ROOT, DEFAULT_STATE_DIR
from bpfloader.obj.bpftypes import PinKind
from bpfloader.version import ANDROID_API_LEVEL, LOADER_VERSION

if TYPE_CHECKING:
    from bpfloader.loader.apply import Applier
    from bpfloader.loader.object_cache import ObjectCache

DEFAULT_SOURCE_DIR = "/etc/bpf"
DEFAULT_LOCK_TIMEOUT = 120.0


@dataclass(frozen=True)
class LoadOptions:
    """Where to load from and into, and how (the command line of load, reload, unload)."""

    source_dir: str = DEFAULT_SOURCE_DIR
    pin_root: str = DEFAULT_PIN_ROOT
    dir_mode: int = 0o755
    build_type: str | None = None
    android_api_level: int = ANDROID_API_LEVEL
    state_dir: str = DEFAULT_STATE_DIR
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    allow_untrusted: bool = False  # --insecure-allow-untrusted: the trust policy only warns
    shared_pin_root: bool = False  # --insecure-shared-pin-root: others may keep writing there
    max_object_size: int | None = None  # --max-object-size, bytes (see max_object_bytes)
    max_map_memory: int | None = None  # bytes per map; None: DEFAULT_MAP_MEMORY; 0: no ceiling
    max_run_map_memory: int | None = None  # the run's maps; None: DEFAULT_RUN_MAP_MEMORY; 0: none
    jobs: int = 0  # objects loaded at once; 0: one per CPU, at most DEFAULT_MAX_JOBS
    # The object cache of load and reload (--cache-dir); None: none (--no-cache). The command
    # line's default is locations.DEFAULT_CACHE_DIR; a caller of this library names one.
    cache_dir: str | None = None


@dataclass
class RunResult:
    """What a run did: every object in directory order, the pins it removed, its time."""

    objects: list[ObjectResult] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # pins a reload or unload took away
    unloaded: list[str] = field(default_factory=list)  # the objects an unload took away
    wall_seconds: float = 0.0  # from the start of the run to its end
    jobs: int = 1  # objects loaded at once

    def count(self, status: Status) -> int:
        return sum(1 for o in self.objects if o.status is status)

    @property
    def critical_failures(self) -> list[ObjectResult]:
        return [o for o in self.objects if o.status is Status.FAILED and o.plan.critical]


def current_environment(
    build_type: str | None = None, android_api_level: int = ANDROID_API_LEVEL
) -> Environment:
    """What the objects' gates are checked against: computed once per run, passed down."""
    release = system.kernel_release()
    return Environment(
        kernel=system.parse_kernel_release(release),
        loader_version=LOADER_VERSION,
        arch=system.machine(),
        build_type=build_type,
        android_api_level=android_api_level,
    )


def planner(
    options: LoadOptions,
    env: Environment,
    pin_exists: Callable[[str], bool],
    *,
    replace: bool = False,
) -> Planner:
    return Planner(
        env,
        os.path.abspath(options.pin_root),
        pin_exists,
        replace=replace,
        map_ceiling=map_ceiling(options.max_map_memory),
        run_memory=run_map_memory(options.max_run_map_memory),
    )


def plan_run(options: LoadOptions, env: Environment, pin_exists: Callable[[str], bool]) -> RunPlan:
    """Read and plan every object in the source directory (pure but for reading the files)."""
    planned = plan_sources(
        scan(options.source_dir),
        planner(options, env, pin_exists),
        allow_untrusted=options.allow_untrusted,
        max_object_bytes=max_object_bytes(options),
    )
    return RunPlan(list(planned))


def max_object_bytes(options: LoadOptions) -> int:
    """--max-object-size: None is the default ceiling, 0 none at all."""
    if options.max_object_size is None:
        return DEFAULT_MAX_OBJECT_BYTES
    return options.max_object_size or sys.maxsize


def rebuilt_state(
    options: LoadOptions,
    env: Environment,
    plans: Iterable[PlannedObject],
    problem: str,
    found: set[str] | None,
    reporter: Reporter,
    root: PinRoot,
) -> LoaderState:
    """A state rebuilt from the pins and the objects, when none can be used; said so."""
    source_dir = os.path.abspath(options.source_dir)
    objects = [p.plan for p in plans]
    rebuilt = rebuild(objects, root.path, source_dir, environment_key(env), root.is_pin, found)
    if problem or rebuilt.objects:
        reporter.emit(events.state_rebuilt(problem, len(rebuilt.pin_paths()), len(rebuilt.objects)))
    return rebuilt


@contextlib.contextmanager
def opened_cache(cache_dir: str | None, reporter: Reporter) -> Iterator[ObjectCache | None]:
    """The object cache for a run, None without one: not asked for, or not usable (said once:
    the run goes on without it). A run that did not write an entry says why at the end."""
    if cache_dir is None:
        yield None
        return
    from bpfloader.loader.object_cache import CacheUnusable, ObjectCache

    try:
        cache = ObjectCache.open(cache_dir)
    except CacheUnusable as e:
        why = f"not used: {e.reason}"
        reporter.emit(events.object_cache_unused(cache_dir, why, refused=e.refused))
        yield None
        return
    with cache:
        yield cache
    if cache.unwritten is not None:
        reporter.emit(events.object_cache_unused(cache.path, cache.unwritten, refused=False))


def load(options: LoadOptions, reporter: Reporter) -> RunResult:
    """Boot: load every object; a pin already in place is kept as it is."""
    return _Run(options, reporter, reloading=False).run()


def reload(
    options: LoadOptions, reporter: Reporter, *, recreate_incompatible_maps: bool = False
) -> RunResult:
    """Make the pins match the directory: unchanged objects are left alone, new ones loaded,
    changed ones get new programs swapped in (maps kept when their definition is unchanged),
    and the pins of removed objects are removed."""
    return _Run(options, reporter, reloading=True, recreate=recreate_incompatible_maps).run()


class _Run:
    """One load or reload, from the lock to the loaded marker."""

    def __init__(
        self, options: LoadOptions, reporter: Reporter, *, reloading: bool, recreate: bool = False
    ):
        self.options = options
        self.reporter = reporter
        self.reloading = reloading
        self.recreate = recreate
        self.env = current_environment(options.build_type, options.android_api_level)
        self.pin_root = os.path.abspath(options.pin_root)
        # The pins there before this run looked: a state rebuilt from the pins counts only
        # those, not the ones this run made meanwhile (its objects are planned as they load).
        self.found: set[str] = set()
        self.previous: LoaderState | None = None
        self.problem = ""  # why the recorded state could not be used
        self.kept: set[str] = set()  # a reload's unchanged objects, left alone
        self.applier: Applier | None = None
        self.interrupted = Interrupted()  # what a killed run was publishing

    def run(self) -> RunResult:
        started = time.perf_counter()
        options, reporter = self.options, self.reporter
        verb = "reloading" if self.reloading else "loading"
        kernel = ".".join(map(str, self.env.kernel))
        reporter.emit(
            events.run_started(
                verb, options.source_dir, options.pin_root, kernel, self.env.loader_version
            )
        )
        raise_memlock_if_needed(self.env.kernel, reporter)
        if options.allow_untrusted:
            reporter.emit(events.trust_policy_off(options.source_dir))
        if options.dir_mode & 0o022 and not options.shared_pin_root:
            raise LoaderError(
                f"--dir-mode {options.dir_mode:04o} would let others write in pin directories"
                " (allowed only with --insecure-shared-pin-root)"
            )
        result = RunResult()
        with (
            StateDir.open(options.state_dir) as state_dir,
            run_lock(state_dir, options.lock_timeout),
        ):
            remove_leftovers(state_dir)
            self.interrupted = read_interrupted(state_dir, self.pin_root)
            recorded, self.problem = recorded_state(state_dir, self.pin_root, self.env)
            if recorded is None and not self.problem:  # none for this pin root: another's?
                refuse_other_pin_root(state_dir, self.pin_root)
            with PinRoot.open(self.pin_root, reporter, shared=options.shared_pin_root) as root:
                self._objects(state_dir, root, result, recorded)
            if not result.critical_failures:
                write_loaded_marker(state_dir, _marker(result, self.pin_root))
        result.wall_seconds = time.perf_counter() - started
        reporter.emit(
            events.run_finished(
                result.count(Status.LOADED),
                result.count(Status.SKIPPED),
                result.count(Status.FAILED),
                len(result.critical_failures),
                len(result.removed) if self.reloading else None,
            )
        )
        return result

    def _objects(
        self, state_dir: StateDir, root: PinRoot, result: RunResult, recorded: LoaderState | None
    ) -> None:
        options = self.options
        self.root = root
        if recorded is not None:
            self.previous = self._checked(recorded)
        sources = scan(options.source_dir)
        with opened_cache(options.cache_dir, self.reporter) as cache:
            planned: Iterable[PlannedObject] = plan_sources(
                sources,
                planner(options, self.env, self._pin_exists, replace=self.reloading),
                allow_untrusted=options.allow_untrusted,
                recorded=self.previous if self.reloading else None,
                max_object_bytes=max_object_bytes(options),
                cache=cache,
            )
            if self.reloading:
                planned = list(planned)  # what changed decides what there is to do
                self.kept = {obj.path for obj in planned if obj.plan.unchanged}
            if len(self.kept) < len(sources):  # only the others have kernel work
                self.applier = self._applier(root, state_dir)
            jobs = min(options.jobs or default_jobs(), max(1, len(sources) - len(self.kept)))
            result.objects = apply_all(planned, self._apply, self.reporter, jobs, self._all_planned)
            result.jobs = jobs
            if cache is not None:
                cache.prune()
        assert self.previous is not None
        if not self.reloading:
            self._stale(result.objects, self.previous)
        state = next_state(self.previous, result.objects, reloading=self.reloading)
        if self.reloading:
            expected = self.interrupted.expected_ids()
            result.removed = root.remove_pins(self.previous, state, self.reporter, expected)
        if state != recorded:  # a reload that changed nothing has nothing to record
            write_state(state_dir, state)
        clear_publishing(state_dir)

    def _stale(self, results: list[ObjectResult], previous: LoaderState) -> None:
        """Say which objects a load kept pins of that may not come from their file now."""
        made = {pin.path for o in results for pin in o.pins if pin.made}
        for obj in results:
            if obj.status is not Status.LOADED:
                continue
            old = previous.objects.get(obj.path)
            obj.stale = stale_pins(old, obj, made)
            if obj.stale:
                obj.stale_reason = stale_reason(old)
                self.reporter.emit(events.pins_stale(obj.path, obj.stale, obj.stale_reason))

    def _checked(self, state: LoaderState) -> LoaderState:
        """The recorded state, where an object a killed run was publishing, or one of whose
        pins is gone, is not known to be as recorded (no hash: loaded again)."""
        for path, pins in self.interrupted.objects.items():
            self.reporter.emit(events.publication_interrupted(path, len(pins)))
        return with_interrupted(without_missing_pins(state, self.root.is_pin), self.interrupted)

    def _pin_exists(self, path: str) -> bool:
        exists = self.root.entry(path) is not None
        if exists:
            self.found.add(path)
        return exists

    def _all_planned(self, plans: list[PlannedObject]) -> None:
        if self.previous is None:
            rebuilt = rebuilt_state(
                self.options, self.env, plans, self.problem, self.found, self.reporter, self.root
            )
            self.previous = self._checked(rebuilt)

    def _applier(self, root: PinRoot, state_dir: StateDir) -> Applier:
        """The kernel side is imported only when some object has kernel work: a reload that
        finds nothing changed never needs it."""
        from bpfloader.loader.apply import Applier
        from bpfloader.loader.kernel_objects import LoadMode

        return Applier(
            root,
            self.env.linux_version_code,
            self.options.dir_mode,
            self.reporter,
            LoadMode(replace=self.reloading, recreate=self.recreate),
            lambda result: record_publishing(state_dir, result),
            recorded_pins(self.previous),
            links_by_hand(self.previous),
        )

    def _apply(self, planned: PlannedObject, reporter: Reporter) -> ObjectResult:
        if planned.read.untrusted is not None:
            reporter.emit(events.untrusted_object_allowed(planned.path, planned.read.untrusted))
        if planned.read.policy_ignored is not None:
            reporter.emit(events.policy_not_applied(planned.path, planned.read.policy_ignored))
        if planned.path in self.kept:
            assert self.previous is not None
            return _kept(planned, self.previous.objects[planned.path], reporter)
        assert self.applier is not None
        return self.applier.apply(planned, reporter)


def _kept(planned: PlannedObject, old: ObjectState, reporter: Reporter) -> ObjectResult:
    """An unchanged object's result: its record, as it was."""
    reporter.emit(events.object_unchanged(planned.path, len(old.pins)))
    return ObjectResult(
        planned.plan, planned.read, old.status, old.reason, list(old.pins), list(old.skipped)
    )


def _marker(result: RunResult, pin_root: str) -> dict[str, object]:
    return {
        "time": time.time(),
        "pid": os.getpid(),
        "pin_root": pin_root,
        "loaded": result.count(Status.LOADED),
        "skipped": result.count(Status.SKIPPED),
        "failed": result.count(Status.FAILED),
    }


def links_by_hand(state: LoaderState | None) -> dict[str, list[Pin]]:
    """The links `bpfloader attach --pin` made that the state records, by object."""
    if state is None:
        return {}
    found: dict[str, list[Pin]] = {}
    for obj in state.objects.values():
        for pin in obj.pins:
            if pin.kind is PinKind.LINK and not pin.declared:
                found.setdefault(obj.path, []).append(pin)
    return found


def recorded_pins(state: LoaderState | None) -> dict[str, Pin]:
    """Every pin the state records, by path."""
    if state is None:
        return {}
    return {pin.path: pin for obj in state.objects.values() for pin in obj.pins}
