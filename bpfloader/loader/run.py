"""Runs of the loader: `load` (boot), `reload` (make the pins match the directory again) and
`unload`. Each takes the run lock, plans every object, applies, and records the state."""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from bpfloader.errors import LoaderError
from bpfloader.journal import Event, MessageId, Priority, Reporter
from bpfloader.kernel import pins as kpins
from bpfloader.kernel import system
from bpfloader.loader.gates import Environment
from bpfloader.loader.limits import map_ceiling, raise_memlock_if_needed
from bpfloader.loader.lock import run_lock
from bpfloader.loader.naming import object_name
from bpfloader.loader.parallel import apply_all, default_jobs
from bpfloader.loader.pin_root import close_staging, open_pin_root, symlink_on_path
from bpfloader.loader.plan import Action, ObjectPlan, Planner, RunPlan, SourceObject
from bpfloader.loader.policy import Policy, apply_policy, read_policy
from bpfloader.loader.results import ObjectResult, PinRecord, Skipped, Status
from bpfloader.loader.scan import scan
from bpfloader.loader.state import (
    LoaderState,
    ObjectState,
    PinState,
    SkipState,
    StateError,
    is_pin,
    read_state,
    rebuild,
    remove_leftovers,
    remove_loaded_marker,
    write_loaded_marker,
    write_state,
)
from bpfloader.loader.trust import TrustPolicy, refused
from bpfloader.locations import DEFAULT_STATE_DIR
from bpfloader.obj.ownership import Ownership
from bpfloader.version import LOADER_VERSION

if TYPE_CHECKING:
    from bpfloader.loader.apply import Applier
    from bpfloader.obj.spec import ObjectSpec

DEFAULT_SOURCE_DIR = "/etc/bpf"
DEFAULT_PIN_ROOT = "/sys/fs/bpf"
DEFAULT_LOCK_TIMEOUT = 120.0


@dataclass(frozen=True)
class LoadOptions:
    """Where to load from and into, and how (the command line of load, reload, unload)."""

    source_dir: str = DEFAULT_SOURCE_DIR
    pin_root: str = DEFAULT_PIN_ROOT
    dir_mode: int = 0o755
    build_type: str | None = None
    state_dir: str = DEFAULT_STATE_DIR
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT
    allow_untrusted: bool = False  # --insecure-allow-untrusted: the trust policy only warns
    max_map_memory: int | None = None  # bytes per map; None: DEFAULT_MAP_MEMORY; 0: no ceiling
    jobs: int = 0  # objects loaded at once; 0: one per CPU, at most DEFAULT_MAX_JOBS


@dataclass
class RunResult:
    """What a run did: every object in directory order, the pins it removed, its time."""

    objects: list[ObjectResult] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)  # pins a reload or unload took away
    wall_seconds: float = 0.0  # from the start of the run to its end
    jobs: int = 1  # objects loaded at once

    def count(self, status: Status) -> int:
        return sum(1 for o in self.objects if o.status is status)

    @property
    def critical_failures(self) -> list[ObjectResult]:
        return [o for o in self.objects if o.status is Status.FAILED and o.plan.critical]


def current_environment(build_type: str | None = None) -> Environment:
    release = system.kernel_release()
    return Environment(
        kernel=system.parse_kernel_release(release),
        loader_version=LOADER_VERSION,
        arch=system.machine(),
        build_type=build_type,
    )


def plan_run(
    options: LoadOptions,
    env: Environment,
    pin_exists: Callable[[str], bool],
    *,
    replace_programs: bool = False,
    recorded: LoaderState | None = None,
) -> RunPlan:
    """Read and plan every object in the source directory (pure but for reading the files)."""
    planned = plan_objects(
        scan(options.source_dir),
        options,
        env,
        pin_exists,
        replace_programs=replace_programs,
        recorded=recorded,
    )
    return RunPlan(list(planned))


