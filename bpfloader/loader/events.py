"""Every event of the loader, built here: what goes to the journal (or the console).

One failure is one event: a program the verifier refused is the PROGRAM_REJECTED entry of
its object's failure, carrying the complete verifier log, not a second line. Modules that
report call the builder of their event; none builds an Event of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bpfloader.errors import KernelError, LoaderError, show_name, verifier_error
from bpfloader.journal import VERIFIER_LOG_FIELD, Event, FieldValue, MessageId, Priority
from bpfloader.loader.results import Action
from bpfloader.obj.bpftypes import STRUCT_OPS_TARGET, PinKind

if TYPE_CHECKING:
    from bpfloader.loader.results import ObjectResult, Pin


def field_name(name: str) -> FieldValue:
    """A name from an object as a journal field value: its original bytes when not plain text.

    Names are read as latin-1 (obj/elf.py), so encoding back gives exactly the bytes in the file.
    """
    return name if name.isascii() and name.isprintable() else name.encode("latin-1")


def _event(message_id: MessageId, priority: Priority, message: str, **fields: FieldValue) -> Event:
    return Event(message_id, priority, message, dict(fields))


# -- a run ------------------------------------------------------------------------------------


def run_started(verb: str, source_dir: str, pin_root: str, kernel: str, version: int) -> Event:
    return _event(
        MessageId.RUN_STARTED,
        Priority.INFO,
        f"{verb} {source_dir} into {pin_root} (kernel {kernel}, loader version {version})",
    )


def run_finished(
    loaded: int, skipped: int, failed: int, critical: int, removed: int | None
) -> Event:
    """`removed`: the pins a reload removed (None for a load, which removes none)."""
    return _event(
        MessageId.RUN_FINISHED,
        Priority.ERR if critical else Priority.INFO,
        f"{loaded} loaded, {skipped} skipped, {failed} failed ({critical} critical)"
        + (f", {removed} pins removed" if removed is not None else ""),
    )


def trust_policy_off(source_dir: str) -> Event:
    return _event(
        MessageId.TRUST_POLICY_OFF,
        Priority.WARNING,
        f"INSECURE: --insecure-allow-untrusted: the trust policy on {source_dir} is off; objects "
        "that someone other than root could have written will be loaded (for development only, "
        "never on a real system)",
    )


def untrusted_object_allowed(path: str, problem: str) -> Event:
    return _event(
        MessageId.UNTRUSTED_OBJECT_ALLOWED,
        Priority.WARNING,
        f"{path}: INSECURE: let through despite the trust policy (--insecure-allow-untrusted): "
        f"{problem}",
        BPF_OBJECT=path,
    )


def policy_not_applied(path: str, why: str) -> Event:
    """`why`: `policy PATH: not applied: <what the trust policy refuses in it>`."""
    return _event(
        MessageId.POLICY_NOT_APPLIED,
        Priority.WARNING,
        f"{path}: {why}; only root's own policy files are applied: its pins get the owners and "
        "modes the object declares",
        BPF_OBJECT=path,
    )


def state_rebuilt(problem: str, pins: int, objects: int) -> Event:
    return _event(
        MessageId.STATE_REBUILT,
        Priority.WARNING if problem else Priority.NOTICE,
        f"state {problem or 'missing'}: rebuilt from the pins and the objects "
        f"({pins} pins attributed to {objects} objects)",
    )


def publication_interrupted(path: str, pins: int) -> Event:
    return _event(
        MessageId.STATE_REBUILT,
        Priority.WARNING,
        f"{path}: a run was killed while it published this object's pins ({pins} of them):"
        " it is loaded again, and the pins it no longer makes are removed",
        BPF_OBJECT=path,
    )


def pin_root_opened(pin_root: str, before: int, after: int) -> Event:
    return _event(
        MessageId.PIN_ROOT_OPENED,
        Priority.NOTICE,
        f"made pin root {pin_root} traversable ({before:04o} -> {after:04o})",
        BPF_PIN=pin_root,
    )


def pin_root_taken_over(pin_root: str, before: int, after: int, owner: int) -> Event:
    return _event(
        MessageId.PIN_ROOT_OPENED,
        Priority.NOTICE,
        f"took pin root {pin_root} over ({before:04o} -> {after:04o}"
        + (f", owner uid {owner} -> root" if owner != 0 else "")
        + "): no one but root may add, rename or remove entries in it",
        BPF_PIN=pin_root,
    )


def pin_root_shared(pin_root: str, mode: int, owner: int) -> Event:
    return _event(
        MessageId.PIN_ROOT_OPENED,
        Priority.WARNING,
        f"pin root {pin_root} is left writable by others (mode {mode:04o}, owner uid {owner};"
        " --insecure-shared-pin-root): other users can add entries beside the loader's pins",
        BPF_PIN=pin_root,
    )


def memlock_raised(charged: str, soft: str, hard: str) -> Event:
    return _event(
        MessageId.MEMLOCK_RAISED,
        Priority.INFO,
        f"{charged}: raised it from {soft} (hard {hard}) to unlimited",
    )


def memlock_low(charged: str, hard: str, why: str) -> Event:
    return _event(
        MessageId.MEMLOCK_LOW,
        Priority.WARNING,
        f"{charged}, and it could be raised only to {hard} ({why}): maps and programs beyond "
        "it fail with EPERM (run with LimitMEMLOCK=infinity)",
    )


def unprivileged_bpf(priority: Priority, message: str, sysctl: str, value: str) -> Event:
    return _event(
        MessageId.UNPRIVILEGED_BPF,
        priority,
        message,
        BPF_SYSCTL=sysctl,
        BPF_SYSCTL_VALUE=value,
    )


def object_cache_unused(cache_dir: str, why: str, *, refused: bool) -> Event:
    """`why`: `not used: <why>` or `not written: <why>`. `refused`: by the trust rule (a
    warning); else the directory could not be opened, made or written (a notice). Either way
    the run goes on without it."""
    return _event(
        MessageId.OBJECT_CACHE_UNUSED,
        Priority.WARNING if refused else Priority.NOTICE,
        f"object cache {cache_dir}: {why}; objects are read and parsed as without it",
        BPF_CACHE_DIR=cache_dir,
    )


# -- an object ----------------------------------------------------------------------------------


def failure_fields(path: str, error: LoaderError) -> dict[str, FieldValue]:
    fields: dict[str, FieldValue] = {"BPF_OBJECT": path}
    if error.section:
        fields["BPF_SECTION"] = field_name(error.section)
    if error.program:
        fields["BPF_PROGRAM"] = field_name(error.program)
    if isinstance(error, KernelError):
        fields["ERRNO"] = error.errno
    refusal = verifier_error(error)
    if refusal is not None:
        fields[VERIFIER_LOG_FIELD] = refusal.log
        fields["BPF_VERIFIER_LOG_SIZE"] = len(refusal.log)
        if refusal.truncated:
            fields["BPF_VERIFIER_LOG_TRUNCATED"] = 1
    return fields


def program_rejected(path: str, error: KernelError, priority: Priority) -> Event:
    message = str(error)
    refusal = verifier_error(error)
    if refusal is not None and refusal.truncated:
        message += " (verifier log truncated at bpfloader's cap)"
    return Event(MessageId.PROGRAM_REJECTED, priority, message, failure_fields(path, error))


def object_failed(path: str, error: LoaderError, critical: bool) -> Event:
    priority = Priority.CRIT if critical else Priority.ERR
    if isinstance(error, KernelError) and error.operation == "BPF_PROG_LOAD":
        event = program_rejected(path, error, priority)
    else:
        event = Event(MessageId.OBJECT_FAILED, priority, str(error), failure_fields(path, error))
    if critical:
        event.fields["BPF_CRITICAL"] = 1
        return Event(event.message_id, priority, f"{event.message} (critical object)", event.fields)
    return event


def object_skipped(path: str, reason: str) -> Event:
    return _event(
        MessageId.OBJECT_SKIPPED, Priority.NOTICE, f"{path}: skipped: {reason}", BPF_OBJECT=path
    )


def object_unchanged(path: str, pins: int) -> Event:
    return _event(
        MessageId.OBJECT_UNCHANGED,
        Priority.INFO,
        f"{path}: unchanged, left alone ({pins} pins)",
        BPF_OBJECT=path,
    )


def object_removed(path: str) -> Event:
    return _event(
        MessageId.OBJECT_REMOVED,
        Priority.INFO,
        f"{path}: no longer loaded, its pins are removed",
        BPF_OBJECT=path,
    )


def attachment_failed(path: str, program: str, target: str, reason: str) -> Event:
    return _event(
        MessageId.ATTACHMENT_FAILED,
        Priority.WARNING,
        f"{path}: program {show_name(program)} not attached to {show_name(target)} (optional): "
        f"{reason}",
        BPF_OBJECT=path,
        BPF_PROGRAM=field_name(program),
        BPF_ATTACH_TARGET=field_name(target),
    )


def struct_ops_registered(path: str, map_name: str, target: str, map_id: int) -> Event:
    """A `.struct_ops` map registered by its value (one with a link: its pin's event)."""
    return _event(
        MessageId.STRUCT_OPS_REGISTERED,
        Priority.INFO,
        f"{path}: registered struct_ops map {show_name(map_name)} (id {map_id}) as "
        f"{show_name(target)}",
        BPF_OBJECT=path,
        BPF_MAP=field_name(map_name),
        BPF_MAP_ID=map_id,
        BPF_ATTACH_TARGET=field_name(target),
    )


def link_updated(path: str, pin: str, program: str, link: int, old: int, new: int) -> Event:
    return _event(
        MessageId.LINK_UPDATED,
        Priority.NOTICE,
        f"{path}: link {link}, not the loader's, ran program {show_name(program)} {old}: updated "
        f"in place, it runs {new} now",
        BPF_OBJECT=path,
        BPF_PIN=pin,
        BPF_PROGRAM=field_name(program),
        BPF_LINK_ID=link,
    )


def link_stale(
    path: str, pin: str, program: str, link: int, kind: str, old: int, new: int
) -> Event:
    return _event(
        MessageId.LINK_STALE,
        Priority.WARNING,
        f"{path}: link {link} ({kind}), not the loader's, still runs program {show_name(program)} "
        f"{old}; the pin holds {new} now, and a {kind} link cannot be updated in place: attach "
        "the new one again, or declare the attachment in the policy file",
        BPF_OBJECT=path,
        BPF_PIN=pin,
        BPF_PROGRAM=field_name(program),
        BPF_LINK_ID=link,
        BPF_LINK_TYPE=kind,
    )


def pins_stale(path: str, pins: list[str], why: str) -> Event:
    return _event(
        MessageId.PINS_STALE,
        Priority.WARNING,
        f"{path}: kept {len(pins)} pins found in place, {why}: "
        f"{', '.join(pins)}; `bpfloader reload` loads the file and replaces them",
        BPF_OBJECT=path,
    )


def btf_refused(path: str, message: str) -> Event:
    return _event(MessageId.BTF_REFUSED, Priority.WARNING, message, BPF_OBJECT=path)


def object_loaded(result: ObjectResult) -> list[Event]:
    """The skips, the maps and programs, the pins made, and the object itself."""
    path = result.path
    found = []
    for skip in result.skipped:
        is_map = skip.kind is PinKind.MAP
        found.append(
            Event(
                MessageId.MAP_SKIPPED if is_map else MessageId.PROGRAM_SKIPPED,
                Priority.INFO,
                f"{path}: {skip.kind} {show_name(skip.name)} skipped: {skip.reason}",
                {"BPF_OBJECT": path, "BPF_MAP" if is_map else "BPF_PROGRAM": field_name(skip.name)},
            )
        )
    for pin in result.pins:
        found.append(_kernel_object_event(path, pin))
        if pin.made:
            found.append(_pin_made(path, pin))
    made = sum(1 for pin in result.pins if pin.made)
    found.append(
        _event(
            MessageId.OBJECT_LOADED,
            Priority.INFO,
            f"{path}: loaded ({made} pins made, {len(result.pins) - made} reused, "
            f"{len(result.skipped)} skipped)",
            BPF_OBJECT=path,
        )
    )
    return found


def _kernel_object_event(path: str, pin: Pin) -> Event:
    fields: dict[str, FieldValue] = {"BPF_OBJECT": path, "BPF_PIN": pin.path}
    name = show_name(pin.name)
    action = pin.action
    if pin.kind is PinKind.MAP:
        fields.update(BPF_MAP=field_name(pin.name), BPF_MAP_ID=pin.kernel_id)
        if action is Action.REPLACE and pin.target.startswith(STRUCT_OPS_TARGET):
            return Event(
                MessageId.MAP_CREATED,
                Priority.INFO,
                f"replaced struct_ops map {name} (id {pin.kernel_id}): {pin.note}",
                fields,
            )
        if action is Action.REPLACE:
            return Event(
                MessageId.MAP_RECREATED,
                Priority.WARNING,
                f"recreated map {name} (id {pin.kernel_id}), its contents are lost: {pin.note}",
                fields,
            )
        if action is Action.REUSE:
            return Event(
                MessageId.MAP_REUSED,
                Priority.INFO,
                f"reused map {name} (id {pin.kernel_id}) at {pin.path}",
                fields,
            )
        return Event(
            MessageId.MAP_CREATED, Priority.INFO, f"created map {name} (id {pin.kernel_id})", fields
        )
    if pin.kind is PinKind.LINK and pin.target.startswith(STRUCT_OPS_TARGET):
        fields.update(
            BPF_MAP=field_name(pin.name),
            BPF_LINK_ID=pin.kernel_id,
            BPF_ATTACH_TARGET=field_name(pin.target),
        )
        target, link = show_name(pin.target), pin.kernel_id
        messages = {
            Action.REUSE: f"kept struct_ops map {name} registered as {target} (link {link})",
            Action.UPDATE: f"updated link {link} in place: {target} is the new {name} now",
        }
        message = messages.get(
            action, f"registered struct_ops map {name} as {target} (link {link})"
        )
        return Event(MessageId.STRUCT_OPS_REGISTERED, Priority.INFO, message, fields)
    if pin.kind is PinKind.LINK:
        fields.update(
            BPF_PROGRAM=field_name(pin.name),
            BPF_LINK_ID=pin.kernel_id,
            BPF_ATTACH_TARGET=field_name(pin.target),
        )
        target, link = show_name(pin.target), pin.kernel_id
        messages = {
            Action.REUSE: f"kept program {name} attached to {target} (link {link})",
            Action.UPDATE: f"updated link {link} at {target} in place: it runs the new {name}",
            Action.REPLACE: f"attached the new {name} to {target} (link {link}), then let the "
            "old link go",
        }
        message = messages.get(action, f"attached program {name} to {target} (link {link})")
        return Event(MessageId.PROGRAM_ATTACHED, Priority.INFO, message, fields)
    fields.update(BPF_PROGRAM=field_name(pin.name), BPF_PROG_ID=pin.kernel_id)
    if pin.section:
        fields["BPF_SECTION"] = field_name(pin.section)
    if pin.verified_insns is not None:
        fields["BPF_VERIFIED_INSNS"] = pin.verified_insns
    if action is Action.REUSE:
        return Event(
            MessageId.PROGRAM_REUSED,
            Priority.INFO,
            f"reused program {name} (id {pin.kernel_id}) at {pin.path}",
            fields,
        )
    load_usec = round((pin.load_seconds or 0.0) * 1e6)
    fields.update(BPF_LOAD_USEC=load_usec, BPF_JIT_SIZE=pin.jited_size or 0)
    replaced = action is Action.REPLACE
    return Event(
        MessageId.PROGRAM_REPLACED if replaced else MessageId.PROGRAM_LOADED,
        Priority.INFO,
        f"{'replaced' if replaced else 'loaded'} program {name} (id {pin.kernel_id}): "
        f"{pin.verified_insns} instructions verified in {load_usec / 1000:.2f} ms, "
        f"JIT {pin.jited_size} bytes",
        fields,
    )


def _pin_made(path: str, pin: Pin) -> Event:
    owner = pin.owner
    return _event(
        MessageId.PIN_MADE,
        Priority.INFO,
        f"pinned {pin.path} ({owner.uid}:{owner.gid} {owner.mode:04o})",
        BPF_OBJECT=path,
        BPF_PIN=pin.path,
        BPF_PIN_UID=owner.uid,
        BPF_PIN_GID=owner.gid,
        BPF_PIN_MODE=f"{owner.mode:04o}",
    )


def pin_removed(path: str, owner_object: str) -> Event:
    return _event(
        MessageId.PIN_REMOVED,
        Priority.INFO,
        f"removed pin {path}",
        BPF_PIN=path,
        BPF_OBJECT=owner_object,
    )


def pin_not_removed(path: str, problem: str) -> Event:
    return _event(
        MessageId.PIN_REMOVED, Priority.WARNING, f"not removing {path}: {problem}", BPF_PIN=path
    )
