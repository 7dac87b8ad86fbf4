"""What the loader made, remembered between runs: /run/bpfloader/state.json.

The state records, per object, the content hash it was loaded from, how it went, and every
pin made or kept for it. `reload` compares it with the directory to touch only what changed,
and removes only pins listed here: a pin the state does not name is never deleted.

The file is written atomically (temporary file, fsync, rename, fsync of the directory). It
is never trusted blindly: a missing, unreadable or malformed file is reported and rebuilt
from the pins themselves plus the objects (`rebuild`), with unknown content hashes, so the
next reload re-checks every object. `next_state` is how a run's results become the record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

from bpfloader.errors import LoaderError
from bpfloader.loader.gates import Environment
from bpfloader.loader.plan import MapPlan, ObjectPlan, ProgramPlan
from bpfloader.loader.results import Action, ObjectResult, Pin, Skipped, Status
from bpfloader.loader.state_dir import StateDir
from bpfloader.locations import LOADED_MARKER
from bpfloader.obj.bpftypes import PinKind
from bpfloader.obj.ownership import Ownership

STATE_FORMAT = 1
STATE_FILE = "state.json"
PUBLISHING_FILE = "publishing"  # objects whose pins a run is renaming into place
TEMP_PREFIX = ".tmp-"  # files being written atomically


@dataclass
class ObjectState:
    """An object as the state file records it: the hash of what was loaded, and its pins."""

    path: str
    sha256: str | None  # of the file the pins came from; None when not known
    status: Status
    reason: str = ""
    critical: bool = False
    pins: list[Pin] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    # A `load` kept pins it found in place that are not known to come from this file (stale):
    # what `status` says until a reload loads the file.
    stale: bool = False


@dataclass
class LoaderState:
    """What the last run left pinned, object by object (the state file)."""

    pin_root: str
    source_dir: str
    objects: dict[str, ObjectState] = field(default_factory=dict)
    environment: str = ""  # kernel, loader version, arch: what the objects' gates saw

    def pin_paths(self) -> set[str]:
        return {pin.path for obj in self.objects.values() for pin in obj.pins}


class StateError(LoaderError):
    """The state file is there but cannot be used."""


def environment_key(env: Environment) -> str:
    """What gates depend on: a state recorded under another environment is re-checked."""
    kernel = ".".join(map(str, env.kernel))
    return (
        f"kernel {kernel}; loader {env.loader_version}; android {env.android_api_level}; "
        f"{env.arch}; {env.build_type}"
    )


def read_state(state_dir: StateDir, pin_root: str | None) -> LoaderState | None:
    """The recorded state for `pin_root` (None: whichever the state is for); None if there is
    none; StateError if unusable."""
    path = state_dir.file(STATE_FILE)
    try:
        raw = state_dir.read(STATE_FILE)
    except OSError as e:
        raise StateError(f"{path}: {e.strerror}") from e
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        state = _from_json(data)
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise StateError(f"{path}: {type(e).__name__}: {e}") from e
    if pin_root is not None and state.pin_root != pin_root:
        return None  # another pin root's record: nothing about this one
    return state


def other_pin_root(state_dir: StateDir, pin_root: str) -> str | None:
    """The pin root the state directory records objects of, when it is not `pin_root` (None
    when it is, or when the state records no object, or none can be read): one state
    directory keeps the record of one pin root."""
    try:
        state = read_state(state_dir, None)
    except StateError:
        return None
    if state is None or state.pin_root == pin_root or not state.objects:
        return None
    return state.pin_root


def refuse_other_pin_root(state_dir: StateDir, pin_root: str) -> None:
    """LoaderError when the state directory records another pin root: a run here would write
    over that record (and know nothing of this pin root's pins)."""
    other = other_pin_root(state_dir, pin_root)
    if other is not None:
        raise LoaderError(
            f"the state directory {state_dir.path} records the pins of {other}, not of "
            f"{pin_root}: give each pin root its own --state-dir (nothing was done)"
        )


def recorded_state(
    state_dir: StateDir, pin_root: str, env: Environment
) -> tuple[LoaderState | None, str]:
    """The recorded state if it can be used, else None and why not ('' when there is none)."""
    try:
        state = read_state(state_dir, pin_root)
    except StateError as e:
        return None, str(e)
    if state is not None and state.environment != environment_key(env):
        return None, f"recorded under another environment ({state.environment})"
    return state, ""


def _pin_from_json(pin: dict[str, Any]) -> Pin:
    load_usec = pin["load_usec"]
    return Pin(
        path=pin["path"],
        kind=PinKind(pin["kind"]),
        name=pin["name"],
        kernel_id=pin["kernel_id"],
        owner=Ownership(pin["uid"], pin["gid"], pin["mode"]),
        verified_insns=pin["verified_insns"],
        load_seconds=None if load_usec is None else load_usec / 1e6,
        section=pin.get("section", ""),
        target=pin.get("target", ""),
        declared=pin.get("declared", True),
    )


def _pin_to_json(pin: Pin) -> dict[str, Any]:
    """Format 1's fields (times in microseconds there), plus a program's section, a link's
    target, and `declared: false` for a link made by hand (by_hand.py)."""
    data: dict[str, Any] = {
        "path": pin.path,
        "kind": pin.kind.value,
        "name": pin.name,
        "kernel_id": pin.kernel_id,
        "uid": pin.owner.uid,
        "gid": pin.owner.gid,
        "mode": pin.owner.mode,
        "verified_insns": pin.verified_insns,
        "load_usec": None if pin.load_seconds is None else round(pin.load_seconds * 1e6),
    }
    if pin.section:
        data["section"] = pin.section
    if pin.target:
        data["target"] = pin.target
    if not pin.declared:
        data["declared"] = False
    return data


def _from_json(data: Any) -> LoaderState:
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        raise ValueError(f"not a bpfloader state of format {STATE_FORMAT}")
    pin_root = str(data["pin_root"])
    objects = {}
    for path, obj in data["objects"].items():
        objects[path] = ObjectState(
            path=str(obj["path"]),
            sha256=obj["sha256"],
            status=Status(obj["status"]),
            reason=str(obj["reason"]),
            critical=bool(obj["critical"]),
            pins=[_pin_from_json(pin) for pin in obj["pins"]],
            skipped=[
                Skipped(PinKind(skip["kind"]), skip["name"], skip["reason"])
                for skip in obj["skipped"]
            ],
            stale=bool(obj.get("stale", False)),
        )
        if objects[path].path != path or not all(
            isinstance(p.path, str) for p in objects[path].pins
        ):
            raise ValueError(f"inconsistent entry for {path}")
        for pin in objects[path].pins:  # a reload unlinks these: nothing outside the pin root
            if os.path.normpath(pin.path) != pin.path or not pin.path.startswith(pin_root + "/"):
                raise ValueError(f"pin {pin.path!r} of {path} is not in the pin root {pin_root}")
    return LoaderState(pin_root, str(data["source_dir"]), objects, str(data["environment"]))


def remove_leftovers(state_dir: StateDir) -> None:
    """Remove the temporary files of runs killed while they wrote the state or the loaded
    marker. Only a run holding the run lock writes here, so whatever temporary file a run that
    holds it finds was left by another: every run removes them first thing, whether or not it
    writes anything itself (an unchanged reload writes nothing)."""
    for name in state_dir.names():
        if name.startswith(TEMP_PREFIX):
            state_dir.remove(name)


def write_state(state_dir: StateDir, state: LoaderState) -> None:
    """Record `state` (holding the run lock)."""
    data = {
        "format": STATE_FORMAT,
        "pin_root": state.pin_root,
        "source_dir": state.source_dir,
        "environment": state.environment,
        "objects": {path: _plain(obj) for path, obj in sorted(state.objects.items())},
    }
    # Compact: an indented dump goes through json's pure-Python encoder, several times slower
    # (it was a fifth of an unchanged reload).
    state_dir.write_atomically(STATE_FILE, json.dumps(data, sort_keys=True) + "\n", TEMP_PREFIX)


def _plain(obj: ObjectState) -> dict[str, object]:
    """The record as JSON data; dataclasses.asdict would deep-copy every field to get there.
    `stale` is written only when true (format 1 did not have it)."""
    return ({"stale": True} if obj.stale else {}) | {
        "path": obj.path,
        "sha256": obj.sha256,
        "status": obj.status.value,
        "reason": obj.reason,
        "critical": obj.critical,
        "pins": [_pin_to_json(pin) for pin in obj.pins],
        "skipped": [
            {"kind": skip.kind.value, "name": skip.name, "reason": skip.reason}
            for skip in obj.skipped
        ],
    }


def write_loaded_marker(state_dir: StateDir, summary: dict[str, Any]) -> None:
    """The equivalent of Android's bpf.progs_loaded=1, for client.wait_for_loaded()."""
    state_dir.write_atomically(LOADED_MARKER, json.dumps(summary) + "\n", TEMP_PREFIX)


def remove_loaded_marker(state_dir: StateDir) -> None:
    state_dir.remove(LOADED_MARKER)


# -- the publication record ---------------------------------------------------------------------
#
# A run renames an object's pins into place one by one. Killed in between, it leaves some of
# them published and its state unwritten: the state still names the earlier version, whose hash
# may match the file again (a reverted change), and the next reload would leave the object
# alone with the wrong programs pinned. So before the first rename of an object, the run
# appends the object and its new pins (path and kernel id) to the publication record, and
# removes the record once its state is written. A record found by the next run names objects
# whose pins are not known to match the state: those are loaded again (never "unchanged"), and
# the pins listed are claimed for them, so that the ones no longer made are removed. In the
# normal case the record does not exist, and checking costs one failed open.


@dataclass(frozen=True)
class Interrupted:
    """What a killed run was publishing: each object's new pins, with their kernel ids."""

    objects: dict[str, list[Pin]] = field(default_factory=dict)

    def expected_ids(self) -> dict[str, set[int]]:
        """The ids each pin path may hold now (the kill came before or after its rename)."""
        ids: dict[str, set[int]] = {}
        for pins in self.objects.values():
            for pin in pins:
                if pin.kernel_id:
                    ids.setdefault(pin.path, set()).add(pin.kernel_id)
        return ids


def record_publishing(state_dir: StateDir, result: ObjectResult) -> None:
    """Note that `result`'s pins are about to be renamed into place."""
    pins = [[pin.path, pin.kind.value, pin.name, pin.kernel_id] for pin in result.pins]
    line = json.dumps({"object": result.path, "pins": pins}, separators=(",", ":"))
    state_dir.append(PUBLISHING_FILE, line + "\n")


def read_interrupted(state_dir: StateDir, pin_root: str) -> Interrupted:
    """The publication record a killed run left (empty when none). A line cut short by the kill,
    or not the loader's, is passed over: its object, if any, was not yet renaming."""
    try:
        raw = state_dir.read(PUBLISHING_FILE)
    except OSError:
        raw = None
    found: dict[str, list[Pin]] = {}
    for line in (raw or b"").splitlines():
        try:
            entry = json.loads(line)
            path = str(entry["object"])
            pins = [
                Pin(str(p), PinKind(kind), str(name), int(i)) for p, kind, name, i in entry["pins"]
            ]
        except (ValueError, TypeError, KeyError):
            continue
        if all(_in_pin_root(pin.path, pin_root) for pin in pins):
            found.setdefault(path, []).extend(pins)
    return Interrupted(found)


INTERRUPTED = "a run was killed while it published the pins; the next run completes or removes them"


def clear_publishing(state_dir: StateDir) -> None:
    """The run's state is written: what it published is recorded there."""
    state_dir.remove(PUBLISHING_FILE)


def with_interrupted(state: LoaderState, interrupted: Interrupted) -> LoaderState:
    """`state` with the objects a killed run was publishing marked as unknown (no hash: loaded
    again) and holding the pins it was publishing too."""
    if not interrupted.objects:
        return state
    objects = dict(state.objects)
    for path, pins in interrupted.objects.items():
        old = objects.get(path) or ObjectState(path, None, Status.PARTIAL)
        known = {pin.path for pin in old.pins}
        extra = {pin.path: _as_recorded(pin) for pin in pins if pin.path not in known}
        objects[path] = replace(
            old,
            sha256=None,
            status=Status.PARTIAL,
            reason=INTERRUPTED,
            pins=[*old.pins, *extra.values()],
        )
    return replace(state, objects=objects)


def _in_pin_root(path: str, pin_root: str) -> bool:
    return os.path.normpath(path) == path and path.startswith(pin_root + "/")


def without_missing_pins(state: LoaderState, is_pin: Callable[[str], bool]) -> LoaderState:
    """`state` where an object with a recorded pin no longer there has no known hash: a reload
    does not leave it alone. A link made by hand (`bpfloader attach --pin`) that was unpinned
    (`bpfloader detach`) is only forgotten: the object is what it was."""
    objects = {}
    for path, obj in state.objects.items():
        pins = [p for p in obj.pins if p.declared or is_pin(p.path)]
        if len(pins) != len(obj.pins):
            obj = replace(obj, pins=pins)
        objects[path] = obj if all(is_pin(p.path) for p in pins) else replace(obj, sha256=None)
    return replace(state, objects=objects)


def rebuild(
    plans: Iterable[ObjectPlan],
    pin_root: str,
    source_dir: str,
    environment: str,
    is_pin: Callable[[str], bool],
    existed: set[str] | None = None,
) -> LoaderState:
    """A state from what is there: each object's planned pins that exist are taken as its own
    (of them, where `existed` is given, only those it holds: the pins there before the run).

    Hashes stay unknown, so a reload treats every object as changed and re-checks it; pins that
    no current object would make are not claimed, and so are never deleted."""
    state = LoaderState(pin_root, source_dir, environment=environment)
    in_place = (Action.REUSE, Action.REPLACE)  # what the planner says of a path already pinned

    def found(plan: MapPlan | ProgramPlan) -> bool:
        if existed is not None and plan.pin_path not in existed:
            return False
        return plan.action in in_place and is_pin(plan.pin_path)

    for plan in plans:
        pins = [Pin(m.pin_path, PinKind.MAP, m.spec.name) for m in plan.maps if found(m)]
        programs: dict[str, ProgramPlan] = {}  # `$` variants share a pin: the first takes it
        for program in plan.programs:
            if found(program):
                programs.setdefault(program.pin_path, program)
        pins += [
            Pin(p.pin_path, PinKind.PROGRAM, p.spec.name, section=p.spec.section)
            for p in programs.values()
        ]
        if pins:
            state.objects[plan.path] = ObjectState(plan.path, None, Status.LOADED, pins=pins)
    return state


def unchanged(old: ObjectState, sha256: str | None) -> bool:
    """Same content and loaded before: nothing to do. (A record whose pins are not all there,
    or that a killed run was publishing, has no hash: without_missing_pins, with_interrupted.)"""
    return (
        old.sha256 is not None
        and old.sha256 == sha256
        and old.status in (Status.LOADED, Status.SKIPPED)
    )


def next_state(
    previous: LoaderState, results: list[ObjectResult], *, reloading: bool
) -> LoaderState:
    """The state after a run. A failed object whose earlier version is still pinned keeps that
    record (and its hash, so the next reload tries again); a load keeps the records of objects
    no longer in the directory (load never removes; reload does). A load that reused pins made
    from another file records no hash, so that the next reload re-checks the object."""
    objects = {} if reloading else dict(previous.objects)
    made = {pin.path for o in results for pin in o.pins if pin.made}
    for obj in results:
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
        sha256 = obj.read.sha256 if obj.status is not Status.FAILED else None
        if (
            not reloading
            and any(pin.action is Action.REUSE and pin.path not in made for pin in obj.pins)
            and (old is None or old.sha256 != sha256)
        ):
            sha256 = None  # pins found in place may come from an earlier version of the file
        pins = [_as_recorded(pin) for pin in obj.pins]
        objects[obj.path] = ObjectState(
            obj.path,
            sha256,
            obj.status,
            obj.reason,
            critical,
            pins,
            list(obj.skipped),
            stale=bool(obj.stale),
        )
    return LoaderState(previous.pin_root, previous.source_dir, objects, previous.environment)


def stale_pins(old: ObjectState | None, result: ObjectResult, made: set[str]) -> list[str]:
    """The pins a `load` kept for `result` that are not known to come from its file: found in
    place (not made by this run), while the state records them from another version of the
    file (another hash) or from none it knows (no hash: a state rebuilt, or a load before
    kept them too). A shared map (`map__NAME`) is any object's to reuse: never stale."""
    if old is not None and old.sha256 is not None and old.sha256 == result.read.sha256:
        return []
    shared = {m.pin_path for m in result.plan.maps if m.spec.shared}
    return [
        pin.path
        for pin in result.pins
        if pin.action is Action.REUSE and pin.path not in made and pin.path not in shared
    ]


def stale_reason(old: ObjectState | None) -> str:
    """Why `stale_pins` found pins stale, for the summary and the journal."""
    if old is not None and old.sha256 is not None:
        return "made from another version of the file"
    return "not known to come from this version of the file"


def _as_recorded(pin: Pin) -> Pin:
    """The pin as the state file keeps it, and gives it back (so that a state compares equal
    to itself read back): no action, JIT size or note; times in whole microseconds."""
    seconds = pin.load_seconds
    return replace(
        pin,
        action=Action.KEEP,
        jited_size=None,
        note="",
        load_seconds=None if seconds is None else round(seconds * 1e6) / 1e6,
    )
