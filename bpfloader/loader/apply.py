"""Applying a plan: maps and programs into the kernel, pins into place, all or nothing.

The kernel side is the one load sequence of kernel_objects.py; this module pins what it made.
Every new pin is made in a private staging directory on the same bpffs, given its owner and
mode there, and only renamed to its final path once the whole object has loaded. If anything
fails, the staged pins are removed and the ones already renamed are taken back, so an object
either has all its pins or none, and no process ever sees a pin with the wrong owner or mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bpfloader.errors import KernelError, LoaderError
from bpfloader.journal import Priority, Reporter
from bpfloader.kernel import links as klinks
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import programs as kprogs
from bpfloader.kernel.fd import Fd
from bpfloader.kernel.syscall import kernel_seconds
from bpfloader.loader import attachments, events
from bpfloader.loader.kernel_objects import (
    BOOT,
    KernelObjects,
    LiveMap,
    LiveProgram,
    LoadedObject,
    LoadMode,
    write_struct_ops,
)
from bpfloader.loader.limits import open_files_error
from bpfloader.loader.naming import object_name
from bpfloader.loader.pin_root import PinRoot
from bpfloader.loader.plan import ObjectPlan, planned_skips
from bpfloader.loader.results import Action, ObjectResult, Pin, Status, Timings
from bpfloader.loader.source import PlannedObject
from bpfloader.obj.bpftypes import PinKind
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.spec import ObjectStyle, ProgramSpec


class Applier:
    """Applies object plans. `mode` is how the kernel side treats what is already pinned
    (kernel_objects.LoadMode: reload's replace, and whether it may recreate incompatible
    maps); in reload's mode a reused map also takes the owner and mode now declared."""

    def __init__(
        self,
        root: PinRoot,
        kern_version: int,
        dir_mode: int,
        reporter: Reporter,
        mode: LoadMode = BOOT,
        publishing: Callable[[ObjectResult], None] | None = None,
        recorded: Mapping[str, Pin] | None = None,
        by_hand: Mapping[str, list[Pin]] | None = None,
    ):
        self.root = root
        # The pins the state records, by path: a link's target, a program's id (what a
        # reload compares a declared attachment with, and finds others' links running by).
        self.recorded = recorded or {}
        self.by_hand = by_hand or {}  # links `bpfloader attach --pin` recorded, by object
        self.kern_version = kern_version
        self.dir_mode = dir_mode
        self.reporter = reporter
        self.mode = mode
        # Told of an object's pins before the first of them is renamed into place (the run's
        # publication record: a run killed meanwhile is known to the next one).
        self.before_publishing = publishing
        # Objects loading side by side publish one at a time: a directory one makes must not
        # be removed by another's roll back before its pins are renamed into it.
        self.publishing = threading.Lock()

    # -- one object --------------------------------------------------------------------------

    def apply(self, planned: PlannedObject, reporter: Reporter | None = None) -> ObjectResult:
        """Load one object; its events go to `reporter` (default: the run's). Objects may be
        applied from several threads at once, each with its own reporter."""
        reporter = reporter or self.reporter
        plan = planned.plan
        timings = Timings(parse=planned.read.parse_seconds)
        result = ObjectResult(
            plan, planned.read, Status.LOADED, timings=timings, skipped=planned_skips(plan)
        )
        if plan.error is not None:
            return _failed(result, plan.error, reporter)
        if plan.skip_reason is not None:
            result.status, result.reason = Status.SKIPPED, plan.skip_reason
            reporter.emit(events.object_skipped(plan.path, plan.skip_reason))
            return result
        kernel_before = kernel_seconds()
        work = _ObjectWork(self, plan, reporter)
        try:
            work.run(result)
        except (LoaderError, OSError) as e:  # an OSError: the pin root's files refused us
            work.close()  # its fds first: taking pins back opens directories (no EMFILE then)
            work.roll_back()
            error = open_files_error(e, plan) or (
                e if isinstance(e, LoaderError) else _file_error(e)
            ).where(file=plan.path)
            return _failed(result, error, reporter)
        finally:
            work.close()
            timings.kernel = kernel_seconds() - kernel_before
            timings.pin = work.pin_seconds
        for event in events.object_loaded(result):
            reporter.emit(event)
        return result


