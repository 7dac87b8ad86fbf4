"""Errors carry where they happened (object file, section) and why, and print as one line."""

from __future__ import annotations

import errno as errno_mod
import os
import re
from typing import Self


class LoaderError(Exception):
    """Anything bpfloader reports: `file: section: reason`, on one line. `program` names the
    program (its function) the error is about, where it is about one: the journal says so."""

    def __init__(self, reason: str, *, file: str | None = None, section: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.file = file
        self.section = section
        self.program: str | None = None

    def where(
        self, *, file: str | None = None, section: str | None = None, program: str | None = None
    ) -> Self:
        """Fill in location fields that are still unknown; returns self for `raise e.where(...)`."""
        if self.file is None:
            self.file = file
        if self.section is None:
            self.section = section
        if self.program is None:
            self.program = program
        return self

    def __str__(self) -> str:
        file = self.file and one_line(self.file)  # a file name may hold any byte but '/' and NUL
        parts = [p for p in (file, self.section and show_name(self.section)) if p]
        parts.append(one_line(self.reason))
        return ": ".join(parts)


class ObjectFormatError(LoaderError):
    """The object file is malformed or uses something this loader does not support."""


class PlanError(LoaderError):
    """The object is well formed but cannot be loaded as declared (names, gates, collisions)."""


# Errnos of the kernel's own that reach user space from bpf(2) and that libc does not name.
ENOTSUPP = 524
_ERRNO_NAMES = {ENOTSUPP: ("ENOTSUPP", "Operation not supported")}


class KernelError(LoaderError, OSError):
    """A syscall failed: `errno` is the kernel's answer, `strerror` its text, `operation` the
    call. An OSError, as Python code expects of a failed syscall; a LoaderError, as every error
    of this package is. `reason` may say more than the errno (what the loader knows of why)."""

    errno: int  # always set: what the kernel answered
    strerror: str

    def __init__(
        self,
        operation: str,
        err: int,
        detail: str = "",
        *,
        reason: str | None = None,
        file: str | None = None,
        section: str | None = None,
    ):
        name, text = _ERRNO_NAMES.get(err) or (errno_mod.errorcode.get(err, str(err)), "")
        text = text or os.strerror(err)
        if reason is None:
            reason = f"{operation} failed: {name} ({text})" + (f": {detail}" if detail else "")
        LoaderError.__init__(self, reason, file=file, section=section)
        OSError.__init__(self, err, text)  # after: through the MRO, the other would reset errno
        self.operation = operation

    def explained(self, reason: str, *, section: str | None = None) -> Self:
        """The same failure (of the same class: operation, errno, a verifier's log) said as
        `reason`, what the loader knows of its cause; raise it `from` this one."""
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        OSError.__init__(new, self.errno, self.strerror)
        new.reason = reason
        new.section = self.section or section
        return new


class NotSupportedError(KernelError):
    """The kernel refused something it is too old to have: a map or program type, a feature.
    `need` names it and the release that brought it ("map type RINGBUF needs Linux 5.8; this
    kernel is 4.19")."""

    need: str = ""


class VerifierError(KernelError):
    """BPF_PROG_LOAD was refused. `log` is the verifier's log exactly as the kernel wrote it;
    `truncated` says it hit bpfloader's cap and is not complete."""

    def __init__(
        self,
        err: int,
        log: bytes,
        truncated: bool = False,
        *,
        reason: str | None = None,
        file: str | None = None,
        section: str | None = None,
    ):
        text = log.decode("utf-8", errors="backslashreplace")
        detail = summarize_verifier_log(text)
        if reason is None:
            reason = verifier_refusal(err, text) or None
        super().__init__("BPF_PROG_LOAD", err, detail, reason=reason, file=file, section=section)
        self.log = log
        self.truncated = truncated


def verifier_error(error: BaseException) -> VerifierError | None:
    """The verifier's refusal behind `error`: itself, or the cause it was raised from."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, VerifierError):
            return seen
        seen = seen.__cause__
    return None


class UntrustedError(LoaderError):
    """Something the loader would read or write could have been changed by someone but root: a
    file or a directory another user owns or can write, or a link another user made."""


class PinError(LoaderError):
    """A path is not a pin, or pins another kind of object than the one asked for."""


class PinOpenError(PinError, KernelError):
    """A pin the kernel would not open (BPF_OBJ_GET): an OSError whose `errno` is the kernel's
    answer, said as what is at the path (no such pin, not on a bpf filesystem) or what the
    pin's owner, group and mode allow the caller."""


class MapError(LoaderError, ValueError):
    """A map used as it is not: key or value sizes that differ from the kernel's, an operation
    its type does not have."""


class MapTypeError(LoaderError, TypeError):
    """A key or value of a Python type that the map's key or value type does not take (an int
    for a raw-bytes key), or a key or value type that is not a type (b"1234" for key=)."""


class AttachError(LoaderError):
    """A program cannot go where it was asked: a target of the wrong kind or that does not
    exist, a program of another type, a kernel without the feature."""


def one_line(text: str) -> str:
    """Collapse control characters so a message can never span lines or hide bytes."""
    if text.isprintable():  # nearly always: then there is nothing to collapse
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def show_name(name: str) -> str:
    """A name read from an object, printable: bytes outside plain ASCII shown as \\xNN.

    Names are read as latin-1 (obj/elf.py), one character per byte of the file."""
    if name.isascii() and name.isprintable():
        return name
    return "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in name)


# In a verifier log: an instruction it checked (`7: (79) r0 = *(u64 *)(r0 +0)`, then perhaps
# `  ; R0=...`, the registers after it), and the C line of the instructions that follow, which
# the kernel prints from the program's line_info (BTF): `; return *v; @ prog.c:7` (before 5.19
# without the `@ FILE:LINE`).
_INSN_LINE = re.compile(r"(\d+): \([0-9a-f]{2}\) (.*?)(?:\s+;.*)?")
_SOURCE_LINE = re.compile(r"; (.*?)(?: @ ([^ ]+:\d+))?")


def verifier_refusal(err: int, log: str) -> str:
    """BPF_PROG_LOAD's refusal said as the verifier's, where it is one: where in the C source
    it stopped (or at which instruction, for an object without BTF) and why, in its own last
    words. EACCES is the verifier's "no", not a permission; EINVAL is its answer too once it
    has looked at instructions. Other refusals (EPERM: no privilege; EINVAL before any
    instruction: a bad attribute) are said as the errno they are."""
    lines = [line.rstrip() for line in log.splitlines() if line.strip()]
    last_insn = max((i for i, line in enumerate(lines) if _INSN_LINE.fullmatch(line)), default=-1)
    if err != errno_mod.EACCES and not (err == errno_mod.EINVAL and last_insn >= 0):
        return ""
    why = [
        line.strip()
        for line in lines[last_insn + 1 :]
        if not line.startswith(("processed ", "verification time", "; "))
    ]
    because = " | ".join(why[-2:]) or summarize_verifier_log(log)
    where = ""
    if last_insn >= 0:
        insn = _INSN_LINE.fullmatch(lines[last_insn])
        assert insn is not None
        source = next(
            (m for line in reversed(lines[:last_insn]) if (m := _SOURCE_LINE.fullmatch(line))),
            None,
        )
        if source is not None and source.group(2):
            where = f" at {source.group(2)} (`{source.group(1).strip()}`)"
        elif source is not None:
            where = f" at `{source.group(1).strip()}`"
        else:
            where = f" at instruction {insn.group(1)} (`{insn.group(2)}`; no BTF: no C line)"
    return f"rejected by the verifier{where}" + (f": {because}" if because else "")


def summarize_verifier_log(log: str, lines: int = 2) -> str:
    """The last meaningful lines of a verifier log: where the kernel says why it refused."""
    meaningful = [
        line.strip()
        for line in log.splitlines()
        if line.strip() and not line.startswith(("processed ", "verification time"))
    ]
    return " | ".join(meaningful[-lines:])
