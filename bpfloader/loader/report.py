"""Views of a plan (--dry-run) and of a run (the summary, --stats, --json).

Every name and reason in the text goes through errors.one_line, as the console log's lines do:
a file name may hold a newline or an escape sequence, which would forge a line or reach the
terminal. The JSON forms are stable interfaces, documented in README.md:

`load --json`, `reload --json` and `load --dry-run --json` (what the run did, or would do):

    {"format": 1, "command": "load" | "reload", "dry_run": bool,
     "pin_root": str, "source_dir": str,
     "loaded": int, "skipped": int, "failed": int, "critical_failed": int,
     "objects": [{"path": str, "status": "loaded" | "skipped" | "failed",
                  "reason": str, "critical": bool, "stale": [str],
                  "pins": [PIN],
                  "skipped": [{"kind": "map" | "program", "name": str, "reason": str}]}],
     "removed": [str]}

    PIN = {"kind": "map" | "program" | "link", "name": str, "pin": str,
           "action": "create" | "load" | "reuse" | "replace" | "keep" | "update",
           "id": int | null, "uid": int | null, "gid": int | null, "mode": "0640" | null,
           "verified_insns": int | null, "load_usec": int | null, "jited_size": int | null}

With `dry_run`, each object's `status` is what the load would make of it, as far as the plan
can say (the kernel may still refuse what the plan accepts), `id` and the program figures are
null, and `removed` is empty. `reason` is why an object was skipped or failed ('' when
loaded; a failure's names the object). `stale` lists the pins a load kept, found in place, that
are not known to come from the file (a reload replaces them). `uid`, `gid` and `mode` are
null for a pin kept from a state rebuilt from the pins (its declaration is not known).
`removed`: the pins a reload removed (of objects no longer in the directory).

`unload --json`:

    {"format": 1, "command": "unload", "pin_root": str, "objects": [str], "removed": [str]}

    (the objects unloaded, and every pin removed)
"""

from __future__ import annotations

import os
from typing import Any

from bpfloader.errors import one_line
from bpfloader.loader.plan import MapPlan, ObjectPlan, ProgramPlan, planned_skips, variant_note
from bpfloader.loader.results import UNKNOWN_OWNER, Action, ObjectResult, Pin, Status, Timings
from bpfloader.loader.run import LoadOptions, RunResult
from bpfloader.loader.source import RunPlan
from bpfloader.obj.bpftypes import PinKind


def format_plan(run: RunPlan) -> str:
    lines = []
    for planned in run.objects:
        obj = planned.plan
        path = one_line(obj.path)
        critical = " (critical)" if obj.critical else ""
        if obj.error is not None:  # the error's line names the object: said once
            lines.append(f"{path}{critical}: FAIL: {str(obj.error).removeprefix(f'{path}: ')}")
            continue
        if obj.skip_reason is not None:
            lines.append(f"{path}{critical}: skip: {one_line(obj.skip_reason)}")
            continue
        lines.append(f"{path}{critical}:")
        items: tuple[MapPlan | ProgramPlan, ...] = (*obj.maps, *obj.programs)
        for item in items:
            kind = "map" if item in obj.maps else "prog"
            pin = one_line(item.pin_path)
            if item.action is Action.SKIP:
                reason = one_line(variant_note(item) + item.reason)
                lines.append(f"  {'skip':6} {kind:4} {pin}: {reason}")
            else:
                owner = item.owner
                lines.append(
                    f"  {item.action.value:6} {kind:4} {pin}  "
                    f"{owner.uid}:{owner.gid} {owner.mode:04o}{variant_note(item)}"
                )
    return "\n".join(lines)