def _failed(result: ObjectResult, error: LoaderError, reporter: Reporter) -> ObjectResult:
    result.status, result.reason, result.pins = Status.FAILED, str(error), []
    reporter.emit(events.object_failed(result.path, error, result.plan.critical))
    return result


def _file_error(e: OSError) -> LoaderError:
    error = LoaderError(f"{e.strerror}: {e.filename}")
    error.__cause__ = e
    return error


@dataclass(frozen=True)
class _Staged:
    staged: str  # its name in the staging dir; after an exchange, the object it replaced
    final: str
    replaces: bool  # swap with the pin in place instead of adding a new one


class _ObjectWork:
    """The kernel objects, staged pins and published pins of one object while it loads."""

    def __init__(self, applier: Applier, plan: ObjectPlan, reporter: Reporter):
        self.applier = applier
        self.plan = plan
        self.reporter = reporter
        self.pin_seconds = 0.0
        self.loaded = LoadedObject()
        self.staged: list[_Staged] = []
        self.published: list[_Staged] = []
        self.made_dirs: list[str] = []
        # Links updated in place, each with the program it ran (until committed or rolled back).
        self.updated: list[tuple[Fd, Fd]] = []
        # A reload's replaced programs: the id of the one pinned before -> its successor.
        self.replaced: dict[int, LiveProgram] = {}
        self.declared_links: set[int] = set()  # ids of declared attachments' links, old and new
        # struct_ops maps without a link: the pinned ones a reload replaces (unregistered just
        # before their successors register), and those registered by this load (a roll back
        # unregisters them).
        self.unregistering: dict[str, Fd] = {}
        self.registered: list[Fd] = []

    def run(self, result: ObjectResult) -> None:
        assert self.plan.spec is not None
        kernel = KernelObjects(
            self.plan.spec, self.applier.kern_version, self._btf_refused, self._rejected
        )
        self.loaded = kernel.load(self.plan, self._open_existing, self.applier.mode)
        result.skipped = self.loaded.skipped
        result.pins = [self._map(m) for m in self.loaded.maps]
        result.pins += [self._program(p) for p in self.loaded.programs]
        self._publish(result)
        # Attached once the object's pins are in place; rolled back with them on a failure.
        for live in self.loaded.programs:
            result.pins += self._attach(live)
        result.pins += self._links_by_hand()
        for live_map in self.loaded.maps:
            if live_map.plan.spec.struct_ops is not None:
                result.pins += self._register(live_map)
        if self.replaced:
            self._links_of_others()
        if self.staged:
            with self.applier.publishing:
                self._publish_staged()
        self._commit()

    def _btf_refused(self, message: str) -> None:
        self.reporter.emit(events.btf_refused(self.plan.path, message))

    def _rejected(self, spec: ProgramSpec, error: KernelError) -> None:
        self.reporter.emit(events.program_rejected(self.plan.path, error, Priority.WARNING))

    # -- maps and programs, staged -------------------------------------------------------------

    def _map(self, live: LiveMap) -> Pin:
        spec, path = live.plan.spec, live.plan.pin_path
        target = spec.struct_ops_target
        if not live.created:
            owner = self.applier.root.owner_of(path)
            if self.applier.mode.replace and owner != spec.owner:
                # A second pin of the same map, with the new owner and mode, swapped in:
                # changing the pin in place would show a mix of old and new in between.
                self._stage(live.fd, path, spec.owner, replaces=True)
                owner = spec.owner
            return Pin(
                path, PinKind.MAP, spec.name, live.info.id, owner, Action.REUSE, target=target
            )
        if live.replaces and live.struct_ops is not None and not live.registered_by_link:
            old = self._open_existing(path, PinKind.MAP)
            if old is not None:
                self.unregistering[spec.name] = old
        self._stage(live.fd, path, spec.owner, replaces=live.replaces)
        action = Action.REPLACE if live.replaces else Action.CREATE
        return Pin(
            path,
            PinKind.MAP,
            spec.name,
            live.info.id,
            spec.owner,
            action,
            note=live.note,
            target=target,
        )

    def _program(self, live: LiveProgram) -> Pin:
        spec, path, info = live.plan.spec, live.plan.pin_path, live.info
        if not live.loaded:
            owner = self.applier.root.owner_of(path)
            return Pin(
                path,
                PinKind.PROGRAM,
                spec.name,
                info.id,
                owner,
                Action.REUSE,
                info.verified_insns,
                section=spec.section,
            )
        before = self.applier.recorded.get(path) if live.replaces else None
        if before is not None and before.kernel_id:  # 0: a state rebuilt from the pins
            self.replaced[before.kernel_id] = live
        self._stage(live.fd, path, spec.owner, replaces=live.replaces)
        return Pin(
            path,
            PinKind.PROGRAM,
            spec.name,
            info.id,
            spec.owner,
            Action.REPLACE if live.replaces else Action.LOAD,
            info.verified_insns,
            live.load_seconds,
            info.jited_size or 0,  # None: not JIT-compiled (bpf_jit_enable 0)
            section=spec.section,
        )

    # -- declared attachments ----------------------------------------------------------------

    def _attach(self, live: LiveProgram) -> list[Pin]:
        """The program attached where its policy file says, each link staged beside its pin
        (swapped for the link pinned there before, which then lets go of the old program); a
        program kept as it was keeps the links pinned for it."""
        spec, pin = live.plan.spec, live.plan.pin_path
        base = attachments.link_pin_base(pin, self.object_name, spec.name)
        pins: list[Pin] = []
        for index, declared in enumerate(spec.attach):
            if not live.loaded:
                kept = self._kept_links(base, index, spec, declared.target)
                if kept:
                    pins += kept
                    continue
            if live.replaces:
                updated = self._updated_link(live, base, index, declared.target)
                if updated is not None:
                    pins.append(updated)
                    continue
            try:
                attachment = attachments.attach(live.fd.number, pin, declared.target)
            except (LoaderError, OSError) as e:
                reason = e.reason if isinstance(e, LoaderError) else str(e)
                if declared.optional:
                    self.reporter.emit(
                        events.attachment_failed(self.plan.path, spec.name, declared.target, reason)
                    )
                    continue
                raise attachments.AttachmentError(
                    f"program {spec.name}: cannot attach to {declared.target}: {reason}",
                    section=spec.section,
                ) from e
            with attachment:
                if not attachment.links:
                    raise attachments.AttachmentError(
                        f"program {spec.name}: attached to {declared.target} without a BPF link "
                        "(this kernel has none for it), which nothing could hold once the "
                        "loader exits",
                        section=spec.section,
                    )
                for path, link in attachments.link_pin_names(base, index, attachment):
                    replaces = self._pinned(path, PinKind.LINK)
                    ident = klinks.link_info(link).id
                    self.declared_links.add(ident)
                    with Fd(os.dup(link)) as fd:
                        self._stage(fd, path, spec.owner, replaces=replaces)
                    action = Action.REPLACE if replaces else Action.CREATE
                    pins.append(
                        Pin(
                            path,
                            PinKind.LINK,
                            spec.name,
                            ident,
                            spec.owner,
                            action,
                            target=declared.target,
                        )
                    )
        return pins

    def _links_by_hand(self) -> list[Pin]:
        """The links `bpfloader attach --pin` made for the object's programs (by_hand.py):
        kept while they run the program pinned now; a replaced program's is updated in place
        where its kind of link allows, else attached anew to its recorded target and swapped
        in at its pin (overlap), as a declared attachment is. One whose pin is gone, or whose
        program the object no longer has, is forgotten (its pin, if any, then goes)."""
        programs = {live.plan.spec.name: live for live in self.loaded.programs}
        pins: list[Pin] = []
        for recorded in self.applier.by_hand.get(self.plan.path, []):
            live = programs.get(recorded.name)
            found = self._open_existing(recorded.path, PinKind.LINK)
            if found is None:
                continue
            with found:
                info = klinks.link_info(found.number)
                self.declared_links.add(info.id)
                if live is None:
                    continue
                kept = dataclasses.replace(
                    recorded,
                    kernel_id=info.id,
                    owner=self.applier.root.owner_of(recorded.path),
                    action=Action.REUSE,
                )
                if info.prog_id == live.info.id or not live.replaces:
                    pins.append(kept)
                    continue
                if info.type in klinks.UPDATABLE:
                    self._update(found, info, live)
                    pins.append(dataclasses.replace(kept, action=Action.UPDATE))
                    continue
            pins.append(self._attached_anew(live, recorded, kept))
        return pins

    def _attached_anew(self, live: LiveProgram, recorded: Pin, kept: Pin) -> Pin:
        """The new program attached to `recorded`'s target, its link staged to replace the old
        at the pin; where that cannot be done, the old link kept, running the old program, and
        a warning saying so."""
        spec = live.plan.spec
        try:
            attachment = attachments.attach(live.fd.number, live.plan.pin_path, recorded.target)
        except (LoaderError, OSError) as e:
            reason = e.reason if isinstance(e, LoaderError) else str(e)
            self.reporter.emit(
                events.attachment_failed(self.plan.path, spec.name, recorded.target, reason)
            )
            return kept
        with attachment:
            if len(attachment.links) != 1:
                return kept
            link = attachment.links[0][1]
            ident = klinks.link_info(link).id
            self.declared_links.add(ident)
            with Fd(os.dup(link)) as fd:
                self._stage(fd, recorded.path, kept.owner, replaces=True)
        return dataclasses.replace(kept, kernel_id=ident, action=Action.REPLACE)

    def _kept_links(self, base: str, index: int, spec: ProgramSpec, target: str) -> list[Pin]:
        """The link pinned for attachment `index` of a program kept as it was ([] if none)."""
        path = attachments.link_pin_path(base, index)
        found = self._open_existing(path, PinKind.LINK)
        if found is None:
            return []
        with found:
            ident = klinks.link_info(found.number).id
        owner = self.applier.root.owner_of(path)
        return [Pin(path, PinKind.LINK, spec.name, ident, owner, Action.REUSE, target=target)]

    def _updated_link(self, live: LiveProgram, base: str, index: int, target: str) -> Pin | None:
        """A reload's new program put into the link pinned for this attachment, where the
        state says it was made for this same target and its kind takes BPF_LINK_UPDATE (the
        link stays, with its id: nothing between the two programs goes unhandled); None where
        a new link must be made instead. Undone if the object then fails."""
        spec = live.plan.spec
        path = attachments.link_pin_path(base, index)
        recorded = self.applier.recorded.get(path)
        if recorded is None or recorded.target != target:
            return None
        found = self._open_existing(path, PinKind.LINK)
        if found is None:
            return None
        with found:
            info = klinks.link_info(found.number)
            self.declared_links.add(info.id)
            if info.type not in klinks.UPDATABLE:
                return None
            self._update(found, info, live)
        owner = self.applier.root.owner_of(path)
        return Pin(path, PinKind.LINK, spec.name, info.id, owner, Action.UPDATE, target=target)

    # -- struct_ops maps ----------------------------------------------------------------------

    def _register(self, live: LiveMap) -> list[Pin]:
        """Register a struct_ops map: by a link pinned beside the map (`link_FILENAME_MAP`; a
        reload puts the new map into that same link, BPF_LINK_UPDATE, so the kernel's struct
        is never without an implementation), or, for a `.struct_ops` map, by writing its value
        (a reload then unregisters the old map just before: those cannot be swapped)."""
        spec, path = live.plan.spec, live.plan.pin_path
        target = spec.struct_ops_target
        if not live.registered_by_link:
            if live.created:
                old = self.unregistering.get(spec.name)
                if old is not None:  # one unregistered already (bpftool's) fails nothing here
                    with contextlib.suppress(KernelError):
                        kmaps.delete(old.number, bytes(spec.key_size))
                write_struct_ops(live)
                self.registered.append(Fd(os.dup(live.fd.number)))
                self.reporter.emit(
                    events.struct_ops_registered(self.plan.path, spec.name, target, live.info.id)
                )
            return []
        link_path = attachments.link_pin_base(path, self.object_name, spec.name)
        found = self._open_existing(link_path, PinKind.LINK)
        if found is not None:
            with found:
                info = klinks.link_info(found.number)
                self.declared_links.add(info.id)
                action = self._registering_link(found, info, live)
            if action is not None:
                owner = self.applier.root.owner_of(link_path)
                return [
                    Pin(link_path, PinKind.LINK, spec.name, info.id, owner, action, target=target)
                ]
        try:
            link = Fd(klinks.create_link(live.fd.number, 0, klinks.BPF_STRUCT_OPS))
        except KernelError as e:
            assert spec.struct_ops is not None
            from bpfloader.obj.struct_ops import section_of

            raise e.explained(
                f"struct_ops map '{spec.name}': the kernel refused to register it as a struct "
                f"{spec.struct_ops.type_name} ({e.reason}: a name already taken?)",
                section=section_of(spec),
            ) from e
        with link:
            ident = klinks.link_info(link.number).id
            self.declared_links.add(ident)
            self._stage(link, link_path, spec.owner, replaces=found is not None)
        action = Action.REPLACE if found is not None else Action.CREATE
        return [Pin(link_path, PinKind.LINK, spec.name, ident, spec.owner, action, target=target)]

    def _registering_link(self, link: Fd, info: klinks.LinkInfo, live: LiveMap) -> Action | None:
        """What the link at a struct_ops map's link pin comes to: kept where it registers this
        map; updated in place where this map is new and it registers an earlier version (a
        state rebuilt from the pins knows no target: the pin's place says it is ours); None
        where a new link is to be made."""
        if not live.created and info.map_id == live.info.id:
            return Action.REUSE
        if live.created and info.type == klinks.LinkType.STRUCT_OPS and info.map_id:
            self._swap(link, Fd(kmaps.map_fd_by_id(info.map_id)), live.fd.number)
            return Action.UPDATE
        return None

    @property
    def object_name(self) -> str:
        """FILENAME of its link pins, by its format's rule (naming.object_name)."""
        assert self.plan.spec is not None
        return object_name(self.plan.path, libbpf=self.plan.spec.style is ObjectStyle.LIBBPF)

    def _pinned(self, path: str, kind: PinKind) -> bool:
        """Whether a pin of `kind` is at `path` (a link's: its id is then a declared one)."""
        found = self._open_existing(path, kind)
        if found is None:
            return False
        with found:
            if kind is PinKind.LINK:
                self.declared_links.add(klinks.link_info(found.number).id)
        return True

    def _update(self, link: Fd, info: klinks.LinkInfo, live: LiveProgram) -> None:
        """Put `live`'s program into the link (BPF_LINK_UPDATE, only while it runs the one it
        ran), keeping what it ran for a roll back."""
        self._swap(link, Fd(kprogs.program_fd_by_id(info.prog_id)), live.fd.number)

    def _swap(self, link: Fd, old: Fd, new: int) -> None:
        """BPF_LINK_UPDATE from `old` (owned from here on) to `new` (a program, or a struct_ops
        link's map), keeping `old` for a roll back."""
        try:
            klinks.update_link(link.number, new, old.number)
        except BaseException:
            old.close()
            raise
        self.updated.append((Fd(os.dup(link.number)), old))

    def _links_of_others(self) -> None:
        """Links the loader did not make (`bpfloader attach --pin`, bpftool, a daemon's) that
        run a program this reload replaced: each gets the new program where its kind of link
        takes BPF_LINK_UPDATE (undone if the object fails), else a warning that it still runs
        the old one."""
        for fd, info in klinks.every_link():
            with fd:
                live = self.replaced.get(info.prog_id)
                if live is None or info.id in self.declared_links:
                    continue
                spec, pin = live.plan.spec, live.plan.pin_path
                if info.type not in klinks.UPDATABLE:
                    self.reporter.emit(
                        events.link_stale(
                            self.plan.path,
                            pin,
                            spec.name,
                            info.id,
                            info.type_name,
                            info.prog_id,
                            live.info.id,
                        )
                    )
                    continue
                self._update(fd, info, live)
                self.reporter.emit(
                    events.link_updated(
                        self.plan.path, pin, spec.name, info.id, info.prog_id, live.info.id
                    )
                )

    # -- pins -------------------------------------------------------------------------------

    def _open_existing(self, path: str, kind: PinKind) -> Fd | None:
        """The object pinned at `path`, which must be of `kind`; None if none.

        Only asked where the plan found a pin (or an earlier object will have made it): a pin
        the plan did not see is not looked for, and one that appears while the object loads
        makes its publication fail (RENAME_NOREPLACE), so it is never overwritten."""
        return self.applier.root.open_pin(path, kind)

    def _stage(self, fd: Fd, final: str, owner: Ownership, *, replaces: bool = False) -> None:
        started = time.perf_counter()
        staged = self.applier.root.stage(fd, owner)
        self.staged.append(_Staged(staged, final, replaces))
        self.pin_seconds += time.perf_counter() - started

    def _publish(self, result: ObjectResult) -> None:
        started = time.perf_counter()
        with self.applier.publishing:
            if self.staged and self.applier.before_publishing is not None:
                self.applier.before_publishing(result)
            self._publish_staged()
        self.pin_seconds += time.perf_counter() - started

    def _publish_staged(self) -> None:
        root = self.applier.root
        for item in self.staged:
            self.made_dirs += root.publish(
                item.staged, item.final, replaces=item.replaces, dir_mode=self.applier.dir_mode
            )
            self.published.append(item)
        self.staged = []

    def _commit(self) -> None:
        """Everything is in place: drop the pins that were swapped out."""
        self._drop_updated()
        self._drop_registered()
        for item in self.published:
            if item.replaces:
                self.applier.root.unstage(item.staged)

    def roll_back(self) -> None:
        """Take back what was published (swap replaced pins back) and drop what was staged."""
        with self.applier.publishing:
            self._roll_back()

    def _roll_back(self) -> None:
        root = self.applier.root
        for link, old in reversed(self.updated):  # each link back to the program it ran
            klinks.update_link(link.number, old.number)
        self._drop_updated()
        for registered in self.registered:  # unregistered: their pins are about to go
            with contextlib.suppress(KernelError):
                kmaps.delete(registered.number, bytes(4))
        self._drop_registered()
        for item in reversed(self.published):
            if item.replaces:
                root.take_back(item.staged, item.final)
                root.unstage(item.staged)
            else:
                root.remove_pin(item.final)
        for item in self.staged:
            root.unstage(item.staged)
        root.remove_dirs(reversed(self.made_dirs))
        self.staged, self.published, self.made_dirs = [], [], []

    def _drop_updated(self) -> None:
        for link, old in self.updated:
            link.close()
            old.close()
        self.updated = []

    def _drop_registered(self) -> None:
        for fd in (*self.registered, *self.unregistering.values()):
            fd.close()
        self.registered, self.unregistering = [], {}

    def close(self) -> None:
        self.loaded.close()
        self._drop_registered()
