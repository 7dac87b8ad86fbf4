"""Directories opened once, by fd: the loader's defence against a path that changes under it.

A local user who can write somewhere on a path the loader uses (a sticky source directory, a
hand-mounted 1777 pin root) can swap a name between two lookups of it: a check on one lookup
and an open on another then see different files. So the loader looks each path up once. It
walks from `/` one component at a time, opening each directory with `O_NOFOLLOW` relative to
the one before and checking what it opened (`fstat` of the fd, never a second lookup); every
later operation is relative to the fd it ends with (`openat`, `mkdirat`, `unlinkat`, ...).

A symbolic link on the way is followed only when root owns it and the directory holding it
passed its check: then only root could have made it or could change it (systemd's
`/var/run -> /run` is such a link; in a sticky directory only a link's owner may replace it).
Any other link ends the walk with an error. A directory is checked before anything in it is
looked up, and the last one of a walk by its own check, however the walk ends there (`..` or
a link included). `..` is the parent of the directory reached so far (as the kernel's walk).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from bpfloader.errors import UntrustedError
from bpfloader.kernel.fd import Fd

O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_LINKS = 40  # as the kernel's own walk (ELOOP beyond)

# Why a directory with this status may not be trusted (None: it may).
# Why a directory (its status, its path) is refused, and how to fix it; None: it is not.
DirectoryCheck = Callable[[os.stat_result, str], "str | None"]


class LinkRefused(UntrustedError):
    """A symbolic link a walk would have to follow that someone other than root owns."""

    def __init__(self, path: str, uid: int):
        super().__init__(
            f"{path} is a symbolic link owned by uid {uid}: only root's links are followed"
        )
        self.path = path
        self.uid = uid


def open_directory(
    path: str,
    check: DirectoryCheck | None,
    *,
    check_last: DirectoryCheck | None = None,
    make: int | None = None,
) -> tuple[Fd, str]:
    """Open the directory at `path` by a walk from `/`; its fd and the real path it was found
    at. `check` is applied to every directory on the way, `/` included, and to the last one
    unless `check_last` is given for it. With `make`, a missing last directory is made with
    that mode, in its parent as opened by the same walk (the parent must exist). Raises
    UntrustedError for a directory a check refuses or a link that may not be followed
    (LinkRefused), OSError (with the path) for one that cannot be opened or made (ELOOP beyond
    MAX_LINKS links)."""
    last = check if check_last is None else check_last
    try:
        fd, real, _ = _walk(path, check, last, strict=True)
    except FileNotFoundError:
        if make is None:
            raise
        above, name = os.path.split(os.path.abspath(path))
        parent, where = open_directory(above, check)
        with parent:
            try:
                os.mkdir(name, make, dir_fd=parent.number)
            except FileExistsError:
                pass  # made meanwhile: opened and checked as any other
            except OSError as e:
                raise OSError(e.errno, e.strerror, join(where, name)) from e
        fd, real, _ = _walk(path, check, last, strict=True)
    return fd, real


def walk_directory(
    path: str, check: DirectoryCheck, *, check_last: DirectoryCheck | None = None
) -> tuple[Fd, str, str | None]:
    """As open_directory, but a directory `check` refuses and a link that open_directory would
    not follow are walked through and noted: the fd, the real path, and the first such problem
    (`directory /x is ...`, `/x is a symbolic link owned by ...`) or None. For a directory
    whose contents are then refused for that problem (or let through, insecure) name by name,
    never read unless the caller was told to. `check_last`, when given, is the last
    directory's check instead of `check`. OSError as open_directory."""
    return _walk(path, check, check if check_last is None else check_last, strict=False)


def open_directory_at(parent: Fd, name: str, where: str) -> Fd:
    """The directory `name` in `parent`, not through a link (OSError ENOTDIR/ELOOP if one)."""
    return _open_at(parent, name, where)