def format_summary(run: RunResult) -> str:
    lines = [
        f"objects: {run.count(Status.LOADED)} loaded, {run.count(Status.SKIPPED)} skipped, "
        f"{run.count(Status.FAILED)} failed"
        + (f" ({len(run.critical_failures)} critical)" if run.critical_failures else "")
    ]
    pins = [pin for obj in run.objects for pin in obj.pins]
    if pins:
        width = max(len(one_line(p.path)) for p in pins)
        lines.append(
            f"{'pin':{width}}  {'action':7}  {'owner':11}  {'mode':4}  {'id':>5}  "
            f"{'insns':>7}  {'load ms':>8}  {'jit B':>6}"
        )
        for pin in pins:
            owner = f"{pin.owner.uid}:{pin.owner.gid}"
            insns = "" if pin.verified_insns is None else str(pin.verified_insns)
            load_ms = "" if pin.load_seconds is None else f"{pin.load_seconds * 1000:.2f}"
            jit = "" if pin.jited_size is None else str(pin.jited_size)
            lines.append(
                f"{one_line(pin.path):{width}}  {pin.action.value:7}  {owner:11}  "
                f"{pin.owner.mode:04o}  "
                f"{pin.kernel_id:>5}  {insns:>7}  {load_ms:>8}  {jit:>6}"
            )
    loaded = [
        p for p in pins if p.kind is PinKind.PROGRAM and p.action in (Action.LOAD, Action.REPLACE)
    ]
    if loaded:
        lines.append(
            f"programs loaded: {len(loaded)}, "
            f"{sum(p.verified_insns or 0 for p in loaded)} instructions verified, "
            f"{sum(p.load_seconds or 0.0 for p in loaded) * 1000:.2f} ms in BPF_PROG_LOAD"
        )
    for obj in run.objects:
        if obj.status is not Status.LOADED:
            lines.append(_status_line(obj))
        elif obj.stale:
            lines.append(
                f"stale: {one_line(obj.path)}: kept {len(obj.stale)} pins found in place, "
                f"{obj.stale_reason} (`bpfloader reload` loads the file and replaces them): "
                + ", ".join(one_line(p) for p in obj.stale)
            )
    return "\n".join(lines)


def _status_line(obj: ObjectResult) -> str:
    if obj.status is Status.FAILED:  # the reason is the error's line, which names the object
        return f"failed{' (critical)' if obj.plan.critical else ''}: {one_line(obj.reason)}"
    return f"skipped: {one_line(obj.path)}: {one_line(obj.reason)}"


def stats(run: RunResult) -> dict[str, object]:
    """`load --stats-json`: where the time went, per object and in total (format 1).

        {"format": 1,
         "objects": [{"path": str, "status": "loaded" | "skipped" | "failed",
                      "parse_seconds": float, "kernel_seconds": float, "pin_seconds": float,
                      "cache": "hit" | "miss" | null}],
         "total": {"parse_seconds": float, "kernel_seconds": float, "pin_seconds": float,
                   "wall_seconds": float, "jobs": int,
                   "cache_hits": int, "cache_misses": int}}

    parse_seconds is reading the object, taking its spec (from the object cache, or parsing
    it) and planning it. kernel_seconds is the time inside BPF_MAP_CREATE, BPF_PROG_LOAD and
    BPF_BTF_LOAD: the floor. Objects load side by side, so their times can add up to more than
    wall_seconds. `cache`: the object's spec came from the object cache (hit), or was parsed
    and stored there (miss); null when the cache was not asked (--no-cache, an object a reload
    left alone, one that could not be read). cache_hits and cache_misses count them."""
    objects = [
        {
            "path": obj.path,
            "status": obj.status.value,
            "parse_seconds": obj.timings.parse,
            "kernel_seconds": obj.timings.kernel,
            "pin_seconds": obj.timings.pin,
            "cache": _CACHE[obj.read.cached],
        }
        for obj in run.objects
    ]
    return {
        "format": 1,
        "objects": objects,
        "total": {
            "parse_seconds": sum(o.timings.parse for o in run.objects),
            "kernel_seconds": sum(o.timings.kernel for o in run.objects),
            "pin_seconds": sum(o.timings.pin for o in run.objects),
            "wall_seconds": run.wall_seconds,
            "jobs": run.jobs,
            "cache_hits": sum(o.read.cached is True for o in run.objects),
            "cache_misses": sum(o.read.cached is False for o in run.objects),
        },
    }


_CACHE = {True: "hit", False: "miss", None: None}  # SourceRead.cached, as stats() says it


def format_stats(run: RunResult) -> str:
    """`load --stats`: the same figures as a table, in milliseconds."""
    rows = [(one_line(o.path), o.timings) for o in run.objects]
    total = Timings(
        sum(t.parse for _, t in rows), sum(t.kernel for _, t in rows), sum(t.pin for _, t in rows)
    )
    width = max([len(name) for name, _ in rows] + [6])
    lines = [f"{'object':{width}}  {'parse ms':>9}  {'kernel ms':>9}  {'pin ms':>9}"]
    for name, t in [*rows, ("total", total)]:
        lines.append(
            f"{name:{width}}  {t.parse * 1e3:9.2f}  {t.kernel * 1e3:9.2f}  {t.pin * 1e3:9.2f}"
        )
    wall = f"wall {run.wall_seconds * 1e3:.2f} ms, {run.jobs} job(s)"
    looked_up = [o.read.cached for o in run.objects if o.read.cached is not None]
    if looked_up:
        hits = sum(looked_up)
        wall += f"; object cache: {hits} hits, {len(looked_up) - hits} misses"
    lines.append(wall)
    return "\n".join(lines)


