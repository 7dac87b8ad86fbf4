"""The events of a load, built from results: what goes to the journal (or the console).

One failure is one event: a program the verifier refused is the PROGRAM_REJECTED entry of
its object's failure, carrying the complete verifier log, not a second line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bpfloader.errors import KernelError, LoaderError, VerifierError, show_name
from bpfloader.journal import VERIFIER_LOG_FIELD, Event, FieldValue, MessageId, Priority
from bpfloader.loader.plan import Action

if TYPE_CHECKING:
    from bpfloader.loader.results import ObjectResult, PinRecord


def field_name(name: str) -> FieldValue:
    """A name from an object as a journal field value: its original bytes when not plain text.

    Names are read as latin-1 (obj/elf.py), so encoding back gives exactly the bytes in the file.
    """
    return name if name.isascii() and name.isprintable() else name.encode("latin-1")


def failure_fields(path: str, error: LoaderError) -> dict[str, FieldValue]:
    fields: dict[str, FieldValue] = {"BPF_OBJECT": path}
    if error.section:
        key = "BPF_PROGRAM" if isinstance(error, KernelError) else "BPF_SECTION"
        fields[key] = field_name(error.section)
    if isinstance(error, KernelError):
        fields["ERRNO"] = error.errno
    if isinstance(error, VerifierError):
        fields[VERIFIER_LOG_FIELD] = error.log
        fields["BPF_VERIFIER_LOG_SIZE"] = len(error.log)
        if error.truncated:
            fields["BPF_VERIFIER_LOG_TRUNCATED"] = 1
    return fields


def program_rejected(path: str, error: KernelError, priority: Priority) -> Event:
    message = str(error)
    if isinstance(error, VerifierError) and error.truncated:
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
    return Event(
        MessageId.OBJECT_SKIPPED,
        Priority.NOTICE,
        f"{path}: skipped: {reason}",
        {"BPF_OBJECT": path},
    )


def object_loaded(result: ObjectResult) -> list[Event]:
    """The skips, the maps and programs, the pins made, and the object itself."""
    path = result.path
    events = []
    for skip in result.skipped:
        is_map = skip.kind == "map"
        events.append(
            Event(
                MessageId.MAP_SKIPPED if is_map else MessageId.PROGRAM_SKIPPED,
                Priority.INFO,
                f"{path}: {skip.kind} {show_name(skip.name)} skipped: {skip.reason}",
                {"BPF_OBJECT": path, "BPF_MAP" if is_map else "BPF_PROGRAM": field_name(skip.name)},
            )
        )
    for pin in result.pins:
        events.append(_kernel_object_event(path, pin))
        if pin.action is not Action.REUSE:
            events.append(_pin_made(path, pin))
    made = sum(1 for pin in result.pins if pin.action is not Action.REUSE)
    events.append(
        Event(
            MessageId.OBJECT_LOADED,
            Priority.INFO,
            f"{path}: loaded ({made} pins made, {len(result.pins) - made} reused, "
            f"{len(result.skipped)} skipped)",
            {"BPF_OBJECT": path},
        )
    )
    return events


def _kernel_object_event(path: str, pin: PinRecord) -> Event:
    fields: dict[str, FieldValue] = {"BPF_OBJECT": path, "BPF_PIN": pin.path}
    name = show_name(pin.name)
    if pin.kind == "map":
        fields.update(BPF_MAP=field_name(pin.name), BPF_MAP_ID=pin.kernel_id)
        if pin.action is Action.REPLACE:
            return Event(
                MessageId.MAP_RECREATED,
                Priority.WARNING,
                f"recreated map {name} (id {pin.kernel_id}), its contents are lost: {pin.note}",
                fields,
            )
        if pin.action is Action.REUSE:
            return Event(
                MessageId.MAP_REUSED,
                Priority.INFO,
                f"reused map {name} (id {pin.kernel_id}) at {pin.path}",
                fields,
            )
        return Event(
            MessageId.MAP_CREATED, Priority.INFO, f"created map {name} (id {pin.kernel_id})", fields
        )
    fields.update(BPF_PROGRAM=field_name(pin.name), BPF_PROG_ID=pin.kernel_id)
    if pin.verified_insns is not None:
        fields["BPF_VERIFIED_INSNS"] = pin.verified_insns
    if pin.action is Action.REUSE:
        return Event(
            MessageId.PROGRAM_REUSED,
            Priority.INFO,
            f"reused program {name} (id {pin.kernel_id}) at {pin.path}",
            fields,
        )
    load_usec = round((pin.load_seconds or 0.0) * 1e6)
    fields.update(BPF_LOAD_USEC=load_usec, BPF_JIT_SIZE=pin.jited_size or 0)
    replaced = pin.action is Action.REPLACE
    return Event(
        MessageId.PROGRAM_REPLACED if replaced else MessageId.PROGRAM_LOADED,
        Priority.INFO,
        f"{'replaced' if replaced else 'loaded'} program {name} (id {pin.kernel_id}): "
        f"{pin.verified_insns} instructions verified in {load_usec / 1000:.2f} ms, "
        f"JIT {pin.jited_size} bytes",
        fields,
    )


def _pin_made(path: str, pin: PinRecord) -> Event:
    owner = pin.owner
    return Event(
        MessageId.PIN_MADE,
        Priority.INFO,
        f"pinned {pin.path} ({owner.uid}:{owner.gid} {owner.mode:04o})",
        {
            "BPF_OBJECT": path,
            "BPF_PIN": pin.path,
            "BPF_PIN_UID": owner.uid,
            "BPF_PIN_GID": owner.gid,
            "BPF_PIN_MODE": f"{owner.mode:04o}",
        },
    )
