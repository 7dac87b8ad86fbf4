"""Socket filters: a SOCKET_FILTER program on one socket (SO_ATTACH_BPF, asm-generic/socket.h)."""

from __future__ import annotations

import socket

from bpfloader.errors import KernelError

SO_ATTACH_BPF = 50
SO_DETACH_BPF = 27  # the same option as SO_DETACH_FILTER


def attach_filter(sock: socket.socket, prog_fd: int) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, prog_fd)
    except OSError as e:
        raise KernelError("setsockopt SO_ATTACH_BPF", e.errno or 0) from e


def detach_filter(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_DETACH_BPF, 0)
    except OSError as e:
        raise KernelError("setsockopt SO_DETACH_BPF", e.errno or 0) from e
