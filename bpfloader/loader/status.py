"""`bpfloader status`: what is loaded, from the recorded state checked against the pins.

The JSON form (`status --json`) is a stable interface, documented in README.md:

    {"format": 1, "pin_root": str, "source_dir": str, "state": "recorded" | "rebuilt",
     "objects": [{"path": str, "status": "loaded" | "skipped" | "failed", "reason": str,
                  "critical": bool, "sha256": str | null,
                  "maps": [PIN], "programs": [PIN],
                  "skipped": [{"kind": "map" | "program", "name": str, "reason": str}]}],
     "foreign_pins": [str]}

    PIN = {"name": str, "pin": str, "present": bool, "id": int | null,
           "uid": int | null, "gid": int | null, "mode": "0640" | null,
           "section": str, "verified_insns": int | null, "load_usec": int | null}
           (the last three: programs; a program's name is its function's, `section` its
           code section, which says which `$` variant is pinned)

`id`, `uid`, `gid` and `mode` are read live from the pin (null when it is gone or, for the
id, when this process may not open it); the rest comes from the state.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from bpfloader.errors import KernelError, LoaderError, show_name
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import pins as kpins
from bpfloader.kernel import programs as kprogs
from bpfloader.loader.pin_root import STAGING_DIR
from bpfloader.loader.results import Pin
from bpfloader.loader.run import LoadOptions, current_environment, plan_run
from bpfloader.loader.state import LoaderState, environment_key, rebuild, recorded_state
from bpfloader.obj.bpftypes import PinKind

STATUS_FORMAT = 1
KERNEL_ENTRIES = {"maps.debug", "progs.debug"}  # preloaded by the kernel in every bpffs


def status_report(state: LoaderState, *, rebuilt: bool) -> dict[str, Any]:
    objects = []
    for obj in sorted(state.objects.values(), key=lambda o: o.path):
        objects.append(
            {
                "path": obj.path,
                "status": obj.status,
                "reason": obj.reason,
                "critical": obj.critical,
                "sha256": obj.sha256,
                "maps": [_pin(p) for p in obj.pins if p.kind is PinKind.MAP],
                "programs": [_pin(p) for p in obj.pins if p.kind is PinKind.PROGRAM],
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
        "objects": objects,
        "foreign_pins": foreign_pins(state),
    }


def _pin(pin: Pin) -> dict[str, Any]:
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
        st = os.lstat(pin.path)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISDIR(st.st_mode):  # a directory there is not the pin
        entry.update(
            present=True, uid=st.st_uid, gid=st.st_gid, mode=f"{stat.S_IMODE(st.st_mode):04o}"
        )
        entry["id"] = _kernel_id(pin)
    if pin.kind is PinKind.PROGRAM:
        load_usec = None if pin.load_seconds is None else round(pin.load_seconds * 1e6)
        entry.update(section=pin.section, verified_insns=pin.verified_insns, load_usec=load_usec)
    return entry


def _kernel_id(pin: Pin) -> int | None:
    try:
        fd = kpins.open_pinned(pin.path, readonly=True)
    except KernelError:
        return None
    try:
        if pin.kind is PinKind.MAP:
            return kmaps.map_info(fd).id
        return kprogs.program_info(fd).id
    except KernelError:
        return None
    finally:
        os.close(fd)


def foreign_pins(state: LoaderState) -> list[str]:
    """Entries in the pin root that this tool did not make (listed, never touched)."""
    ours = state.pin_paths()
    found = []
    for directory, dirs, files in os.walk(state.pin_root):
        if directory == state.pin_root:
            dirs[:] = [d for d in dirs if d != STAGING_DIR]
        for name in files:
            path = os.path.join(directory, name)
            if path not in ours and not (directory == state.pin_root and name in KERNEL_ENTRIES):
                found.append(path)
    return sorted(found)


def format_status(report: dict[str, Any]) -> str:
    lines = [f"pin root {report['pin_root']} (state {report['state']})"]
    for obj in report["objects"]:
        critical = " (critical)" if obj["critical"] else ""
        # A failure's reason already starts with the object's path: don't say it twice.
        text = obj["reason"].removeprefix(f"{obj['path']}: ")
        reason = f": {text}" if text else ""
        lines.append(f"{obj['path']}{critical}: {obj['status']}{reason}")
        for kind in ("maps", "programs"):
            for pin in obj[kind]:
                if not pin["present"]:
                    lines.append(f"  {kind[:-1]:7} {pin['pin']}  MISSING")
                    continue
                extra = ""
                if kind == "programs" and pin["verified_insns"] is not None:
                    load_ms = (pin["load_usec"] or 0) / 1000
                    extra = f"  {pin['verified_insns']} insns, {load_ms:.2f} ms"
                if kind == "programs" and "$" in pin["section"]:  # which `$` variant is pinned
                    extra += f"  (variant '{show_name(pin['section'])}')"
                ident = "?" if pin["id"] is None else pin["id"]
                lines.append(
                    f"  {kind[:-1]:7} {pin['pin']}  id {ident}  "
                    f"{pin['uid']}:{pin['gid']} {pin['mode']}{extra}"
                )
        for skip in obj["skipped"]:
            lines.append(f"  skipped {skip['kind']} {skip['name']}: {skip['reason']}")
    if report["foreign_pins"]:
        lines.append("not made by bpfloader:")
        lines += [f"  {path}" for path in report["foreign_pins"]]
    return "\n".join(lines)


def current_status(options: LoadOptions) -> dict[str, Any]:
    """The report for a pin root: from the recorded state, or rebuilt (read-only) without one."""
    pin_root = os.path.abspath(options.pin_root)
    if not kpins.is_bpffs(pin_root):
        raise LoaderError(
            f"pin root {pin_root} is not a bpf filesystem (mount it: mount -t bpf bpf {pin_root})"
        )
    env = current_environment(options.build_type)
    state, _ = recorded_state(options.state_dir, pin_root, env)
    if state is not None:
        return status_report(state, rebuilt=False)
    plans = [planned.plan for planned in plan_run(options, env, os.path.lexists).objects]
    source_dir = os.path.abspath(options.source_dir)
    return status_report(rebuild(plans, pin_root, source_dir, environment_key(env)), rebuilt=True)