def plan_objects(
    sources: list[SourceObject],
    options: LoadOptions,
    env: Environment,
    pin_exists: Callable[[str], bool],
    *,
    replace_programs: bool = False,
    recorded: LoaderState | None = None,
) -> Iterator[ObjectPlan]:
    """The plan of each object in turn, each read and parsed when it is its turn: a load starts
    on the first object while the next ones are still being read.

    An object whose content matches what `recorded` says is loaded, with every pin in place,
    is not parsed at all: a reload that finds nothing changed costs a hash per file."""
    planner = Planner(
        env,
        os.path.abspath(options.pin_root),
        pin_exists,
        replace=replace_programs,
        map_ceiling=map_ceiling(options.max_map_memory),
    )
    trust = TrustPolicy(options.source_dir)
    for source in sources:
        started = time.perf_counter()
        data = b""
        sha256 = None
        untrusted = trust.problem(source.path)
        if untrusted is not None and not options.allow_untrusted:
            # Nothing of an untrusted file is read: it is not even asked whether it is critical.
            yield planner.failed(source, refused(untrusted), False)
            continue
        try:
            with open(source.path, "rb") as f:
                data = f.read()
            policy = read_policy(source.path)
            sha256 = _content_hash(data, policy) if data else None
            old = recorded.objects.get(source.path) if recorded is not None else None
            if old is not None and _unchanged(old, sha256):
                plan = planner.unchanged(source, [pin.path for pin in old.pins], old.critical)
            else:
                plan = planner.plan(source, apply_policy(_parse(data, source.path), policy))
        except (LoaderError, OSError) as e:
            error = e if isinstance(e, LoaderError) else LoaderError(f"cannot read: {e.strerror}")
            plan = planner.failed(source, error, _declares_critical(data))
        parse_seconds = time.perf_counter() - started
        yield replace(plan, sha256=sha256, untrusted=untrusted, parse_seconds=parse_seconds)


def _parse(data: bytes, path: str) -> ObjectSpec:
    """The reader is imported only when an object has to be parsed: an unchanged reload never
    needs it (the import costs more than the rest of such a run)."""
    from bpfloader.obj.reader import read_object

    return read_object(data, path)


def _declares_critical(data: bytes) -> bool:
    from bpfloader.obj.reader import declares_critical

    return declares_critical(data)


def _content_hash(data: bytes, policy: Policy | None) -> str:
    digest = hashlib.sha256(data)
    if policy is not None:  # a changed policy is a changed object, for reload
        digest.update(b"\0policy\0" + policy.text)
    return digest.hexdigest()


def load(options: LoadOptions, reporter: Reporter) -> RunResult:
    """Boot: load every object; a pin already in place is kept as it is."""
    return _run(options, reporter, reloading=False)


def reload(
    options: LoadOptions, reporter: Reporter, *, recreate_incompatible_maps: bool = False
) -> RunResult:
    """Make the pins match the directory: unchanged objects are left alone, new ones loaded,
    changed ones get new programs swapped in (maps kept when their definition is unchanged),
    and the pins of removed objects are removed."""
    return _run(options, reporter, reloading=True, recreate=recreate_incompatible_maps)


