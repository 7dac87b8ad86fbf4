"""systemd-journald's native protocol, spoken directly (systemd.io/JOURNAL_NATIVE_PROTOCOL).

One entry is one datagram to journald's AF_UNIX/SOCK_DGRAM socket. Each field is `KEY=value\\n`,
or, where the value holds a newline or is bytes (binary), `KEY\\n`, the value's length as a
64-bit little-endian integer, the value, `\\n`. An entry larger than one datagram can be
(sendmsg fails with EMSGSIZE, or ENOBUFS) goes in a sealed memfd instead, passed with SCM_RIGHTS
in an otherwise empty datagram; journald reads the same format from it. This is what
libsystemd's sd_journal_sendv does: speaking it here spares the boot path a compiled binding
(systemd-python) that a plain `pip install` lacks.

The socket stays unconnected, each entry addressed to the path: a journald that restarts
without socket activation is reached again at its new socket. It is `_socket`'s, the C module
under `socket`: the same calls, without the 2 to 4 ms that importing `socket` (building its
enums) costs at each boot.
"""

from __future__ import annotations

import errno
import fcntl
import os
import sys
import weakref
from _socket import AF_UNIX, SCM_RIGHTS, SOCK_DGRAM, SOL_SOCKET, socket
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bpfloader.journal import FieldValue

SOCKET = "/run/systemd/journal/socket"
MEMFD_NAME = "bpfloader-journal"  # what the memfd is called in /proc/PID/fd (and in strace)

# journald refuses a memfd whose contents could still change under it.
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
_TOO_LARGE = (errno.EMSGSIZE, errno.ENOBUFS)


def serialize(fields: Iterable[tuple[str, FieldValue]]) -> list[bytes]:
    """One entry's fields in the native format, as the buffers to send one after the other
    (a long value is not copied into one). Text is UTF-8 (a name decoded from the file system
    gets its original bytes back); bytes go as they are, length-prefixed.

    The text fields are joined and encoded at once, the length-prefixed ones follow: journald
    takes fields in any order, and this is half the cost of encoding field by field."""
    text: list[str] = []
    buffers = [b""]  # the text fields' place
    for name, value in fields:
        if isinstance(value, bytes):
            data = value
        elif "\n" in (line := str(value)):
            data = line.encode("utf-8", "surrogateescape")
        else:
            text.append(f"{name}={line}\n")
            continue
        buffers += (name.encode(), b"\n", len(data).to_bytes(8, "little"), data, b"\n")
    buffers[0] = "".join(text).encode("utf-8", "surrogateescape")
    return buffers


class JournalSocket:
    """The way to journald: entries sent one per datagram, or by memfd when too large."""

    def __init__(self) -> None:
        """Raises OSError where no journald listens: no socket file (ENOENT), or one that no
        process holds any more (ECONNREFUSED)."""
        probe = socket(AF_UNIX, SOCK_DGRAM)
        try:
            probe.connect(SOCKET)
        finally:
            probe.close()
        self._socket = socket(AF_UNIX, SOCK_DGRAM)
        # Closed when its reporter goes (a test's), or at exit: never left to warn as unclosed.
        weakref.finalize(self, self._socket.close)

    def send(self, fields: Iterable[tuple[str, FieldValue]]) -> None:
        """One entry; OSError where journald cannot be reached (any more)."""
        entry = serialize(fields)
        try:
            self._socket.sendmsg(entry, [], 0, SOCKET)
        except OSError as e:
            if e.errno not in _TOO_LARGE:
                raise
            self._send_by_memfd(entry)

    def _send_by_memfd(self, entry: list[bytes]) -> None:
        fd = os.memfd_create(MEMFD_NAME, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            for buffer in entry:
                rest = memoryview(buffer)
                while rest:
                    rest = rest[os.write(fd, rest) :]
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
            rights = (SOL_SOCKET, SCM_RIGHTS, fd.to_bytes(4, sys.byteorder))
            self._socket.sendmsg([], [rights], 0, SOCKET)
        finally:
            os.close(fd)  # the datagram in flight holds the memfd until journald takes it