FORMAT = 1  # of every JSON form above


def run_json(command: str, options: LoadOptions, run: RunResult) -> dict[str, Any]:
    """`load --json`, `reload --json`: what the run did."""
    return {
        **_run_head(command, options, dry_run=False),
        **_counts([(o.status, o.plan.critical) for o in run.objects]),
        "objects": [
            {
                "path": obj.path,
                "status": obj.status.value,
                "reason": obj.reason,
                "critical": obj.plan.critical,
                "stale": obj.stale,
                "pins": [_pin_json(pin) for pin in obj.pins],
                "skipped": [
                    {"kind": s.kind.value, "name": s.name, "reason": s.reason} for s in obj.skipped
                ],
            }
            for obj in run.objects
        ],
        "removed": run.removed,
    }


def plan_json(options: LoadOptions, run: RunPlan) -> dict[str, Any]:
    """`load --dry-run --json`: what the load would do, as far as the plan can say."""
    objects = [_planned_json(planned.plan) for planned in run.objects]
    return {
        **_run_head("load", options, dry_run=True),
        **_counts([(Status(o["status"]), o["critical"]) for o in objects]),
        "objects": objects,
        "removed": [],
    }


def unload_json(options: LoadOptions, run: RunResult) -> dict[str, Any]:
    """`unload --json`: the objects unloaded and the pins removed."""
    return {
        "format": FORMAT,
        "command": "unload",
        "pin_root": os.path.abspath(options.pin_root),
        "objects": run.unloaded,
        "removed": run.removed,
    }


def _run_head(command: str, options: LoadOptions, *, dry_run: bool) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "command": command,
        "dry_run": dry_run,
        "pin_root": os.path.abspath(options.pin_root),
        "source_dir": os.path.abspath(options.source_dir),
    }


def _counts(objects: list[tuple[Status, bool]]) -> dict[str, int]:
    def count(status: Status) -> int:
        return sum(1 for s, _ in objects if s is status)

    return {
        "loaded": count(Status.LOADED),
        "skipped": count(Status.SKIPPED),
        "failed": count(Status.FAILED),
        "critical_failed": sum(1 for s, critical in objects if s is Status.FAILED and critical),
    }


def _planned_json(plan: ObjectPlan) -> dict[str, Any]:
    status, reason = Status.LOADED, ""
    if plan.error is not None:
        status, reason = Status.FAILED, str(plan.error)
    elif plan.skip_reason is not None:
        status, reason = Status.SKIPPED, plan.skip_reason
    items: tuple[MapPlan | ProgramPlan, ...] = (*plan.maps, *plan.programs)
    pins = [
        {
            "kind": "map" if isinstance(item, MapPlan) else "program",
            "name": item.spec.name,
            "pin": item.pin_path,
            "action": item.action.value,
            "id": None,
            "uid": item.owner.uid,
            "gid": item.owner.gid,
            "mode": f"{item.owner.mode:04o}",
            "verified_insns": None,
            "load_usec": None,
            "jited_size": None,
        }
        for item in items
        if item.action is not Action.SKIP and status is Status.LOADED
    ]
    skipped = planned_skips(plan) if status is Status.LOADED else []
    return {
        "path": plan.path,
        "status": status.value,
        "reason": reason,
        "critical": plan.critical,
        "stale": [],
        "pins": pins,
        "skipped": [{"kind": s.kind.value, "name": s.name, "reason": s.reason} for s in skipped],
    }


def _pin_json(pin: Pin) -> dict[str, Any]:
    known = pin.owner != UNKNOWN_OWNER
    return {
        "kind": pin.kind.value,
        "name": pin.name,
        "pin": pin.path,
        "action": pin.action.value,
        "id": pin.kernel_id or None,
        "uid": pin.owner.uid if known else None,
        "gid": pin.owner.gid if known else None,
        "mode": f"{pin.owner.mode:04o}" if known else None,
        "verified_insns": pin.verified_insns,
        "load_usec": None if pin.load_seconds is None else round(pin.load_seconds * 1e6),
        "jited_size": pin.jited_size,
    }