def _run(
    options: LoadOptions, reporter: Reporter, *, reloading: bool, recreate: bool = False
) -> RunResult:
    started = time.perf_counter()
    env = current_environment(options.build_type)
    verb = "reloading" if reloading else "loading"
    _emit(
        reporter,
        MessageId.RUN_STARTED,
        Priority.INFO,
        f"{verb} {options.source_dir} into {options.pin_root} "
        f"(kernel {'.'.join(map(str, env.kernel))}, loader version {env.loader_version})",
    )
    raise_memlock_if_needed(env.kernel, reporter)
    if options.allow_untrusted:
        _emit(
            reporter,
            MessageId.TRUST_POLICY_OFF,
            Priority.WARNING,
            f"INSECURE: --insecure-allow-untrusted: the trust policy on {options.source_dir} is "
            "off; objects that someone other than root could have written will be loaded "
            "(for development only, never on a real system)",
        )
    pin_root = os.path.abspath(options.pin_root)
    result = RunResult()
    with run_lock(options.state_dir, options.lock_timeout):
        remove_leftovers(options.state_dir)
        staging = open_pin_root(pin_root, reporter)
        try:
            recorded, problem = _recorded_state(options, pin_root)
            sources = scan(options.source_dir)
            # The pins there before this run looked: a state rebuilt from the pins counts only
            # those, not the ones this run made meanwhile (its objects are planned as they load).
            found: set[str] = set()

            def pin_exists(path: str) -> bool:
                exists = os.path.lexists(path)
                if exists:
                    found.add(path)
                return exists

            planned: Iterable[ObjectPlan] = plan_objects(
                sources,
                options,
                env,
                pin_exists,
                replace_programs=reloading,
                recorded=recorded if reloading else None,
            )
            if reloading:
                planned = list(planned)  # what changed decides what there is to do
            # A reload leaves unchanged objects alone; only the others have kernel work.
            kept = {obj.path for obj in planned if obj.unchanged} if reloading else set()
            applier = (
                _applier(options, pin_root, staging, reporter, replace=reloading, recreate=recreate)
                if len(kept) < len(sources)
                else None
            )
            previous = recorded

            def all_planned(plans: list[ObjectPlan]) -> None:
                nonlocal previous
                if previous is None:
                    previous = _rebuilt_state(options, pin_root, plans, problem, found, reporter)

            def apply_one(obj: ObjectPlan, events: Reporter) -> ObjectResult:
                if obj.untrusted is not None:
                    _emit(
                        events,
                        MessageId.UNTRUSTED_OBJECT_ALLOWED,
                        Priority.WARNING,
                        f"{obj.path}: INSECURE: let through despite the trust policy "
                        f"(--insecure-allow-untrusted): {obj.untrusted}",
                        BPF_OBJECT=obj.path,
                    )
                if obj.path in kept:
                    assert recorded is not None
                    return _kept(obj, recorded.objects[obj.path], events)
                assert applier is not None
                return applier.apply(obj, events)

            jobs = min(options.jobs or default_jobs(), max(1, len(sources) - len(kept)))
            result.objects = apply_all(planned, apply_one, reporter, jobs, all_planned)
            result.jobs = jobs
            assert previous is not None
            state = _next_state(previous, result, reloading=reloading)
            if reloading:
                result.removed = remove_pins(previous, state, reporter)
            if state != recorded:  # a reload that changed nothing has nothing to record
                write_state(options.state_dir, state)
        finally:
            close_staging(staging)
        if not result.critical_failures:
            write_loaded_marker(options.state_dir, _marker(result, pin_root))
    result.wall_seconds = time.perf_counter() - started
    _emit(
        reporter,
        MessageId.RUN_FINISHED,
        Priority.ERR if result.critical_failures else Priority.INFO,
        f"{result.count(Status.LOADED)} loaded, {result.count(Status.SKIPPED)} skipped, "
        f"{result.count(Status.FAILED)} failed ({len(result.critical_failures)} critical)"
        + (f", {len(result.removed)} pins removed" if reloading else ""),
    )
    return result


def _applier(
    options: LoadOptions,
    pin_root: str,
    staging: str,
    reporter: Reporter,
    *,
    replace: bool,
    recreate: bool,
) -> Applier:
    """The kernel side is imported only when some object has kernel work: a reload that finds
    nothing changed never needs it."""
    from bpfloader.loader.apply import Applier

    return Applier(
        pin_root,
        staging,
        system.linux_version_code(system.kernel_release()),
        options.dir_mode,
        reporter,
        replace=replace,
        recreate_incompatible_maps=recreate,
    )


def unload(options: LoadOptions, reporter: Reporter, names: list[str]) -> RunResult:
    """Remove the pins of the named objects (a path, a file name, or FILENAME), or of all of
    them when no name is given: only pins the state records, never anything else."""
    pin_root = os.path.abspath(options.pin_root)
    if not kpins.is_bpffs(pin_root):
        raise LoaderError(
            f"pin root {pin_root} is not a bpf filesystem (mount it: mount -t bpf bpf {pin_root})"
        )
    result = RunResult()
    with run_lock(options.state_dir, options.lock_timeout):
        remove_leftovers(options.state_dir)
        env = current_environment(options.build_type)
        plan = (
            plan_run(options, env, os.path.lexists)
            if os.path.isdir(options.source_dir)
            else RunPlan()
        )
        previous = _previous_state(options, pin_root, plan, reporter)
        chosen = _select(previous, names)
        state = LoaderState(
            previous.pin_root,
            previous.source_dir,
            {path: obj for path, obj in previous.objects.items() if path not in chosen},
            previous.environment,
        )
        result.removed = remove_pins(previous, state, reporter)
        write_state(options.state_dir, state)
        if not state.objects:  # nothing of ours is pinned: services must not see "loaded"
            remove_loaded_marker(options.state_dir)
    return result


