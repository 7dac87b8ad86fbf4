"""Opening a pin as the kind of object the caller expects, with errors that say what is there."""

from __future__ import annotations

import os

from bpfloader.errors import KernelError, PinError
from bpfloader.kernel import pins as kpins
from bpfloader.obj.bpftypes import PinKind


def open_pin(path: str, kind: PinKind, *, readonly: bool = False) -> int:
    """A new fd for the `kind` of object pinned at `path`."""
    try:
        fd = kpins.open_pinned(path, readonly=readonly)
    except KernelError as e:
        not_a_pin = _not_a_pin(path)
        if not_a_pin:
            raise PinError(not_a_pin, file=path) from e
        e.where(file=path)
        raise  # a pin that refused us: the errno says why
    found = kpins.pinned_kind(fd)
    if found is not kind:
        os.close(fd)
        raise PinError(f"a {found or 'BPF object'} pin, not a {kind} pin", file=path)
    return fd


def _not_a_pin(path: str) -> str | None:
    if not os.path.lexists(path):
        return "no such pin"
    if not kpins.is_bpffs(path):
        return "not a pin: it is not on a bpf filesystem"
    if os.path.isdir(path):
        return "a directory, not a pin"
    return None
