"""Structured load events, and where they go: the systemd journal, or stderr.

Every event has a fixed MESSAGE_ID per kind, a syslog priority and fields to filter on
(BPF_OBJECT, BPF_PROGRAM, BPF_MAP, BPF_PIN, BPF_PROG_ID, BPF_MAP_ID, ERRNO, BPF_VERIFIER_LOG).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Protocol, TextIO

from bpfloader.errors import one_line


class Priority(IntEnum):
    EMERG = 0
    ALERT = 1
    CRIT = 2
    ERR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7


class MessageId(StrEnum):
    """One id per kind of event (the journal's MESSAGE_ID); systemd/bpfloader.catalog explains
    each. These are a contract with users' journal queries: never change one."""

    RUN_STARTED = "7fc89a44fb624fd587fe72c60b1f6aab"
    RUN_FINISHED = "54fdd5bbcf0148fcbe14d3889938dea9"
    OBJECT_LOADED = "2b14cc99de9b447b9b04e33bf7d46db3"
    OBJECT_SKIPPED = "7214930398dd472893de2fb0c0fadc1a"
    OBJECT_FAILED = "d85e6928eebf43ed9a5046468f61eda1"
    MAP_CREATED = "d7e5f675e0384d60bd5229969aaf5a33"
    MAP_REUSED = "8396e43b189146e2acbacd2e1350eee1"
    MAP_SKIPPED = "d06217e31f2a41008d8b6ef917001df0"
    PROGRAM_LOADED = "950a3ecdb044497fabc2a62b4d7d3dd0"
    PROGRAM_REUSED = "96b14bd3c1ea487d857a7ffdff233843"
    PROGRAM_SKIPPED = "1e002c13b0f04c88bfd2f025bace9571"
    PROGRAM_REJECTED = "7d9afd78562c46faae32983aba52df7a"
    PIN_MADE = "ec2464264fca407fa18f98b2721e7088"
    PIN_ROOT_OPENED = "0feb0e3bc44f495286d6e0e70a10e2a0"
    PROGRAM_REPLACED = "a485d6012108411081493886c88a45e7"
    MAP_RECREATED = "0bb6ddeabd89461c8e6c8e8be89f16db"
    OBJECT_UNCHANGED = "e628353c2b944880bc438b772bbeec86"
    OBJECT_REMOVED = "cc9eb8b8d30840c4b6186705928443d3"
    PIN_REMOVED = "f1de27cd523744119021dc3673ba7f19"
    STATE_REBUILT = "3324797b0f2b46f1a9dce2bda893ac43"
    UNPRIVILEGED_BPF = "48db9020749845369588969a8b4cf100"
    BTF_REFUSED = "ce7c55cf1c844c50aaebd606d0911ca6"
    TRUST_POLICY_OFF = "a74f5fb0b3e046a2ad5185412dee0344"
    UNTRUSTED_OBJECT_ALLOWED = "6de2155881dc4fc8914328226cc9b893"
    POLICY_NOT_APPLIED = "ae1c28369fc343c494487393281b3491"
    MEMLOCK_RAISED = "28296c4a1e574228872e18e9bef716fe"
    MEMLOCK_LOW = "c7aa03af54d34afe84bfa6fe921b592f"
    PROGRAM_ATTACHED = "0bcdb32ca7a04582a1d71236ca500208"
    ATTACHMENT_FAILED = "cf4a864877d64852ad2783068dda23d6"
    LINK_UPDATED = "78cc547be1b34654937a7bed1366f9cf"
    LINK_STALE = "821c6d536a8a4078ac64502f381d1e77"
    STRUCT_OPS_REGISTERED = "404788ec1f444b11a37619b5288a3235"
    PINS_STALE = "b9081dff4d324f9985b776b62b1d3024"


FieldValue = str | int | bytes

JOURNAL_SOCKET = "/run/systemd/journal/socket"
IDENTIFIER = "bpfloader"
VERIFIER_LOG_FIELD = "BPF_VERIFIER_LOG"


@dataclass(frozen=True)
class Event:
    """One thing that happened, with its catalog id and structured fields (journal fields)."""

    message_id: MessageId
    priority: Priority
    message: str
    fields: dict[str, FieldValue] = field(default_factory=dict)


class Reporter(Protocol):
    def emit(self, event: Event) -> None: ...


class ConsoleReporter:
    """Events on a text stream, one line each: `bpfloader: <level>: <message>`; a verifier log
    follows its event indented by `  | `, so the line naming the failure stays one line."""

    def __init__(self, stream: TextIO | None = None, min_priority: Priority = Priority.INFO):
        self.stream = stream or sys.stderr
        self.min_priority = min_priority

    def emit(self, event: Event) -> None:
        if event.priority > self.min_priority:
            return
        lines = [f"{IDENTIFIER}: {event.priority.name.lower()}: {one_line(event.message)}"]
        log = event.fields.get(VERIFIER_LOG_FIELD)
        if isinstance(log, bytes):
            text = log.decode("utf-8", errors="backslashreplace")
            lines += [f"  | {one_line(line)}" for line in text.rstrip("\n").split("\n")]
        self.stream.write("\n".join(lines) + "\n")
        self.stream.flush()


class JournalReporter:
    """Events as structured journal entries (SYSLOG_IDENTIFIER=bpfloader, MESSAGE_ID, fields).

    Field values go as they are: bytes stay bytes (a verifier log, a section name with odd
    bytes), and the journal's native protocol carries newlines and NULs intact."""

    def __init__(self, min_priority: Priority = Priority.INFO):
        from systemd import journal  # only where a journal is used

        self._send = journal.send
        self.min_priority = min_priority
        self._fallback = ConsoleReporter(min_priority=min_priority)

    def emit(self, event: Event) -> None:
        if event.priority > self.min_priority:
            return
        try:
            self._send(
                one_line(event.message),
                MESSAGE_ID=event.message_id.value,
                PRIORITY=int(event.priority),
                SYSLOG_IDENTIFIER=IDENTIFIER,
                **event.fields,
            )
        except OSError:
            self._fallback.emit(event)  # journald went away mid-run: the event is not lost


def journal_available() -> bool:
    """Whether a journald listens on its socket (a stale socket file does not count)."""
    try:
        import systemd.journal  # noqa: F401
    except ImportError:
        return False
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(JOURNAL_SOCKET)
        except OSError:
            return False
    return True


def open_reporter(target: str = "auto", min_priority: Priority = Priority.INFO) -> Reporter:
    """`journal`, `console`, or `auto`: the journal where its socket exists, else stderr."""
    if target == "journal" or (target == "auto" and journal_available()):
        return JournalReporter(min_priority)
    if target in ("console", "auto"):
        return ConsoleReporter(min_priority=min_priority)
    raise ValueError(f"unknown log target {target!r}")