def _select(state: LoaderState, names: list[str]) -> set[str]:
    if not names:
        return set(state.objects)
    chosen = set()
    for name in names:
        matches = {
            path
            for path in state.objects
            if name in (path, os.path.basename(path), os.path.splitext(os.path.basename(path))[0])
            or name == _filename(path)
            or os.path.abspath(name) == path
        }
        if not matches:
            known = ", ".join(sorted(state.objects)) or "none"
            raise LoaderError(f"no object {name!r} is recorded as loaded (recorded: {known})")
        chosen |= matches
    return chosen


def _filename(path: str) -> str | None:
    """The object's FILENAME, the name in its pins (`offload@mainline.o` -> `offload`)."""
    try:
        return object_name(path)
    except LoaderError:
        return None


# -- state ---------------------------------------------------------------------------------


def environment_key(env: Environment) -> str:
    """What gates depend on: a state recorded under another environment is re-checked."""
    kernel = ".".join(map(str, env.kernel))
    return f"kernel {kernel}; loader {env.loader_version}; {env.arch}; {env.build_type}"


def _recorded_state(options: LoadOptions, pin_root: str) -> tuple[LoaderState | None, str]:
    """The recorded state if it can be used, else None and why not ('' when there is none)."""
    env_key = environment_key(current_environment(options.build_type))
    try:
        state = read_state(options.state_dir, pin_root)
    except StateError as e:
        return None, str(e)
    if state is not None and state.environment != env_key:
        return None, f"recorded under another environment ({state.environment})"
    return state, ""


def _previous_state(
    options: LoadOptions, pin_root: str, plan: RunPlan, reporter: Reporter
) -> LoaderState:
    """The recorded state, or one rebuilt from the pins and the objects when there is none."""
    recorded, problem = _recorded_state(options, pin_root)
    return recorded or _rebuilt_state(options, pin_root, plan.objects, problem, None, reporter)


def _rebuilt_state(
    options: LoadOptions,
    pin_root: str,
    plans: list[ObjectPlan],
    problem: str,
    found: set[str] | None,
    reporter: Reporter,
) -> LoaderState:
    env_key = environment_key(current_environment(options.build_type))
    rebuilt = rebuild(plans, pin_root, os.path.abspath(options.source_dir), env_key, found)
    if problem or rebuilt.objects:
        _emit(
            reporter,
            MessageId.STATE_REBUILT,
            Priority.WARNING if problem else Priority.NOTICE,
            f"state {problem or 'missing'}: rebuilt from the pins and the objects "
            f"({len(rebuilt.pin_paths())} pins attributed to {len(rebuilt.objects)} objects)",
        )
    return rebuilt


def _unchanged(old: ObjectState, sha256: str | None) -> bool:
    """Same content, loaded before, and every pin still there: nothing to do."""
    return (
        old.sha256 is not None
        and old.sha256 == sha256
        and old.status in (Status.LOADED, Status.SKIPPED)
        and all(is_pin(pin.path) for pin in old.pins)
    )


def _kept(plan: ObjectPlan, old: ObjectState, reporter: Reporter) -> ObjectResult:
    _emit(
        reporter,
        MessageId.OBJECT_UNCHANGED,
        Priority.INFO,
        f"{plan.path}: unchanged, left alone ({len(old.pins)} pins)",
        BPF_OBJECT=plan.path,
    )
    pins = [
        PinRecord(
            pin.path,
            pin.kind,
            pin.name,
            pin.kernel_id,
            Ownership(pin.uid, pin.gid, pin.mode),
            Action.KEEP,
            pin.verified_insns,
            None if pin.load_usec is None else pin.load_usec / 1e6,
        )
        for pin in old.pins
    ]
    skipped = [Skipped(s.kind, s.name, s.reason) for s in old.skipped]
    return ObjectResult(plan, Status(old.status), old.reason, pins, skipped)


