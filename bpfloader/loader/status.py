"""`bpfloader status`: what is loaded, from the recorded state checked against the pins.

The JSON form (`status --json`) is a stable interface, documented in README.md:

    {"format": 1, "pin_root": str, "source_dir": str, "state": "recorded" | "rebuilt",
     "state_reason": str,
     "objects": [{"path": str, "status": "loaded" | "skipped" | "failed" | "partial",
                  "reason": str, "stale": bool,
                  "critical": bool, "sha256": str | null,
                  "maps": [PIN], "programs": [PIN], "links": [LINK],
                  "skipped": [{"kind": "map" | "program", "name": str, "reason": str}]}],
     "foreign_pins": [str]}

    PIN = {"name": str, "pin": str, "present": bool, "id": int | null,
           "uid": int | null, "gid": int | null, "mode": "0640" | null,
           "section": str, "verified_insns": int | null, "load_usec": int | null}
           (the last three: programs; a program's name is its function's, `section` its
           code section, which says which `$` variant is pinned)
    LINK = PIN's first seven fields (`name` the program's, `id` the link's), and
           {"target": str, "program_id": int | null, "map_id": int | null, "stale": bool,
            "declared": bool}
           (an attachment: where ("" where it was not declared), the program the link runs,
           whether that is another than the one pinned now, and whether the policy file
           declared it; a link pinned under the pin root by someone else that runs one of
           the object's programs, or one they replaced, is listed too: declared false. A
           struct_ops map's link: `name` the map's, target `struct_ops:TYPE`, `map_id` the
           map it registers (program_id null), stale when that is not the map pinned now)

`state_reason` says why the state was rebuilt from the pins ('' when it is recorded): the state
directory has no state, one it cannot read, or the record of another pin root. `stale` is true
for an object whose pins a `load` found in place and kept, while they are not known to come
from the file it read (a changed file, or pins no record accounts for): a reload replaces them.

`id`, `uid`, `gid` and `mode` are read live from the pin (null when it is gone or, for the
id, when this process may not open it or the pin changed while status looked at it); the rest
comes from the state. A pin is present when a pin is at its path: a directory or a symbolic
link there is not the pin.

`foreign_pins` are the entries under the pin root that the state does not list, and a path
ending in '/' is a directory status did not look into: more than MAX_DEPTH directories below
the pin root (deeper than anything the loader makes), or one that could not be opened.

Other users may write in the pin root (a bpffs mounted by hand is 1777), so status walks it
without trusting a path: iteratively (a chain of directories as deep as a user likes is no
recursion), through directory fds opened with O_NOFOLLOW relative to their parent, and it opens
a pin only through kpins.open_pinned_at, which never follows a link. Every name in the text
form goes through errors.one_line: a file name may hold a newline or an escape sequence.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from typing import Any

from bpfloader.errors import LoaderError, one_line, show_name
from bpfloader.kernel import links as klinks
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import pins as kpins
from bpfloader.kernel import programs as kprogs
from bpfloader.loader.dirfd import O_DIR
from bpfloader.loader.naming import STAGING_DIR
from bpfloader.loader.pin_root import PinRoot
from bpfloader.loader.results import Pin
from bpfloader.loader.run import LoadOptions, current_environment, plan_run
from bpfloader.loader.state import (
    Interrupted,
    LoaderState,
    StateError,
    environment_key,
    other_pin_root,
    read_interrupted,
    read_state,
    rebuild,
    with_interrupted,
)
from bpfloader.loader.state_dir import StateDir
from bpfloader.obj.bpftypes import STRUCT_OPS_TARGET, PinKind

STATUS_FORMAT = 1
KERNEL_ENTRIES = {"maps.debug", "progs.debug"}  # preloaded by the kernel in every bpffs
# Directories below the pin root that status looks into. The loader itself goes at most 40 deep
# (a pin_subdir is 80 bytes at most); the walk holds one fd per level.
MAX_DEPTH = 64


def status_report(state: LoaderState, root: PinRoot, *, rebuilt: str = "") -> dict[str, Any]:
    """The report of `state`; `rebuilt` says why it was rebuilt from the pins ('': recorded)."""
    objects = []
    foreign = foreign_pins(state, root)
    others = _links_of_others(state, root, foreign)
    listed = {link["pin"] for links in others.values() for link in links}
    for obj in sorted(state.objects.values(), key=lambda o: o.path):
        programs = [_pin(p, root) for p in obj.pins if p.kind is PinKind.PROGRAM]
        maps = [_pin(p, root) for p in obj.pins if p.kind is PinKind.MAP]
        objects.append(
            {
                "path": obj.path,
                "status": obj.status,
                "reason": obj.reason,
                "stale": obj.stale,
                "critical": obj.critical,
                "sha256": obj.sha256,
                "maps": maps,
                "programs": programs,
                "links": _links(obj.pins, programs, maps, root) + others.get(obj.path, []),
                "skipped": [
                    {"kind": s.kind.value, "name": s.name, "reason": s.reason} for s in obj.skipped
                ],
            }
        )
    return {
        "format": STATUS_FORMAT,
        "pin_root": state.pin_root,
        "source_dir": state.source_dir,
        "state": "rebuilt" if rebuilt else "recorded",
        "state_reason": rebuilt,
        "objects": objects,
        "foreign_pins": [p for p in foreign if p not in listed],
    }


def _links_of_others(
    state: LoaderState, root: PinRoot, foreign: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """The link pins among `foreign` (made by `bpfloader attach --pin`, bpftool, ...) that run
    a program of a loaded object, by object: the program pinned now, or one it replaced (same
    name and type: stale). The pinned programs are read only once a link is among them."""
    live: _LivePrograms | None = None
    found: dict[str, list[dict[str, Any]]] = {}
    for path in foreign:
        if path.endswith("/"):
            continue
        link = _link_info(path, root)
        if link is None or not link.prog_id:
            continue
        running = link.prog_id
        if live is None:
            live = _live_programs(state, root)
        programs, names = live
        owner = programs.get(running)
        pinned = None
        if owner is None:
            try:
                fd = kprogs.program_fd_by_id(running)
            except OSError:
                continue
            try:
                info = kprogs.program_info(fd)
            finally:
                os.close(fd)
            match = names.get((info.name, info.type))
            if match is None:
                continue
            owner, pinned = match[:2], match[2]
        entry = _pin(Pin(path, PinKind.LINK, owner[1]), root)
        entry.update(
            target="", program_id=running, map_id=None, stale=pinned is not None, declared=False
        )
        found.setdefault(owner[0], []).append(entry)
    return found


# live program id -> (object, program name); (kernel name, type) -> (object, program name, id)
_LivePrograms = tuple[dict[int, tuple[str, str]], dict[tuple[str, int], tuple[str, str, int]]]


def _live_programs(state: LoaderState, root: PinRoot) -> _LivePrograms:
    """The programs pinned now for the state's objects, by kernel id and by name and type."""
    programs: dict[int, tuple[str, str]] = {}
    names: dict[tuple[str, int], tuple[str, str, int]] = {}
    for obj in state.objects.values():
        for pin in obj.pins:
            if pin.kind is not PinKind.PROGRAM:
                continue
            info = _program_at(pin.path, root)
            if info is not None:
                programs[info.id] = (obj.path, pin.name)
                names[(info.name, info.type)] = (obj.path, pin.name, info.id)
    return programs, names


