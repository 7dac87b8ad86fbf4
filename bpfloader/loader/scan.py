"""Finding objects: `*.o` at the top of the source directory, then in each immediate subdirectory
(a *location*, whose name becomes a subdirectory of the pin root), all in sorted order.

The source directory is opened once, by a walk of directory fds from `/` (dirfd.py), and
everything below it is found from that fd: each location is opened by name with `O_NOFOLLOW`
and checked on its fd, and names are listed from the fds, never looked up by path. An object
is a regular file or a symbolic link named `*.o` (whether a link may be followed is decided
when it is opened: trust.py); a location is a directory, never a link.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from types import TracebackType

from bpfloader.errors import LoaderError
from bpfloader.loader import dirfd
from bpfloader.loader.plan import SourceObject
from bpfloader.loader.trust import Confinement, SourceDirectory, directory_problem

# A location that is gone, or is no directory now, when it is opened: it changed since it was
# listed (only its owner could change it), and it is not a location.
_CHANGED = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)


class SourceTree:
    """The source directory opened, with its locations, and the objects found in them, in
    order: iterating gives them, `len` counts them. It holds the fds every object is opened
    through (`directory()`); plan_sources closes them after its last object, `close()` (or
    `with`) for a tree not given to it."""

    def __init__(self, path: str, root: SourceDirectory):
        self.path = path  # as it was given: objects are named from it
        self.within = Confinement(os.path.abspath(path), root.real)
        self._directories = {"": root}
        self.objects: list[SourceObject] = []

    def directory(self, location: str) -> SourceDirectory:
        """The directory the objects of `location` ('' at the top) are in."""
        return self._directories[location]

    def __iter__(self) -> Iterator[SourceObject]:
        return iter(self.objects)

    def __len__(self) -> int:
        return len(self.objects)

    def close(self) -> None:
        for directory in self._directories.values():
            directory.fd.close()

    def __enter__(self) -> SourceTree:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def add(self, location: str, directory: SourceDirectory) -> None:
        """Its objects found in `directory`, the location `location`."""
        self._directories[location] = directory
        base = os.path.join(self.path, location) if location else self.path
        self.objects += [
            SourceObject(os.path.join(base, name), location) for name in _objects_in(directory)
        ]


def scan(source_dir: str) -> SourceTree:
    """The source directory's objects, each location opened and checked. A directory that is
    not trusted is still listed: its objects are refused one by one (or let through, insecure)."""
    try:
        fd, real, problem = dirfd.walk_directory(source_dir, directory_problem)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise LoaderError(
                f"source directory {source_dir} does not exist or is not a directory"
            ) from e
        raise LoaderError(f"source directory {source_dir}: cannot open: {e.strerror}") from e
    root = SourceDirectory(fd, real, problem)
    tree = SourceTree(source_dir, root)
    try:
        tree.add("", root)
        for name in _locations_in(root):
            location = _open_location(root, name)
            if location is not None:
                tree.add(name, location)
    except BaseException:
        tree.close()
        raise
    return tree


def _objects_in(directory: SourceDirectory) -> list[str]:
    with os.scandir(directory.fd.number) as entries:
        return sorted(
            e.name
            for e in entries
            if e.name.endswith(".o") and (e.is_file(follow_symlinks=False) or e.is_symlink())
        )


def _locations_in(directory: SourceDirectory) -> list[str]:
    with os.scandir(directory.fd.number) as entries:
        return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))


def _open_location(root: SourceDirectory, name: str) -> SourceDirectory | None:
    where = dirfd.join(root.real, name)
    try:
        fd = dirfd.open_directory_at(root.fd, name, where)
    except OSError as e:
        if e.errno in _CHANGED:
            return None
        raise LoaderError(f"location {where}: cannot open: {e.strerror}") from e
    problem = directory_problem(os.fstat(fd.number), where)
    if problem is not None:
        problem = f"directory {where} is {problem}"
    return SourceDirectory(fd, where, root.problem or problem)
