"""Applying a plan: maps and programs into the kernel, pins into place, all or nothing.

Every new pin is made in a private staging directory on the same bpffs, given its owner and
mode there, and only renamed to its final path once the whole object has loaded. If anything
fails, the staged pins are removed and the ones already renamed are taken back, so an object
either has all its pins or none, and no process ever sees a pin with the wrong owner or mode.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
import threading
import time
from dataclasses import dataclass

from bpfloader.errors import KernelError, LoaderError, PlanError
from bpfloader.journal import Event, MessageId, Priority, Reporter
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import pins as kpins
from bpfloader.kernel import programs as kprogs
from bpfloader.kernel.syscall import kernel_seconds
from bpfloader.loader import events
from bpfloader.loader.kernel_objects import (
    KernelObjects,
    effective_max_entries,
    stale_data,
)
from bpfloader.loader.pin_root import refuse_symlinks
from bpfloader.loader.plan import (
    Action,
    MapPlan,
    ObjectPlan,
    ProgramPlan,
    planned_skips,
    variant_outcome,
)
from bpfloader.loader.results import ObjectResult, PinRecord, Skipped, Status, Timings
from bpfloader.obj.bpftypes import kernel_map_flags
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.spec import MapSpec


class Applier:
    """Applies object plans. `replace` is reload's mode: a pinned program is loaded anew and
    swapped in, and a reused map takes the owner and mode now declared; otherwise (boot) a
    pin already in place is kept as it is. `recreate_incompatible_maps` lets a reload replace a
    map whose definition changed (losing its contents) instead of failing the object."""

    def __init__(
        self,
        pin_root: str,
        staging: str,
        kern_version: int,
        dir_mode: int,
        reporter: Reporter,
        *,
        replace: bool = False,
        recreate_incompatible_maps: bool = False,
    ):
        self.pin_root = pin_root
        self.kern_version = kern_version
        self.dir_mode = dir_mode
        self.reporter = reporter
        self.replace = replace
        self.recreate_incompatible_maps = recreate_incompatible_maps
        self.staging = staging  # made by pin_root.open_pin_root()
        self._staged_count = itertools.count(1)  # next() on it is atomic: threads share it
        # Objects loading side by side publish one at a time: a directory one makes must not
        # be removed by another's roll back before its pins are renamed into it.
        self.publishing = threading.Lock()

    # -- one object --------------------------------------------------------------------------

    def apply(self, plan: ObjectPlan, reporter: Reporter | None = None) -> ObjectResult:
        """Load one object; its events go to `reporter` (default: the run's). Objects may be
        applied from several threads at once, each with its own reporter."""
        reporter = reporter or self.reporter
        timings = Timings(parse=plan.parse_seconds)
        if plan.error is not None:
            return _failed(ObjectResult(plan, Status.FAILED, timings=timings), plan.error, reporter)
        result = ObjectResult(plan, Status.LOADED, timings=timings, skipped=planned_skips(plan))
        if plan.skip_reason is not None:
            result.status, result.reason = Status.SKIPPED, plan.skip_reason
            reporter.emit(events.object_skipped(plan.path, plan.skip_reason))
            return result
        kernel_before = kernel_seconds()
        work = _ObjectWork(self, plan, reporter)
        try:
            work.run(result)
        except (LoaderError, OSError) as e:
            work.roll_back()
            if isinstance(e, OSError):
                e = LoaderError(f"{e.strerror}: {e.filename}")
            return _failed(result, e.where(file=plan.path), reporter)
        finally:
            work.close()
            timings.kernel = kernel_seconds() - kernel_before
            timings.pin = work.pin_seconds
        for event in events.object_loaded(result):
            reporter.emit(event)
        return result

    def staged_path(self) -> str:
        return os.path.join(self.staging, f"pin_{os.getpid()}_{next(self._staged_count)}")


def _failed(result: ObjectResult, error: LoaderError, reporter: Reporter) -> ObjectResult:
    result.status, result.reason, result.pins = Status.FAILED, str(error), []
    reporter.emit(events.object_failed(result.path, error, result.plan.critical))
    return result


@dataclass(frozen=True)
class _Staged:
    staged: str  # the pin in the staging dir; after an exchange, the object it replaced
    final: str
    replaces: bool  # swap with the pin in place instead of adding a new one


class _ObjectWork:
    """The kernel objects, staged pins and published pins of one object while it loads."""

    def __init__(self, applier: Applier, plan: ObjectPlan, reporter: Reporter):
        self.applier = applier
        self.plan = plan
        self.reporter = reporter
        self.pin_seconds = 0.0
        self.fds: list[int] = []
        self.staged: list[_Staged] = []
        self.published: list[_Staged] = []
        self.made_dirs: list[str] = []
        assert plan.spec is not None
        self.kernel = KernelObjects(plan.spec, applier.kern_version, self._btf_refused)

    def _btf_refused(self, message: str) -> None:
        self.reporter.emit(
            Event(MessageId.BTF_REFUSED, Priority.WARNING, message, {"BPF_OBJECT": self.plan.path})
        )

    def run(self, result: ObjectResult) -> None:
        self.kernel.load_btf()
        map_fds: dict[str, int] = {}
        created: set[str] = set()
        for map_plan in self.plan.maps:
            if map_plan.action is not Action.SKIP:
                map_fds[map_plan.spec.name] = self._map(map_plan, result, created)
        prog_fds: dict[str, int] = {}
        loaded: set[str] = set()
        pinned: dict[str, str] = {}  # pin path -> the section pinned there (`$` variants)
        skipped = [s for s in result.skipped if s.kind == "map"]
        for prog_plan in self.plan.programs:
            section = prog_plan.spec.section
            why = variant_outcome(prog_plan, pinned)
            if why is None:
                why = self._program(prog_plan, map_fds, result, prog_fds, loaded)
            if why is None:
                pinned[prog_plan.pin_path] = section
            else:
                skipped.append(Skipped("program", section, why))
        result.skipped = skipped
        for map_plan in self.plan.maps:
            name = map_plan.spec.name
            if map_plan.spec.slots and name in map_fds:
                self.kernel.fill_slots(
                    map_plan.spec, map_fds[name], map_fds, prog_fds, name in created, loaded
                )
        self._publish()
        self._commit()

    # -- maps -------------------------------------------------------------------------------

    def _map(self, plan: MapPlan, result: ObjectResult, created: set[str]) -> int:
        spec = plan.spec
        fd = None if plan.action is Action.CREATE else self._open_existing(plan.pin_path, "map")
        note = ""
        if fd is not None:
            info = kmaps.map_info(fd)
            note = _incompatibility(plan.pin_path, spec, info) or stale_data(
                spec, fd, plan.pin_path
            )
            if not note:
                owner = _owner_of(plan.pin_path)
                if self.applier.replace and owner != spec.owner:
                    # A second pin of the same map, with the new owner and mode, swapped in:
                    # changing the pin in place would show a mix of old and new in between.
                    self._stage(fd, plan.pin_path, spec.owner, replaces=True)
                    owner = spec.owner
                result.pins.append(
                    PinRecord(plan.pin_path, "map", spec.name, info.id, owner, Action.REUSE)
                )
                return fd
            # Read-only data holds nothing of the map's users: a new version simply replaces it.
            recreate = self.applier.recreate_incompatible_maps or spec.frozen
            if not (self.applier.replace and recreate):
                hint = " (--recreate-incompatible-maps replaces it, losing its contents)"
                raise PlanError(
                    note + (hint if self.applier.replace else ""),
                    section=self.kernel.obj.maps_section,
                )
        new_fd = self.kernel.create_map(spec)
        created.add(spec.name)
        self.fds.append(new_fd)
        self._stage(new_fd, plan.pin_path, spec.owner, replaces=fd is not None)
        info = kmaps.map_info(new_fd)
        action = Action.CREATE if fd is None else Action.REPLACE
        result.pins.append(
            PinRecord(plan.pin_path, "map", spec.name, info.id, spec.owner, action, note=note)
        )
        return new_fd

    # -- programs ---------------------------------------------------------------------------

    def _program(
        self,
        plan: ProgramPlan,
        map_fds: dict[str, int],
        result: ObjectResult,
        prog_fds: dict[str, int],
        loaded_now: set[str],
    ) -> str | None:
        """Load (or reuse) and stage one program; None, or why an optional one is left out."""
        spec = plan.spec
        fd = None if plan.action is Action.LOAD else self._open_existing(plan.pin_path, "prog")
        if fd is not None and not self.applier.replace:
            prog_fds[spec.function] = fd
            info = kprogs.program_info(fd)
            if info.type != spec.type:
                raise PlanError(
                    f"pinned program {plan.pin_path} is of type {info.type}, "
                    f"the object declares {spec.type.name} ({int(spec.type)})",
                    section=spec.section,
                )
            result.pins.append(
                PinRecord(
                    plan.pin_path,
                    "program",
                    spec.section,
                    info.id,
                    _owner_of(plan.pin_path),
                    Action.REUSE,
                    info.verified_insns,
                )
            )
            return None
        try:
            loaded = self.kernel.load_program(spec, map_fds)
        except KernelError as e:
            e.where(file=self.plan.path, section=spec.section)
            if not spec.optional:
                raise  # reported once, as the object's failure, which carries the verifier log
            self.reporter.emit(events.program_rejected(self.plan.path, e, Priority.WARNING))
            return f"optional program failed to load: {e.reason}"
        self.fds.append(loaded.fd)
        prog_fds[spec.function] = loaded.fd
        loaded_now.add(spec.function)
        self._stage(loaded.fd, plan.pin_path, spec.owner, replaces=fd is not None)
        info = kprogs.program_info(loaded.fd)
        result.pins.append(
            PinRecord(
                plan.pin_path,
                "program",
                spec.section,
                info.id,
                spec.owner,
                Action.LOAD if fd is None else Action.REPLACE,
                info.verified_insns,
                loaded.load_seconds,
                info.jited_size,
            )
        )
        return None

    # -- pins -------------------------------------------------------------------------------

    def _open_existing(self, path: str, kind: str) -> int | None:
        """The object pinned at `path`, which must be of `kind` ("map" or "prog"); None if none.

        Only asked where the plan found a pin (or an earlier object will have made it): a pin
        the plan did not see is not looked for, and one that appears while the object loads
        makes its publication fail (RENAME_NOREPLACE), so it is never overwritten."""
        refuse_symlinks(self.applier.pin_root, path)  # BPF_OBJ_GET would follow them
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.lstat(path).st_mode):  # BPF_OBJ_GET would only say EACCES
                raise LoaderError(f"{path} is a directory, not a pinned {kind}")
        try:
            fd = kpins.open_pinned(path)
        except KernelError as e:
            if e.errno == errno.ENOENT:
                return None
            raise LoaderError(f"cannot open existing pin {path}: {e.reason}") from None
        self.fds.append(fd)
        found = kpins.object_kind(fd)
        if found != kind:
            raise LoaderError(f"pin {path} holds a BPF {found}, not a {kind}")
        return fd

    def _stage(self, fd: int, final: str, owner: Ownership, *, replaces: bool = False) -> None:
        started = time.perf_counter()
        staged = self.applier.staged_path()
        kpins.pin(fd, staged)
        self.staged.append(_Staged(staged, final, replaces))
        kpins.set_owner(staged, owner.uid, owner.gid, owner.mode)
        self.pin_seconds += time.perf_counter() - started

    def _publish(self) -> None:
        started = time.perf_counter()
        with self.applier.publishing:
            self._publish_staged()
        self.pin_seconds += time.perf_counter() - started

    def _publish_staged(self) -> None:
        for item in self.staged:
            self._make_dirs(os.path.dirname(item.final))
            try:
                if item.replaces:
                    kpins.exchange(item.staged, item.final)
                else:
                    kpins.publish(item.staged, item.final)
            except KernelError as e:
                if e.errno == errno.EEXIST:
                    raise LoaderError(
                        f"{item.final} appeared while the object was loading"
                    ) from None
                if e.errno == errno.ENOENT and item.replaces:
                    raise LoaderError(
                        f"{item.final} vanished while the object was loading"
                    ) from None
                raise
            self.published.append(item)
        self.staged = []

    def _commit(self) -> None:
        """Everything is in place: drop the pins that were swapped out."""
        for item in self.published:
            if item.replaces:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(item.staged)

    def _make_dirs(self, directory: str) -> None:
        refuse_symlinks(self.applier.pin_root, directory)
        missing = []
        while not os.path.lexists(directory):
            missing.append(directory)
            directory = os.path.dirname(directory)
        if not os.path.isdir(directory):
            raise LoaderError(f"{directory} is in the way of a pin directory: not a directory")
        for path in reversed(missing):
            os.mkdir(path)
            os.chmod(path, self.applier.dir_mode)  # exact mode, whatever the umask
            self.made_dirs.append(path)

    def roll_back(self) -> None:
        """Take back what was published (swap replaced pins back) and drop what was staged."""
        with self.applier.publishing:
            self._roll_back()

    def _roll_back(self) -> None:
        for item in reversed(self.published):
            if item.replaces:
                kpins.exchange(item.staged, item.final)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(item.staged if item.replaces else item.final)
        for item in self.staged:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(item.staged)
        for path in reversed(self.made_dirs):
            with contextlib.suppress(OSError):  # another object's pins live there now
                os.rmdir(path)
        self.staged, self.published, self.made_dirs = [], [], []

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.kernel.close()


def _incompatibility(path: str, spec: MapSpec, info: kmaps.MapInfo) -> str:
    """How a pinned map differs from the object's declaration ('' when it does not), the
    declaration taken as the kernel reports a map made from it (flags it adds or drops)."""
    for field_name, expected, found in (
        ("type", int(spec.type), info.type),
        ("key_size", spec.key_size, info.key_size),
        ("value_size", spec.value_size, info.value_size),
        ("max_entries", effective_max_entries(spec), info.max_entries),
        ("map_flags", kernel_map_flags(spec.type, spec.flags), info.flags),
    ):
        if expected != found:
            return (
                f"map '{spec.name}': pinned map {path} has {field_name} {found}, "
                f"the object declares {expected}"
            )
    return ""


def _owner_of(path: str) -> Ownership:
    st = os.lstat(path)
    return Ownership(uid=st.st_uid, gid=st.st_gid, mode=stat.S_IMODE(st.st_mode))