def _program_at(path: str, root: PinRoot) -> kprogs.ProgramInfo | None:
    try:
        with root.parent_of(path) as (directory, name):
            fd = kpins.open_pinned_at(directory.number, name, readonly=True)
    except (OSError, LoaderError):
        return None
    try:
        return kprogs.program_info(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def _pin(pin: Pin, root: PinRoot) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": pin.name,
        "pin": pin.path,
        "present": False,
        "id": None,
        "uid": None,
        "gid": None,
        "mode": None,
    }
    try:
        with root.parent_of(pin.path) as (directory, name):
            found = _pin_in(directory.number, name, pin.kind)
    except (OSError, LoaderError):  # no directory there, a link, one the loader would refuse
        found = None
    if found is not None:
        st, ident = found
        entry.update(
            present=True,
            id=ident,
            uid=st.st_uid,
            gid=st.st_gid,
            mode=f"{stat.S_IMODE(st.st_mode):04o}",
        )
    if pin.kind is PinKind.PROGRAM:
        load_usec = None if pin.load_seconds is None else round(pin.load_seconds * 1e6)
        entry.update(section=pin.section, verified_insns=pin.verified_insns, load_usec=load_usec)
    return entry


def _links(
    pins: list[Pin], programs: list[dict[str, Any]], maps: list[dict[str, Any]], root: PinRoot
) -> list[dict[str, Any]]:
    """The links of an object's declared attachments, each with the program it runs and
    whether that is still the one pinned for it (`programs`: the object's program entries);
    a struct_ops map's link, with the map it registers (`maps`: the object's map entries)."""
    pinned_programs = {program["name"]: program["id"] for program in programs}
    pinned_maps = {m["name"]: m["id"] for m in maps}
    found = []
    for pin in pins:
        if pin.kind is not PinKind.LINK:
            continue
        entry = _pin(pin, root)
        info = _link_info(pin.path, root) if entry["present"] else None
        registers = pin.target.startswith(STRUCT_OPS_TARGET)
        if registers:
            running = info.map_id if info is not None else None
            pinned = pinned_maps.get(pin.name)
        else:
            running = info.prog_id if info is not None else None
            pinned = pinned_programs.get(pin.name)
        entry.update(
            target=pin.target,
            program_id=None if registers else running,
            map_id=running if registers else None,
            stale=running is not None and pinned is not None and running != pinned,
            declared=pin.declared,
        )
        found.append(entry)
    return found


