"""Structured load events, and where they go: the systemd journal, or stderr.

Every event has a fixed MESSAGE_ID per kind, a syslog priority and fields to filter on
(BPF_OBJECT, BPF_PROGRAM, BPF_MAP, BPF_PIN, BPF_PROG_ID, BPF_MAP_ID, ERRNO, BPF_VERIFIER_LOG).
In the journal each entry also says which code produced it (CODE_FILE, CODE_LINE, CODE_FUNC).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import TYPE_CHECKING, NamedTuple, Protocol, TextIO

from bpfloader.errors import LoaderError, one_line

if TYPE_CHECKING:
    from bpfloader.journal_protocol import JournalSocket


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
    OBJECT_CACHE_UNUSED = "07f538f004ad476bb42eb9f88d67ca52"


FieldValue = str | int | bytes

IDENTIFIER = "bpfloader"
VERIFIER_LOG_FIELD = "BPF_VERIFIER_LOG"


# What journald keeps of a field a client sends: an upper-case name, 64 characters at most, not
# starting with `_` (journald's own, trusted fields) or a digit. It drops any other silently.
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
# The fields every journal entry gets from its Event itself, not from its `fields`.
_ENTRY_FIELDS = frozenset(
    {
        "MESSAGE",
        "MESSAGE_ID",
        "PRIORITY",
        "SYSLOG_IDENTIFIER",
        "CODE_FILE",
        "CODE_LINE",
        "CODE_FUNC",
    }
)
_KEPT_NAMES: set[str] = set()  # field names found good (a few dozen, from loader/events.py)
# Modules that make events on others' behalf: an event's origin is the code that called them.
_EVENT_MAKERS = frozenset({__name__, "bpfloader.loader.events"})


class Origin(NamedTuple):  # a tuple, not a dataclass: one is made for every event, cheaply
    """The code that produced an event: the journal's CODE_FILE, CODE_LINE and CODE_FUNC."""

    file: str
    line: int
    function: str  # qualified: `Class.method`, `function.<locals>.inner`


def _caller_origin() -> Origin:
    """The innermost frame outside the modules that make events: for `reporter.emit(
    events.program_rejected(...))` in apply.py, that line of apply.py and its function. Taken
    when the Event is made, so an event held and emitted later (parallel.py's EventBuffer, in
    another thread) still names the code that produced it."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__") in _EVENT_MAKERS:
        frame = frame.f_back
    return Origin(frame.f_code.co_filename, frame.f_lineno, frame.f_code.co_qualname)


@dataclass(frozen=True)
class Event:
    """One thing that happened, with its catalog id and structured fields (journal fields)."""

    message_id: MessageId
    priority: Priority
    message: str
    fields: dict[str, FieldValue] = field(default_factory=dict)
    origin: Origin = field(default_factory=_caller_origin, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.fields.keys() <= _KEPT_NAMES:  # nearly always: the names of earlier events
            return
        unkept = [n for n in self.fields if n in _ENTRY_FIELDS or not _FIELD_NAME.fullmatch(n)]
        if unkept:
            raise ValueError(f"fields the journal would not keep as given: {unkept}")
        _KEPT_NAMES.update(self.fields)


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
    """Events as structured journal entries (SYSLOG_IDENTIFIER=bpfloader, MESSAGE_ID, fields),
    in journald's native protocol (journal_protocol.py).

    Field values go as they are: bytes stay bytes (a verifier log, a section name with odd
    bytes), and the native protocol carries newlines and NULs intact. Raises OSError where no
    journald listens."""

    def __init__(self, min_priority: Priority = Priority.INFO):
        from bpfloader.journal_protocol import JournalSocket  # only where a journal is used

        self._journal: JournalSocket = JournalSocket()
        self.min_priority = min_priority
        self._fallback = ConsoleReporter(min_priority=min_priority)

    def emit(self, event: Event) -> None:
        if event.priority > self.min_priority:
            return
        origin = event.origin
        entry = (
            ("MESSAGE", one_line(event.message)),
            ("MESSAGE_ID", event.message_id.value),
            ("PRIORITY", int(event.priority)),
            ("SYSLOG_IDENTIFIER", IDENTIFIER),
            ("CODE_FILE", origin.file),
            ("CODE_LINE", origin.line),
            ("CODE_FUNC", origin.function),
            *event.fields.items(),
        )
        try:
            self._journal.send(entry)
        except OSError:
            self._fallback.emit(event)  # journald went away mid-run: the event is not lost


def open_reporter(target: str = "auto", min_priority: Priority = Priority.INFO) -> Reporter:
    """`journal`, `console`, or `auto`: the journal where a journald listens on its socket,
    else stderr. `journal` where none listens is a LoaderError (one line, the CLI's exit 2)."""
    if target not in ("journal", "console", "auto"):
        raise ValueError(f"unknown log target {target!r}")
    if target != "console":
        try:
            return JournalReporter(min_priority)
        except OSError as e:
            if target == "journal":
                from bpfloader.journal_protocol import SOCKET

                raise LoaderError(
                    f"cannot reach systemd-journald: {e.strerror} (--log-target console or "
                    "auto writes events to stderr)",
                    file=SOCKET,
                ) from e
    return ConsoleReporter(min_priority=min_priority)
