"""Plain-text views of a plan (--dry-run) and of a run (the summary)."""

from __future__ import annotations

from bpfloader.errors import one_line
from bpfloader.loader.apply import ObjectResult, Status
from bpfloader.loader.plan import Action, MapPlan, ProgramPlan, RunPlan
from bpfloader.loader.run import RunResult


def format_plan(plan: RunPlan) -> str:
    lines = []
    for obj in plan.objects:
        path = one_line(obj.path)
        critical = " (critical)" if obj.critical else ""
        if obj.error is not None:
            lines.append(f"{path}{critical}: FAIL: {obj.error}")
            continue
        if obj.skip_reason is not None:
            lines.append(f"{path}{critical}: skip: {obj.skip_reason}")
            continue
        lines.append(f"{path}{critical}:")
        items: tuple[MapPlan | ProgramPlan, ...] = (*obj.maps, *obj.programs)
        for item in items:
            kind = "map" if item in obj.maps else "prog"
            if item.action is Action.SKIP:
                lines.append(f"  {'skip':6} {kind:4} {item.pin_path}: {item.reason}")
            else:
                owner = item.owner
                lines.append(
                    f"  {item.action.value:6} {kind:4} {item.pin_path}  "
                    f"{owner.uid}:{owner.gid} {owner.mode:04o}"
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
        width = max(len(p.path) for p in pins)
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
                f"{pin.path:{width}}  {pin.action.value:7}  {owner:11}  {pin.owner.mode:04o}  "
                f"{pin.kernel_id:>5}  {insns:>7}  {load_ms:>8}  {jit:>6}"
            )
    loaded = [p for p in pins if p.kind == "program" and p.action in (Action.LOAD, Action.REPLACE)]
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
    if obj.status is Status.FAILED:
        return f"failed{' (critical)' if obj.plan.critical else ''}: {obj.reason}"
    return f"skipped: {one_line(obj.path)}: {obj.reason}"
