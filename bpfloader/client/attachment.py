"""Attachment: a program attached somewhere, held by BPF links or by what came before them;
detaching a pinned link; and AttachableProgram, what attaching needs of a program."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from bpfloader.client.pinned import open_pin
from bpfloader.errors import AttachError, KernelError, PinError
from bpfloader.kernel import links as klinks
from bpfloader.kernel import pins as kpins
from bpfloader.obj.bpftypes import PinKind

if TYPE_CHECKING:
    from bpfloader.kernel.programs import ProgramInfo
    from bpfloader.obj.bpftypes import ProgType


class AttachableProgram(Protocol):
    """What the attach modules (cgroups, netdev, sockets, targets, tracing) use of a program:
    named here so that they need not import `Program`, which imports them to offer its
    attach_* methods. `Program` is one."""

    @property
    def fd(self) -> int: ...

    @property
    def path(self) -> str | None:
        """The pin it was opened from, named by errors."""

    @property
    def info(self) -> ProgramInfo: ...

    @property
    def type_name(self) -> str:
        """The type's name for errors, or "type N" for a type this loader does not name."""

    def require_type(self, target: str, *allowed: ProgType) -> None:
        """AttachError unless the program is of one of the `allowed` types."""


class Attachment:
    """A program attached to a target (`target` says where, as `Program.attach` takes it).

    close() detaches it, unless it was pinned: a pinned link holds the attachment after this
    process is gone, until `detach_pinned` removes the pin (or the pin is unlinked and no
    process holds the link). An attachment made without a BPF link (a socket filter, a tc
    filter, or where the kernel is too old for that kind of link) cannot be pinned.
    """

    def __init__(
        self,
        target: str,
        *,
        links: Sequence[tuple[str, int]] = (),
        owned: Sequence[int] = (),
        undo: Callable[[], None] | None = None,
        unpinnable: str = "",
    ):
        # links: (name, fd) of the BPF links holding it (names matter only when there are
        # several: one pin each); owned: other fds it keeps open (the perf events under perf
        # links); undo: detaches what no link holds; unpinnable: why it has no link.
        self.target = target
        self.links = list(links)
        self.pinned: str | None = None
        self._owned = list(owned)
        self._undo = undo
        self._unpinnable = unpinnable
        self._closed = False

    def link_ids(self) -> list[int]:
        """The kernel ids of the BPF links holding it (none for an attachment without)."""
        return [klinks.link_info(fd).id for _, fd in self.links]

    def pin(self, path: str) -> None:
        """Pin the link at `path` (on a bpffs) so the attachment outlives this process; an
        attachment held by several links (one per CPU) pins them in a new directory `path`."""
        if not self.links:
            raise AttachError(f"{self.target} cannot be pinned: {self._unpinnable}")
        try:
            if len(self.links) == 1:
                kpins.pin(self.links[0][1], path)
            else:
                _pin_all(self.links, path)
        except (KernelError, OSError) as e:
            reason = e.reason if isinstance(e, KernelError) else e.strerror or str(e)
            raise PinError(f"cannot pin {self.target} here: {reason}", file=path) from e
        self.pinned = path

    def close(self) -> None:
        """Detach, unless pinned (then only this process's hold on the links ends). Twice
        does nothing."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._undo is not None:
                self._undo()
        finally:
            for _, fd in self.links:
                os.close(fd)
            for fd in self._owned:
                os.close(fd)

    def __enter__(self) -> Attachment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Attachment {self.target}{' pinned at ' + self.pinned if self.pinned else ''}>"


def _pin_all(links: Sequence[tuple[str, int]], directory: str) -> None:
    os.mkdir(directory, 0o700)
    try:
        for name, fd in links:
            kpins.pin(fd, os.path.join(directory, name))
    except KernelError:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)
        raise


def detach_pinned(path: str) -> list[klinks.LinkInfo]:
    """Detach the link pinned at `path`, or every link pinned in the directory `path` (as
    `Attachment.pin` makes for several links), and remove the pins; what was detached.

    A link whose kind the kernel can detach on demand (cgroup, XDP) is detached even if some
    process still holds it; a perf link goes when its last holder does. A directory is
    refused unless every entry in it is a link pin."""
    paths = [path]
    if os.path.isdir(path) and kpins.is_bpffs(path):
        paths = [os.path.join(path, name) for name in sorted(os.listdir(path))]
        if not paths:
            raise PinError("an empty directory, not a link pin", file=path)
    fds: list[int] = []
    try:
        for pin_path in paths:
            fds.append(open_pin(pin_path, PinKind.LINK))
        detached = []
        for pin_path, fd in zip(paths, fds, strict=True):
            detached.append(klinks.link_info(fd))
            klinks.detach_link(fd)
            os.unlink(pin_path)
    finally:
        for fd in fds:
            os.close(fd)
    if paths != [path]:
        os.rmdir(path)
    return detached