def open_file_at(
    directory: Fd, where: str, name: str, flags: int, check: DirectoryCheck | None
) -> tuple[Fd, str]:
    """Open the entry `name` of `directory` (found at the real path `where`, and checked by the
    caller: only root can change its entries) with `flags` and `O_NOFOLLOW`: its fd and its
    real path. A link there is followed only when root owns it:
    its target's directory is opened by a walk from `/` (`check` on each directory), and its
    last component opened in that one the same way, link after link (MAX_LINKS at most).

    LinkRefused for a link someone else owns, UntrustedError for a directory `check` refuses,
    OSError (with the path) for anything that cannot be opened: FileNotFoundError for a name
    or a link's target that is not there, EISDIR for a link whose target ends in `/`, `.` or
    `..`."""
    if "/" in name or name in ("", ".", ".."):
        raise OSError(errno.EINVAL, f"not a file name: {name!r}", where)
    links = 0
    owned: Fd | None = None  # the directory of a link's target, opened here
    try:
        while True:
            path = join(where, name)
            try:
                return Fd(os.open(name, flags | os.O_NOFOLLOW, dir_fd=directory.number)), path
            except OSError as e:
                if e.errno != errno.ELOOP:
                    raise OSError(e.errno, e.strerror, path) from e
            links += 1
            if links > MAX_LINKS:
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
            st = _lstat_at(directory, name, path)
            if not stat.S_ISLNK(st.st_mode):
                continue  # replaced since open() met a link there: opened again, once more
            if st.st_uid != 0:
                raise LinkRefused(path, st.st_uid)
            target = os.readlink(name, dir_fd=directory.number)
            parent, name = os.path.split(target if target.startswith("/") else f"{where}/{target}")
            if name in ("", ".", ".."):
                raise OSError(errno.EISDIR, f"{path} is a link to a directory ({target})", path)
            found, where = open_directory(parent, check)
            if owned is not None:
                owned.close()
            owned = directory = found
    finally:
        if owned is not None:
            owned.close()


def _walk(
    path: str, check: DirectoryCheck | None, last_check: DirectoryCheck | None, *, strict: bool
) -> tuple[Fd, str, str | None]:
    """The walk of open_directory (`strict`) and walk_directory (not: problems are noted and
    links followed whoever owns them)."""
    pending = _parts(path if path.startswith("/") else os.path.join(os.getcwd(), path))
    links = 0
    real: list[str] = []
    noted: list[str] = []  # the problems met (not strict), the first one reported
    fds: list[Fd] = [Fd(os.open("/", O_DIR))]
    # Whether the last of `fds` was given `check`: every one below it was, before the walk
    # looked anything up in it.
    top_checked = False

    def passed(fd: Fd, which: DirectoryCheck | None, where: str) -> None:
        problem = _problem(which, fd, where)
        if problem is not None:
            if strict:
                raise UntrustedError(problem)
            noted.append(problem)

    try:
        while pending:
            name = pending.pop(0)
            if name == "..":
                if real:
                    real.pop()
                    fds.pop().close()
                    top_checked = True
                continue
            here = fds[-1]
            if not top_checked:  # before anything in it is looked up
                passed(here, check, "/" + "/".join(real))
                top_checked = True
            where = "/" + "/".join([*real, name])
            st = _lstat_at(here, name, where)
            if stat.S_ISLNK(st.st_mode):
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP), path)
                if st.st_uid != 0:
                    if strict:
                        raise LinkRefused(where, st.st_uid)
                    noted.append(str(LinkRefused(where, st.st_uid)))
                target = os.readlink(name, dir_fd=here.number)
                if target.startswith("/"):
                    for fd in fds[1:]:
                        fd.close()
                    fds, real = fds[:1], []  # `/`, checked before the first lookup
                pending = _parts(target) + pending
                continue
            fds.append(_open_at(here, name, where))
            real.append(name)
            top_checked = False
        final = fds.pop()
        try:
            passed(final, last_check, "/" + "/".join(real))
        except BaseException:
            final.close()
            raise
        return final, "/" + "/".join(real), noted[0] if noted else None
    finally:
        for fd in fds:
            fd.close()


def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part and part != "."]


def join(directory: str, name: str) -> str:
    """The path of `name` in the directory at `directory`."""
    return f"{directory.rstrip('/')}/{name}"


def _lstat_at(directory: Fd, name: str, where: str) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=directory.number, follow_symlinks=False)
    except OSError as e:
        raise OSError(e.errno, e.strerror, where) from e


def _open_at(directory: Fd, name: str, where: str) -> Fd:
    try:
        return Fd(os.open(name, O_DIR, dir_fd=directory.number))
    except OSError as e:
        raise OSError(e.errno, e.strerror, where) from e


def _problem(check: DirectoryCheck | None, fd: Fd, where: str) -> str | None:
    if check is None:
        return None
    problem = check(os.fstat(fd.number), where)
    return None if problem is None else f"directory {where} is {problem}"
