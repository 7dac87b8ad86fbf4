"""Finding objects: `*.o` at the top of the source directory, then in each immediate subdirectory
(a *location*, whose name becomes a subdirectory of the pin root), all in sorted order.

The source directory is opened once, by a walk of directory fds from `/` (dirfd.py), and
everything below it is found from that fd: each location is opened by name with `O_NOFOLLOW`
and checked on its fd, and names are listed from the fds, never looked up by path. An object
is a regular file or a symbolic link named `*.o` (whether a link may be followed is decided
when it is opened: trust.py); a location is a directory, never a link. Names starting with
`..` are neither: the kubelet's atomic writer keeps them for itself. A source directory the
kubelet wrote (a ConfigMap volume: root's `..data` link in it) is read through that link, from
the version directory it names, its objects named as the volume shows them (kubelet.py).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from types import TracebackType

from bpfloader.errors import LoaderError
from bpfloader.kernel.fd import Fd
from bpfloader.loader import dirfd, kubelet
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

    def __init__(self, path: str, root: SourceDirectory, real: str):
        self.path = path  # as it was given: objects are named from it
        self.within = Confinement(os.path.abspath(path), real)  # real: where the walk found it
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
        fd, real, above = dirfd.walk_directory(
            source_dir, directory_problem, check_last=_checked_below
        )
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            raise LoaderError(
                f"source directory {source_dir} does not exist or is not a directory"
            ) from e
        raise LoaderError(f"source directory {source_dir}: cannot open: {e.strerror}") from e
    try:
        if kubelet.data_link(fd) is None:
            own = _named(real, directory_problem(os.fstat(fd.number), real))
            return _listed(source_dir, SourceDirectory(fd, real, above or own), real)
        with fd:
            return _listed_volume(source_dir, fd, real, above)
    except BaseException:
        fd.close()
        raise


def _checked_below(st: os.stat_result, path: str) -> None:
    """No check in the walk: scan checks the source directory itself, knowing what it holds."""
    return None


def _listed(source_dir: str, top: SourceDirectory, real: str) -> SourceTree:
    """The objects of `top` and of its locations; `real`: the source directory's real path."""
    tree = SourceTree(source_dir, top, real)
    try:
        tree.add("", top)
        for name in _locations_in(top):
            location = _open_location(top, name)
            if location is not None:
                tree.add(name, location)
    except BaseException:
        tree.close()
        raise
    return tree


def _listed_volume(source_dir: str, volume: Fd, real: str, above: str | None) -> SourceTree:
    """A volume the kubelet wrote, listed from the version its `..data` names (kubelet.py);
    listed as it is, every object refused, where `..data` names no version of it."""
    problem = above or _named(real, kubelet.volume_problem(volume, real))
    link = dirfd.join(real, kubelet.DATA)
    for _ in range(kubelet.TRIES):
        target = kubelet.data_link(volume)
        if target is None:
            continue  # replaced as it was read
        wrong = problem or f"{link} -> {target} names no version directory of the kubelet's volume"
        name = kubelet.version_name(target)
        if name is None:
            return _refused_whole(source_dir, volume, real, wrong)
        where = dirfd.join(real, name)
        try:
            fd = dirfd.open_directory_at(volume, name, where)
        except FileNotFoundError:
            continue  # an old version, removed by an update since `..data` was read
        except OSError as e:
            if e.errno in (errno.ENOTDIR, errno.ELOOP):  # a file, a link
                return _refused_whole(source_dir, volume, real, wrong)
            raise LoaderError(f"source directory {source_dir}: {where}: {e.strerror}") from e
        own = _named(where, directory_problem(os.fstat(fd.number), where))
        tree = _listed(source_dir, SourceDirectory(fd, where, problem or own), real)
        if kubelet.data_link(volume) == target:
            return tree  # the version `..data` still names: none of it removed
        tree.close()
    raise LoaderError(
        f"source directory {source_dir}: {link} changed {kubelet.TRIES} times while it was read"
    )


def _refused_whole(source_dir: str, volume: Fd, real: str, problem: str) -> SourceTree:
    """The volume listed as it shows itself (its visible names), every object refused."""
    return _listed(source_dir, SourceDirectory(Fd(os.dup(volume.number)), real, problem), real)


def _named(where: str, problem: str | None) -> str | None:
    return None if problem is None else f"directory {where} is {problem}"


def _objects_in(directory: SourceDirectory) -> list[str]:
    with os.scandir(directory.fd.number) as entries:
        return sorted(
            e.name
            for e in entries
            if e.name.endswith(".o")
            and not kubelet.is_writers(e.name)
            and (e.is_file(follow_symlinks=False) or e.is_symlink())
        )


def _locations_in(directory: SourceDirectory) -> list[str]:
    with os.scandir(directory.fd.number) as entries:
        return sorted(
            e.name
            for e in entries
            if e.is_dir(follow_symlinks=False) and not kubelet.is_writers(e.name)
        )


def _open_location(root: SourceDirectory, name: str) -> SourceDirectory | None:
    where = dirfd.join(root.real, name)
    try:
        fd = dirfd.open_directory_at(root.fd, name, where)
    except OSError as e:
        if e.errno in _CHANGED:
            return None
        raise LoaderError(f"location {where}: cannot open: {e.strerror}") from e
    return SourceDirectory(
        fd, where, root.problem or _named(where, directory_problem(os.fstat(fd.number), where))
    )
