"""Structured load events, and where they go.

Every event has a fixed MESSAGE_ID per kind, a syslog priority and fields to filter on
(BPF_OBJECT, BPF_PROGRAM, BPF_MAP, BPF_PIN, ...). The console reporter writes them to stderr
one line each, readable and never spanning lines.
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
    """One id per kind of event (journal MESSAGE_ID)."""

    RUN_STARTED = "8a1c3d4e5f60412b9c7d8e9f0a1b2c3d"
    RUN_FINISHED = "8a1c3d4e5f60412b9c7d8e9f0a1b2c3e"
    OBJECT_LOADED = "2f6b1e0c9a8d47e3b5c4d3e2f1a0b9c8"
    OBJECT_SKIPPED = "2f6b1e0c9a8d47e3b5c4d3e2f1a0b9c9"
    OBJECT_FAILED = "2f6b1e0c9a8d47e3b5c4d3e2f1a0b9ca"
    MAP_CREATED = "5d0e9c8b7a6f45e4a3b2c1d0e9f8a7b6"
    MAP_REUSED = "5d0e9c8b7a6f45e4a3b2c1d0e9f8a7b7"
    MAP_SKIPPED = "5d0e9c8b7a6f45e4a3b2c1d0e9f8a7b8"
    PROGRAM_LOADED = "c3b2a1f0e9d84c7b8a695847362514f3"
    PROGRAM_REUSED = "c3b2a1f0e9d84c7b8a695847362514f4"
    PROGRAM_SKIPPED = "c3b2a1f0e9d84c7b8a695847362514f5"
    PROGRAM_REJECTED = "c3b2a1f0e9d84c7b8a695847362514f6"
    PIN_MADE = "e7f6d5c4b3a24918a7b6c5d4e3f2a1b0"
    PIN_ROOT_OPENED = "e7f6d5c4b3a24918a7b6c5d4e3f2a1b1"


@dataclass(frozen=True)
class Event:
    message_id: MessageId
    priority: Priority
    message: str
    fields: dict[str, str | int] = field(default_factory=dict)


class Reporter(Protocol):
    def emit(self, event: Event) -> None: ...


class ConsoleReporter:
    """Events on a text stream, one line each: `bpfloader: <level>: <message>`."""

    def __init__(self, stream: TextIO | None = None, min_priority: Priority = Priority.INFO):
        self.stream = stream or sys.stderr
        self.min_priority = min_priority

    def emit(self, event: Event) -> None:
        if event.priority > self.min_priority:
            return
        level = event.priority.name.lower()
        self.stream.write(f"bpfloader: {level}: {one_line(event.message)}\n")
        self.stream.flush()


class CollectingReporter:
    """Keeps events in memory (the summary and tests read them)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


class Fanout:
    def __init__(self, *reporters: Reporter):
        self.reporters = reporters

    def emit(self, event: Event) -> None:
        for reporter in self.reporters:
            reporter.emit(event)
