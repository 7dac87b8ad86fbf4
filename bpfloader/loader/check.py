"""`bpfloader check`: validate objects for a build pipeline, without pinning anything.

Without the kernel (no root needed): parse, apply the policy file, gate against this machine,
name every pin the object would make with its owner and mode, and relocate every program.
With the kernel: also the load sequence `load` runs (kernel_objects.py: maps created, programs
loaded, the verifier runs), then everything is let go; nothing is pinned, nothing outlives the
check.

`check --json` is a stable interface (format 1), documented in README.md:

    {"format": 1, "ok": bool,
     "objects": [{"path": str, "ok": bool, "error": str | null,
                  "pins": [{"kind": "map" | "program", "name": str, "pin": str,
                            "action": "create" | "load" | "skip", "reason": str,
                            "uid": int, "gid": int, "mode": "0640"}],
                  "notes": [str], "verifier_log": str | null}]}

`ok` is false when any object is not valid. `error` is the object's one-line error (it
names the object). `pins` are those its plan would make (`action` create or load; `reason`
'') and the maps and programs its gates leave out (`skip`, and why). `notes` are the other
lines of the text form: declared attachments, struct_ops registrations, CO-RE relocations,
externs, what `--kernel` made, warnings. `verifier_log` is the verifier's whole log when it
refused a program (`--kernel`), else null.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any

from bpfloader.errors import KernelError, LoaderError, ObjectFormatError, one_line, verifier_error
from bpfloader.loader.gates import Environment
from bpfloader.loader.kernel_objects import KernelObjects
from bpfloader.loader.limits import open_files_error
from bpfloader.loader.plan import (
    MapPlan,
    ObjectPlan,
    Planner,
    ProgramPlan,
    SourceObject,
    variant_note,
)
from bpfloader.loader.policy import apply_policy, policy_types, read_policy
from bpfloader.loader.results import Action
from bpfloader.loader.source import cannot_read
from bpfloader.obj import core, ksyms, struct_ops
from bpfloader.obj.bpftypes import PinKind
from bpfloader.obj.core import ObjectCore, TargetBtf
from bpfloader.obj.kconfig import Kconfig
from bpfloader.obj.ksyms import Ksyms
from bpfloader.obj.reader import read_object
from bpfloader.obj.relocate import relocate
from bpfloader.obj.spec import ProgramSpec

PLACEHOLDER_FD = 0x7FFFFFFF  # what relocation writes where a map fd will go
C_SUFFIXES = (".c", ".h")  # what `bpfloader build` takes, given to check by mistake
ELF_MAGIC = b"\x7fELF"


@dataclass
class CheckResult:
    path: str
    error: LoaderError | None = None
    plan: ObjectPlan | None = None  # its pins: what load would make, and what its gates skip
    lines: list[str] = field(default_factory=list)  # the rest: notes, skips found, warnings
    verifier_log: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


def check_object(
    path: str, env: Environment, pin_root: str, *, kernel: bool, target: TargetBtf | None = None
) -> CheckResult:
    result = CheckResult(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
        if path.endswith(C_SUFFIXES) and not data.startswith(ELF_MAGIC):
            raise ObjectFormatError(
                "a C source, not an object: compile it first with `bpfloader build "
                f"{shlex.quote(path)}` and check the .o it writes"
            )
        policy = read_policy(path)
        spec = apply_policy(read_object(data, path, policy_types(policy)), policy)
    except LoaderError as e:
        result.error = e.where(file=path)
        return result
    except OSError as e:
        result.error = cannot_read(e).where(file=path)
        return result
    plan = Planner(env, pin_root, lambda _: False).plan(SourceObject(path), spec)
    if plan.error is not None:
        result.error = plan.error
        return result
    if plan.skip_reason is not None:
        result.lines.append(f"skip: {plan.skip_reason}")
        return result
    result.plan = plan
    result.lines += _notes(plan)
    try:
        placeholders = {m.spec.name: PLACEHOLDER_FD for m in plan.maps}
        ksyms_ = plan.spec.ksyms if plan.spec is not None else None
        externs = ksyms.unresolved_patches(ksyms_) if ksyms_ is not None else {}
        for program in plan.programs:
            if program.action is not Action.SKIP:
                relocate(program.spec, placeholders, externs=externs)
        if plan.spec is not None and plan.spec.core is not None:
            result.lines += _core_lines(plan, plan.spec.core, target)
        if plan.spec is not None and plan.spec.kconfig is not None:
            result.lines += _kconfig_lines(plan.spec.kconfig)
        if ksyms_ is not None:
            result.lines += _ksym_lines(ksyms_, target)
        if target is not None:
            result.lines += _struct_ops_lines(plan, target)
        if kernel:
            _load(plan, env, result)
    except LoaderError as e:
        result.error = open_files_error(e, plan) or e.where(file=path)
        refusal = verifier_error(e)
        if refusal is not None:
            result.verifier_log = refusal.log.decode("utf-8", errors="backslashreplace")
    return result


def _core_lines(plan: ObjectPlan, object_core: ObjectCore, target: TargetBtf | None) -> list[str]:
    """The object's CO-RE relocations against `target`: how many were satisfied, and each
    one that was not (poisoned: the verifier refuses a program that reaches it)."""
    count = len(object_core.records)
    if target is None:
        return [f"core: {count} CO-RE relocations, not resolved (--target-btf FILE resolves them)"]
    results = core.resolve(object_core, target)
    for program in plan.programs:
        if program.action is not Action.SKIP:
            core.apply(program.spec.instructions, program.spec.core_relos, results)
    poisoned = [(s, r) for s, r in object_core.records if results[r.number].poison]
    lines = [
        f"core: {count - len(poisoned)} of {count} CO-RE relocations satisfied by {target.name}"
    ]
    lines += [
        f"core: not satisfied (poisoned): {section}: #{record.number} "
        f"{object_core.describe(record)}"
        for section, record in poisoned
    ]
    return lines


def _kconfig_lines(layout: Kconfig) -> list[str]:
    """The `__kconfig` externs the object needs from the kernel it is loaded on (their values
    are decided at load time: `check --kernel` reads this kernel's config)."""
    return [
        f"extern {e.name} (.kconfig): {e.type.value}, {e.size} bytes at {e.offset}"
        + (", __weak" if e.weak else "")
        for e in layout.externs
    ]


def _ksym_lines(externs: Ksyms, target: TargetBtf | None) -> list[str]:
    """The `__ksym` externs the object needs from the kernel, and with `target` what each
    typed one comes to in that kernel's BTF (a strong one it lacks fails the check)."""
    values = ksyms.resolve(externs, target, None) if target is not None else {}
    lines = []
    for k in externs.externs:
        line = f"extern {k.name} (.ksyms): {k.kind.value}" + (", __weak" if k.weak else "")
        value = values.get(k.name)
        if value is not None and value.found:
            where = f"module {value.module}" if value.module else "vmlinux"
            line += f": {where} BTF id {value.btf_id}"
        elif value is not None:
            line += f": not in {ksyms.target_name(target)} (0)"
        lines.append(line)
    return lines


def _pin_lines(plan: ObjectPlan) -> list[str]:
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


def _notes(plan: ObjectPlan) -> list[str]:
    lines = []
    for program in plan.programs:  # declared attachments: made by load, not by check
        if program.action is not Action.SKIP:
            lines += [
                f"attach {program.spec.name} to {a.target}" + (" (optional)" if a.optional else "")
                for a in program.spec.attach
            ]
    for m in plan.maps:  # struct_ops maps: registered by load, not by check
        ops = m.spec.struct_ops
        if ops is not None and m.action is not Action.SKIP:
            how = "a link" if ops.link else "its value"
            lines.append(
                f"register {m.spec.name} as struct {ops.type_name} (by {how}): "
                + ", ".join(f"{x.name}={x.program}" for x in ops.members if x.program)
            )
    return lines


def _struct_ops_lines(plan: ObjectPlan, target: TargetBtf) -> list[str]:
    """The struct_ops maps laid out against `target`'s struct (its members by name)."""
    lines = []
    for m in plan.maps:
        ops = m.spec.struct_ops
        if ops is not None and m.action is not Action.SKIP:
            laid = struct_ops.resolve(m.spec.name, ops, target.vmlinux)
            left = f"; left out (members {target.name} lacks): {', '.join(laid.dropped)}"
            lines.append(
                f"struct_ops {m.spec.name}: bpf_struct_ops_{ops.type_name} of {laid.value_size} "
                f"bytes in {target.name}" + (left if laid.dropped else "")
            )
    return lines


def _load(plan: ObjectPlan, env: Environment, result: CheckResult) -> None:
    """The load sequence of `load`, with nothing pinned; then everything is let go."""
    assert plan.spec is not None

    tried: set[str] = set()  # the optional programs the kernel refused

    def rejected(spec: ProgramSpec, error: KernelError) -> None:
        tried.add(spec.name)
        result.lines.append(f"warning: optional program {spec.name}: {error.reason}")

    objects = KernelObjects(
        plan.spec,
        env.linux_version_code,
        lambda message: result.lines.append(f"warning: {message}"),
        rejected,
    )
    with objects.load(plan) as loaded:
        fallbacks = {p.spec.name: p for p in plan.programs if p.is_fallback}
        for skip in loaded.skipped:
            fallback = fallbacks.get(skip.name) if skip.kind is PinKind.PROGRAM else None
            if fallback is not None and skip.name not in tried:  # the plan could not say
                result.lines.append(f"skip prog {fallback.pin_path}: {skip.reason}")
        result.lines.append(
            f"kernel: {len(loaded.maps)} maps created, {len(loaded.programs)} programs loaded"
        )


def format_result(result: CheckResult) -> str:
    head = f"ok   {one_line(result.path)}" if result.ok else f"FAIL {result.error}"
    lines = (_pin_lines(result.plan) if result.plan is not None else []) + result.lines
    body = [f"  {one_line(line)}" for line in lines]
    body += [f"  | {one_line(line)}" for line in result.verifier_log.splitlines()]
    return "\n".join([head, *body])


CHECK_FORMAT = 1


def check_json(results: list[CheckResult]) -> dict[str, Any]:
    """`check --json` (see the module's docstring)."""
    return {
        "format": CHECK_FORMAT,
        "ok": all(r.ok for r in results),
        "objects": [
            {
                "path": r.path,
                "ok": r.ok,
                "error": None if r.error is None else str(r.error),
                "pins": _pins_json(r.plan) if r.plan is not None else [],
                "notes": r.lines,
                "verifier_log": r.verifier_log or None,
            }
            for r in results
        ],
    }


def _pins_json(plan: ObjectPlan) -> list[dict[str, Any]]:
    items: tuple[MapPlan | ProgramPlan, ...] = (*plan.maps, *plan.programs)
    return [
        {
            "kind": "map" if isinstance(item, MapPlan) else "program",
            "name": item.spec.name,
            "pin": item.pin_path,
            "action": item.action.value,
            "reason": (variant_note(item) + item.reason) if item.action is Action.SKIP else "",
            "uid": item.owner.uid,
            "gid": item.owner.gid,
            "mode": f"{item.owner.mode:04o}",
        }
        for item in items
    ]