def _link_info(path: str, root: PinRoot) -> klinks.LinkInfo | None:
    try:
        with root.parent_of(path) as (directory, name):
            fd = kpins.open_pinned_at(directory.number, name)  # a link takes no read-only flag
    except (OSError, LoaderError):
        return None
    try:
        return klinks.link_info(fd)
    except OSError:
        return None
    finally:
        os.close(fd)


def _pin_in(directory: int, name: str, kind: PinKind) -> tuple[os.stat_result, int | None] | None:
    """The pin `name` in `directory`: its status, and its kernel id (None when it cannot be
    opened, or when the entry changed while it was looked at); None when no pin is there
    (nothing, a directory, a link)."""
    before = os.stat(name, dir_fd=directory, follow_symlinks=False)
    if not stat.S_ISREG(before.st_mode):  # a pin is a regular file of the bpffs
        return None
    ident = _kernel_id(directory, name, kind)
    after = os.stat(name, dir_fd=directory, follow_symlinks=False)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        ident = None  # it would be another pin's id than the owner and mode shown
    return before, ident


def _kernel_id(directory: int, name: str, kind: PinKind) -> int | None:
    try:  # a link takes no read-only flag (BPF_OBJ_GET refuses it)
        fd = kpins.open_pinned_at(directory, name, readonly=kind is not PinKind.LINK)
    except OSError:  # a link (ELOOP), not this process's to open, gone meanwhile
        return None
    try:
        if kind is PinKind.MAP:
            return kmaps.map_info(fd).id
        if kind is PinKind.LINK:
            return klinks.link_info(fd).id
        return kprogs.program_info(fd).id
    except OSError:  # another kind of object than the state says
        return None
    finally:
        os.close(fd)


def foreign_pins(state: LoaderState, root: PinRoot) -> list[str]:
    """Entries under the pin root that this tool did not make (listed, never touched); a
    directory not looked into ends in '/'. Depth first without recursion, holding one fd per
    directory level (MAX_DEPTH + 1 at most). Unlike the loader, status looks into directories
    other users own: it only reads, and their entries are what it has to show."""
    ours = state.pin_paths()
    found: list[str] = []
    # the directories being looked into: fd, path, depth, the subdirectories left in it
    levels: list[tuple[int, str, int, Iterator[str]]] = []

    def enter(fd: int, path: str, depth: int) -> None:
        subdirs = []
        try:
            with os.scandir(fd) as entries:
                for entry in entries:
                    top = depth == 0
                    if entry.is_dir(follow_symlinks=False):
                        if not (top and entry.name == STAGING_DIR):
                            subdirs.append(entry.name)
                        continue
                    child = f"{path}/{entry.name}"
                    if child not in ours and not (top and entry.name in KERNEL_ENTRIES):
                        found.append(child)
        except OSError:
            os.close(fd)
            found.append(f"{path}/")
            return
        levels.append((fd, path, depth, iter(sorted(subdirs))))

    try:
        enter(os.dup(root.fd.number), state.pin_root.rstrip("/"), 0)
        while levels:
            fd, path, depth, pending = levels[-1]
            name = next(pending, None)
            if name is None:
                levels.pop()
                os.close(fd)
                continue
            child = f"{path}/{name}"
            if depth == MAX_DEPTH:
                found.append(f"{child}/")
                continue
            try:
                opened = os.open(name, O_DIR, dir_fd=fd)
            except FileNotFoundError:  # gone since it was listed
                continue
            except OSError as e:
                if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                    found.append(f"{child}/")
                elif child not in ours:  # no longer a directory: an entry like any other
                    found.append(child)
                continue
            enter(opened, child, depth + 1)
    finally:
        for fd, *_ in levels:
            os.close(fd)
    return sorted(found)


