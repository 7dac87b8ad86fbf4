"""Plain-text views of a plan (--dry-run) and of a run (the summary, --stats).

Every name and reason goes through errors.one_line, as the console log's lines do: a file name
may hold a newline or an escape sequence, which would forge a line or reach the terminal."""

from __future__ import annotations

from bpfloader.errors import one_line
from bpfloader.loader.plan import MapPlan, ProgramPlan, variant_note
from bpfloader.loader.results import Action, ObjectResult, Status, Timings
from bpfloader.loader.run import RunResult
from bpfloader.loader.source import RunPlan
from bpfloader.obj.bpftypes import PinKind


def format_plan(run: RunPlan) -> str:
    lines = []
    for planned in run.objects:
        obj = planned.plan
        path = one_line(obj.path)
        critical = " (critical)" if obj.critical else ""
        if obj.error is not None:
            lines.append(f"{path}{critical}: FAIL: {obj.error}")
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
    return "\n".join(lines)


def _status_line(obj: ObjectResult) -> str:
    if obj.status is Status.FAILED:  # the reason is the error's line, which names the object
        return f"failed{' (critical)' if obj.plan.critical else ''}: {one_line(obj.reason)}"
    return f"skipped: {one_line(obj.path)}: {one_line(obj.reason)}"


def stats(run: RunResult) -> dict[str, object]:
    """`load --stats-json`: where the time went, per object and in total (format 1).

    kernel_seconds is the time inside BPF_MAP_CREATE, BPF_PROG_LOAD and BPF_BTF_LOAD: the floor.
    Objects load side by side, so their times can add up to more than wall_seconds."""
    objects = [
        {
            "path": obj.path,
            "status": obj.status.value,
            "parse_seconds": obj.timings.parse,
            "kernel_seconds": obj.timings.kernel,
            "pin_seconds": obj.timings.pin,
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
        },
    }


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
    lines.append(f"wall {run.wall_seconds * 1e3:.2f} ms, {run.jobs} job(s)")
    return "\n".join(lines)