def _next_state(previous: LoaderState, result: RunResult, *, reloading: bool) -> LoaderState:
    """The state after a run. A failed object whose earlier version is still pinned keeps that
    record (and its hash, so the next reload tries again); a load keeps the records of objects
    no longer in the directory (load never removes; reload does). A load that reused pins made
    from another file records no hash, so that the next reload re-checks the object."""
    objects = {} if reloading else dict(previous.objects)
    made = {pin.path for o in result.objects for pin in o.pins if pin.action is not Action.REUSE}
    for obj in result.objects:
        old = previous.objects.get(obj.path)
        if obj.plan.unchanged and old is not None:
            objects[obj.path] = old  # left alone: its record stays as it was
            continue
        critical = obj.plan.critical
        if obj.status is Status.FAILED and old is not None and old.pins:
            objects[obj.path] = ObjectState(
                obj.path, old.sha256, Status.FAILED, obj.reason, critical, old.pins, old.skipped
            )
            continue
        sha256 = obj.plan.sha256 if obj.status is not Status.FAILED else None
        if (
            not reloading
            and any(pin.action is Action.REUSE and pin.path not in made for pin in obj.pins)
            and (old is None or old.sha256 != sha256)
        ):
            sha256 = None  # pins found in place may come from an earlier version of the file
        objects[obj.path] = ObjectState(
            obj.path,
            sha256,
            obj.status,
            obj.reason,
            critical,
            [_pin_state(pin) for pin in obj.pins],
            [SkipState(s.kind, s.name, s.reason) for s in obj.skipped],
        )
    return LoaderState(previous.pin_root, previous.source_dir, objects, previous.environment)


def _pin_state(pin: PinRecord) -> PinState:
    return PinState(
        pin.path,
        pin.kind,
        pin.name,
        pin.kernel_id,
        pin.owner.uid,
        pin.owner.gid,
        pin.owner.mode,
        pin.verified_insns,
        None if pin.load_seconds is None else round(pin.load_seconds * 1e6),
    )


def remove_pins(previous: LoaderState, state: LoaderState, reporter: Reporter) -> list[str]:
    """Unlink the pins `previous` records and `state` no longer does; nothing else."""
    owners = {pin.path: obj.path for obj in previous.objects.values() for pin in obj.pins}
    removed = []
    for path in sorted(previous.pin_paths() - state.pin_paths()):
        if not os.path.lexists(path):
            # Gone already (a run killed after unlinking it): its directory may still be left.
            _remove_empty_dirs(os.path.dirname(path), previous.pin_root)
            continue
        problem = _not_a_recorded_pin(previous.pin_root, path)
        if problem:
            _emit(
                reporter,
                MessageId.PIN_REMOVED,
                Priority.WARNING,
                f"not removing {path}: {problem}",
                BPF_PIN=path,
            )
            continue
        os.unlink(path)
        removed.append(path)
        _emit(
            reporter,
            MessageId.PIN_REMOVED,
            Priority.INFO,
            f"removed pin {path}",
            BPF_PIN=path,
            BPF_OBJECT=owners[path],
        )
        _remove_empty_dirs(os.path.dirname(path), previous.pin_root)
    for path in sorted(set(previous.objects) - set(state.objects)):
        _emit(
            reporter,
            MessageId.OBJECT_REMOVED,
            Priority.INFO,
            f"{path}: no longer loaded, its pins are removed",
            BPF_OBJECT=path,
        )
    return removed


def _not_a_recorded_pin(pin_root: str, path: str) -> str:
    """Why the file at `path` cannot be the pin a state recorded ('' when it can be)."""
    link = symlink_on_path(pin_root, path)
    if link is not None:
        return f"{link} is a symbolic link now, the loader never follows links in the pin root"
    if stat.S_ISDIR(os.lstat(path).st_mode):
        return "it is a directory now, not the pin recorded"
    return ""


def _remove_empty_dirs(directory: str, pin_root: str) -> None:
    while os.path.abspath(directory) != os.path.abspath(pin_root) and directory.startswith(
        pin_root
    ):
        try:
            os.rmdir(directory)
        except OSError:
            return  # not empty: something else lives there
        directory = os.path.dirname(directory)


def _marker(result: RunResult, pin_root: str) -> dict[str, object]:
    return {
        "time": time.time(),
        "pid": os.getpid(),
        "pin_root": pin_root,
        "loaded": result.count(Status.LOADED),
        "skipped": result.count(Status.SKIPPED),
        "failed": result.count(Status.FAILED),
    }


def _emit(
    reporter: Reporter, message_id: MessageId, priority: Priority, message: str, **fields: str
) -> None:
    reporter.emit(Event(message_id, priority, message, dict(fields)))