def format_status(report: dict[str, Any]) -> str:
    pin_root = report["pin_root"]
    why = f": {one_line(report['state_reason'])}" if report["state_reason"] else ""
    lines = [f"pin root {one_line(pin_root)} (state {report['state']}{why})"]
    for obj in report["objects"]:
        critical = " (critical)" if obj["critical"] else ""
        path = one_line(obj["path"])
        # A failure's reason already starts with the object's path: don't say it twice.
        text = one_line(obj["reason"]).removeprefix(f"{path}: ")
        reason = f": {text}" if text else ""
        if obj["stale"]:
            reason += (
                " (stale: a load kept pins it found in place that may come from another version"
                " of the file; `bpfloader reload` replaces them)"
            )
        lines.append(f"{path}{critical}: {obj['status']}{reason}")
        for kind in ("maps", "programs"):
            for pin in obj[kind]:
                where = one_line(pin["pin"])
                if not pin["present"]:
                    lines.append(f"  {kind[:-1]:7} {where}  MISSING")
                    continue
                extra = ""
                if kind == "programs" and pin["verified_insns"] is not None:
                    load_ms = (pin["load_usec"] or 0) / 1000
                    extra = f"  {pin['verified_insns']} insns, {load_ms:.2f} ms"
                if kind == "programs" and "$" in pin["section"]:  # which `$` variant is pinned
                    extra += f"  (variant '{show_name(pin['section'])}')"
                ident = "?" if pin["id"] is None else pin["id"]
                lines.append(
                    f"  {kind[:-1]:7} {where}  id {ident}  "
                    f"{pin['uid']}:{pin['gid']} {pin['mode']}{extra}"
                )
        for link in obj.get("links", []):
            where = one_line(link["pin"])
            if not link["present"]:
                lines.append(f"  link    {where}  MISSING")
                continue
            ident = "?" if link["id"] is None else link["id"]
            kind, running = "program", link["program_id"]
            if link.get("map_id") is not None:  # a struct_ops map's link
                kind, running = "map", link["map_id"]
            state = ""
            if link["stale"]:
                pinned = next(p["id"] for p in obj[f"{kind}s"] if p["name"] == link["name"])
                what = "registers" if kind == "map" else "runs"
                state = f"  stale: {what} {kind} {running}, the pin holds {pinned}"
            target = show_name(link["target"]) if link["declared"] else "(not declared)"
            lines.append(f"  link    {where}  id {ident}  {target}  {kind} {running}{state}")
        for skip in obj["skipped"]:
            name, why = show_name(skip["name"]), one_line(skip["reason"])
            lines.append(f"  skipped {skip['kind']} {name}: {why}")
    if report["foreign_pins"]:
        lines.append("not made by bpfloader:")
        for path in report["foreign_pins"]:
            lines.append(f"  {one_line(path)}{_not_looked_into(path, pin_root)}")
    return "\n".join(lines)


def _not_looked_into(path: str, pin_root: str) -> str:
    """What the line of a directory that status did not look into adds ('' for an entry)."""
    if not path.endswith("/"):
        return ""
    depth = path.removeprefix(pin_root.rstrip("/")).strip("/").count("/") + 1
    if depth > MAX_DEPTH:
        return f"  (not looked into: more than {MAX_DEPTH} directories below the pin root)"
    return "  (not looked into: it could not be opened)"


def current_status(options: LoadOptions) -> dict[str, Any]:
    """The report for a pin root: from the recorded state, or rebuilt (read-only) without one.
    Nothing is made, changed or taken over, in the pin root or in the state directory. The
    record is shown whatever environment it was recorded under (a reload re-checks it; here
    it says what was made)."""
    env = current_environment(options.build_type, options.android_api_level)
    with PinRoot.open_existing(options.pin_root) as root:
        state, interrupted, why = _recorded(options.state_dir, root.path)
        if state is not None:
            return status_report(with_interrupted(state, interrupted), root)
        plans = [planned.plan for planned in plan_run(options, env, root.is_pin).objects]
        source_dir = os.path.abspath(options.source_dir)
        rebuilt = rebuild(plans, root.path, source_dir, environment_key(env), root.is_pin)
        return status_report(with_interrupted(rebuilt, interrupted), root, rebuilt=why)


def _recorded(state_dir: str, pin_root: str) -> tuple[LoaderState | None, Interrupted, str]:
    """The recorded state, or None and why there is none to use (no state directory yet, no
    usable state in it, the record of another pin root), and what a killed run was
    publishing: those objects are partial."""
    try:
        opened = StateDir.open(state_dir, create=False)
    except FileNotFoundError:
        return None, Interrupted(), f"no state directory {state_dir}"
    with opened:
        interrupted = read_interrupted(opened, pin_root)
        try:
            state = read_state(opened, pin_root)
        except StateError as e:
            return None, interrupted, str(e)
        if state is not None:
            return state, interrupted, ""
        other = other_pin_root(opened, pin_root)
        if other is not None:
            return None, interrupted, f"{opened.path} records the pins of {other}, not these"
        return None, interrupted, f"no state recorded in {opened.path}"
