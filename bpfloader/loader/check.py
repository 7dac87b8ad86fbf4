"""`bpfloader check`: validate objects for a build pipeline, without pinning anything.

Without the kernel (no root needed): parse, apply the policy file, gate against this machine,
name every pin the object would make with its owner and mode, and relocate every program.
With the kernel: also create the maps and load the programs (the verifier runs), then let
them go; nothing is pinned, nothing outlives the check.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from bpfloader.errors import KernelError, LoaderError, VerifierError, one_line
from bpfloader.kernel import system
from bpfloader.loader.gates import Environment
from bpfloader.loader.kernel_objects import KernelObjects
from bpfloader.loader.plan import (
    Action,
    ObjectPlan,
    Planner,
    SourceObject,
    variant_label,
    variant_note,
    variant_outcome,
)
from bpfloader.loader.policy import apply_policy, read_policy
from bpfloader.obj.reader import read_object
from bpfloader.obj.relocate import relocate

PLACEHOLDER_FD = 0x7FFFFFFF  # what relocation writes where a map fd will go


@dataclass
class CheckResult:
    path: str
    error: LoaderError | None = None
    lines: list[str] = field(default_factory=list)  # the pins, skips and warnings
    verifier_log: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


def check_object(path: str, env: Environment, pin_root: str, *, kernel: bool) -> CheckResult:
    result = CheckResult(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
        spec = apply_policy(read_object(data, path), read_policy(path))
    except OSError as e:
        result.error = LoaderError(f"cannot read: {e.strerror}", file=path)
        return result
    except LoaderError as e:
        result.error = e.where(file=path)
        return result
    plan = Planner(env, pin_root, lambda _: False).plan(SourceObject(path), spec)
    if plan.error is not None:
        result.error = plan.error
        return result
    if plan.skip_reason is not None:
        result.lines.append(f"skip: {plan.skip_reason}")
        return result
    result.lines += _describe(plan)
    try:
        placeholders = {m.spec.name: PLACEHOLDER_FD for m in plan.maps}
        for program in plan.programs:
            if program.action is not Action.SKIP:
                relocate(program.spec, placeholders)
        if kernel:
            _load(plan, result)
    except LoaderError as e:
        result.error = e.where(file=path)
        if isinstance(e, VerifierError):
            result.verifier_log = e.log.decode("utf-8", errors="backslashreplace")
    return result


def _describe(plan: ObjectPlan) -> list[str]:
    lines = []
    for kind, items in (("map", plan.maps), ("prog", plan.programs)):
        for item in items:
            if item.action is Action.SKIP:
                lines.append(f"skip {kind} {item.pin_path}: {variant_note(item)}{item.reason}")
            else:
                owner = item.owner
                lines.append(
                    f"{kind:4} {item.pin_path}  {owner.uid}:{owner.gid} {owner.mode:04o}"
                    + variant_note(item)
                )
    return lines


def _load(plan: ObjectPlan, result: CheckResult) -> None:
    """Make the maps and programs in the kernel, then let them all go."""
    assert plan.spec is not None
    release = system.kernel_release()
    objects = KernelObjects(
        plan.spec,
        system.linux_version_code(release),
        lambda message: result.lines.append(f"warning: {message}"),
    )
    fds: list[int] = []
    try:
        objects.load_btf()
        map_fds: dict[str, int] = {}
        for m in plan.maps:
            if m.action is not Action.SKIP:
                map_fds[m.spec.name] = objects.create_map(m.spec)
                fds.append(map_fds[m.spec.name])
        prog_fds: dict[str, int] = {}
        pinned: dict[str, str] = {}  # pin path -> the section pinned there (`$` variants)
        for p in plan.programs:
            why = variant_outcome(p, pinned)
            if why is not None:
                if p.is_fallback:  # the plan could not say; now it can
                    result.lines.append(f"skip prog {p.pin_path}: {variant_label(p)}{why}")
                continue
            try:
                loaded = objects.load_program(p.spec, map_fds)
            except KernelError as e:
                e.where(section=p.spec.section)
                if not p.spec.optional:
                    raise
                result.lines.append(f"warning: optional program {p.spec.function}: {e.reason}")
                continue
            fds.append(loaded.fd)
            prog_fds[p.spec.function] = loaded.fd
            pinned[p.pin_path] = p.spec.section
        for m in plan.maps:
            if m.spec.slots and m.spec.name in map_fds:
                objects.fill_slots(
                    m.spec, map_fds[m.spec.name], map_fds, prog_fds, True, set(prog_fds)
                )
        result.lines.append(f"kernel: {len(map_fds)} maps created, {len(prog_fds)} programs loaded")
    finally:
        for fd in fds:
            os.close(fd)
        objects.close()


def format_result(result: CheckResult) -> str:
    head = f"ok   {one_line(result.path)}" if result.ok else f"FAIL {result.error}"
    body = [f"  {line}" for line in result.lines]
    body += [f"  | {line}" for line in result.verifier_log.splitlines()]
    return "\n".join([head, *body])
