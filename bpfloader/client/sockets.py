"""Attaching a socket filter to a socket of this process."""

from __future__ import annotations

import socket

from bpfloader.client.attachment import AttachableProgram, Attachment
from bpfloader.kernel import sockets as ksockets
from bpfloader.obj.bpftypes import ProgType


def attach_socket(prog: AttachableProgram, sock: socket.socket) -> Attachment:
    """The program sees every packet the socket receives and decides how much of it to keep
    (0: drop it). It stays with the socket until close() or until the socket is closed."""
    prog.require_type("a socket", ProgType.SOCKET_FILTER)
    ksockets.attach_filter(sock, prog.fd)

    def detach() -> None:
        if sock.fileno() >= 0:  # a closed socket took its filter with it
            ksockets.detach_filter(sock)

    return Attachment(
        f"socket:{sock.fileno()}",
        undo=detach,
        unpinnable="a socket filter belongs to its socket, not to a link",
    )
