"""The pin root's files: every file operation the loader makes under it is here (its checks and
take-over, the staging directory, pin directories, opening, publishing and removing pins).

The pin root may be a bpffs that other users can write to (`mount -t bpf bpf DIR` makes it
1777), and bpffs holds directories and symbolic links as well as pins. A path looked up twice
could then lead somewhere else the second time. So the pin root is opened once, by a walk of
directory fds (dirfd.py), and every operation below it goes through directory fds opened with
`O_NOFOLLOW` from it: `mkdirat`, `fchmod`, `renameat2`, `unlinkat`, and pins opened as the
inode found (`/proc/self/fd/N`), never a path the kernel would resolve again.

What the loader trusts there (the README's threat model):
- the pin root is taken over: root's and writable by no one else (a hand-mounted 1777 root
  becomes 1755), and traversable (systemd's 0700 mount, which bpffs makes 1700, becomes
  1711), unless `--insecure-shared-pin-root` says to leave it shared;
- a directory it did not make must be root's and writable by no one else, else the object
  that would pin there fails;
- a link is never followed, and nothing is opened, replaced or removed through one;
- `bpfloader_staging`, its private staging directory, is root's, mode 0700: anything else
  found under that name is removed.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from bpfloader.errors import KernelError, LoaderError, PinError
from bpfloader.journal import Reporter
from bpfloader.kernel import pins as kpins
from bpfloader.kernel.fd import Fd
from bpfloader.loader import dirfd, events
from bpfloader.loader.naming import STAGING_DIR
from bpfloader.loader.trust import directory_problem, root_only_problem
from bpfloader.obj.bpftypes import STRUCT_OPS_TARGET, PinKind
from bpfloader.obj.ownership import Ownership

if TYPE_CHECKING:
    from bpfloader.loader.state import LoaderState

OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH
MAX_TREE_DEPTH = 64  # a foreign tree under the staging name deeper than this is not removed


class PinRoot:
    """The pin root, open for one run. `path` is how pins are named (absolute)."""

    def __init__(self, path: str, fd: Fd):
        self.path = path
        self.fd = fd
        self.staging: Fd | None = None
        self._staged_count = itertools.count(1)  # next() on it is atomic: threads share it
        # Directories open for lookups (entry, is_pin: a reload asks of every recorded pin),
        # so that a lookup costs one fstatat and not a walk; threads share them.
        self._looked_in: dict[tuple[str, ...], Fd] = {}
        self._looking = threading.Lock()

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str, reporter: Reporter, *, shared: bool = False) -> PinRoot:
        """Open the pin root, take it over (or with `shared`, leave others' write access as it
        is, said loudly), make it traversable, and make an empty private staging dir."""
        root = cls.open_existing(path)
        try:
            root._take_over(reporter, shared)
            root._open_staging()
        except BaseException:
            root.close()
            raise
        return root

    @classmethod
    def open_existing(cls, path: str) -> PinRoot:
        """The pin root as it is, for unload and status: checked to be a bpffs reached through
        trusted directories, and otherwise not changed."""
        path = os.path.abspath(path)
        try:
            fd, _ = dirfd.open_directory(path, directory_problem, check_last=_any_directory)
        except FileNotFoundError as e:
            raise LoaderError(
                f"pin root {path} does not exist (make it and mount a bpffs there: "
                f"{_mount(path, make=True)})"
            ) from e
        except OSError as e:
            raise LoaderError(f"cannot open pin root {path}: {e.strerror}") from e
        except LoaderError as e:
            raise LoaderError(f"pin root {path}: {e.reason}") from e
        if not kpins.is_bpffs(kpins.fd_path(fd.number)):
            fd.close()
            raise LoaderError(f"pin root {path} is not a bpf filesystem (mount it: {_mount(path)})")
        return cls(path, fd)

    def _take_over(self, reporter: Reporter, shared: bool) -> None:
        st = os.fstat(self.fd.number)
        before = stat.S_IMODE(st.st_mode)
        after = before | 0o111  # systemd mounts /sys/fs/bpf 0700: no one could reach the pins
        unsafe = root_only_problem(st, self.path) is not None
        if unsafe and shared:
            reporter.emit(events.pin_root_shared(self.path, before, st.st_uid))
        elif unsafe:
            after &= ~OTHERS_WRITE
            try:
                if st.st_uid != 0 or st.st_gid != 0:
                    os.fchown(self.fd.number, 0, 0)
                os.fchmod(self.fd.number, after)
            except OSError as e:
                raise LoaderError(
                    f"pin root {self.path} is writable by others (mode {before:04o}, owner uid "
                    f"{st.st_uid}) and cannot be taken over: {e.strerror}"
                ) from e
            reporter.emit(events.pin_root_taken_over(self.path, before, after, st.st_uid))
            return
        if after != before:
            try:
                os.fchmod(self.fd.number, after)
            except OSError as e:
                raise LoaderError(
                    f"cannot make pin root {self.path} traversable: {e.strerror}"
                ) from e
            reporter.emit(events.pin_root_opened(self.path, before, after))

    def _open_staging(self) -> None:
        """An empty directory, mode 0700 and root's, on the pin root's bpffs: where pins are
        made before they are renamed into place (a rename cannot cross file systems, and a pin
        must get its owner and mode before any other process can see it)."""
        root = self.fd.number
        try:
            os.mkdir(STAGING_DIR, 0o700, dir_fd=root)
            leftover = False
        except FileExistsError:
            leftover = True
            st = os.stat(STAGING_DIR, dir_fd=root, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0:
                # Not the loader's: the name is reserved, whatever is there goes.
                _remove_entry(self.fd, STAGING_DIR, st, self._staging_path())
                os.mkdir(STAGING_DIR, 0o700, dir_fd=root)
                leftover = False
        staging = dirfd.open_directory_at(self.fd, STAGING_DIR, self._staging_path())
        st = os.fstat(staging.number)
        if st.st_dev != os.fstat(root).st_dev:
            staging.close()
            raise LoaderError(f"{self._staging_path()} is not on the pin root's bpf filesystem")
        os.fchmod(staging.number, 0o700)
        self.staging = staging
        if leftover:
            _remove_contents(staging, self._staging_path())  # what an interrupted run left

    def _staging_path(self) -> str:
        return os.path.join(self.path, STAGING_DIR)

    def close(self) -> None:
        """Remove the (empty) staging directory and close the fds."""
        if self.staging is not None:
            self.staging.close()
            self.staging = None
            with contextlib.suppress(OSError):
                os.rmdir(STAGING_DIR, dir_fd=self.fd.number)
        for fd in self._looked_in.values():
            fd.close()
        self._looked_in.clear()
        self.fd.close()

    def __enter__(self) -> PinRoot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- walking ---------------------------------------------------------------------------

    def _parts(self, path: str) -> list[str]:
        """The components of `path` below the pin root (pin paths are made as ROOT/a/b, never
        with `.` or `..`: anything else is refused rather than resolved)."""
        if path == self.path:
            return []
        parts = path[len(self.path) + 1 :].split("/")
        if not path.startswith(self.path + "/") or any(p in ("", ".", "..") for p in parts):
            raise LoaderError(f"{path} is not a path below the pin root {self.path}")
        return parts

    def _directory(self, parts: list[str], *, make: int | None = None) -> tuple[Fd, list[str]]:
        """The directory `parts` below the pin root, opened by fds; with `make` (a mode), the
        missing ones are made. Its fd and the paths made, outermost first. FileNotFoundError
        when one is missing and `make` is None."""
        current = Fd(os.open(".", dirfd.O_DIR, dir_fd=self.fd.number))
        made: list[str] = []
        where = self.path
        try:
            for name in parts:
                where = os.path.join(where, name)
                child = self._child(current, name, where, make)
                if child is None:
                    made.append(where)
                    child = self._made(current, name, where, make or 0)
                current.close()
                current = child
        except BaseException:
            current.close()
            self.remove_dirs(reversed(made))
            raise
        return current, made

    def _made(self, parent: Fd, name: str, where: str, mode: int) -> Fd:
        """The directory just made, opened and given exactly `mode` (whatever the umask) once
        it is seen to be the one made (root's, closed to everyone else)."""
        try:
            child = Fd(os.open(name, dirfd.O_DIR, dir_fd=parent.number))
        except OSError as e:
            raise _not_a_directory(where, e, parent, name) from e
        st = os.fstat(child.number)
        if st.st_uid != 0 or st.st_mode & 0o077:
            child.close()
            raise PinError(f"directory {where} was replaced while the loader made it")
        os.fchmod(child.number, mode)
        return child

    def _child(self, parent: Fd, name: str, where: str, make: int | None) -> Fd | None:
        """The existing directory `name` in `parent`, checked; None when `make` is given and it
        was missing and has just been made (empty, 0700: not yet `make`'s mode)."""
        try:
            child = Fd(os.open(name, dirfd.O_DIR, dir_fd=parent.number))
        except FileNotFoundError:
            if make is None:
                raise
            try:
                os.mkdir(name, 0o700, dir_fd=parent.number)
                return None
            except FileExistsError:  # made meanwhile by someone else: checked below
                return self._child(parent, name, where, None)
        except OSError as e:
            raise _not_a_directory(where, e, parent, name) from e
        problem = root_only_problem(os.fstat(child.number), where)
        if problem is not None:
            child.close()
            raise PinError(
                f"directory {where} is {problem}: a directory in the pin root that the loader"
                " did not make must be root's and writable by no one else"
            )
        return child

    @contextlib.contextmanager
    def parent_of(self, path: str) -> Iterator[tuple[Fd, str]]:
        """The directory holding `path`, open, and the entry's name in it."""
        parts = self._parts(path)
        if not parts:
            raise LoaderError(f"{path} is the pin root itself, not a pin")
        directory, _ = self._directory(parts[:-1])
        with directory:
            yield directory, parts[-1]

    def entry(self, path: str) -> os.stat_result | None:
        """What is at `path` (a link not followed), or None when nothing is."""
        try:
            parts = self._parts(path)
            directory = self._lookup_directory(tuple(parts[:-1]))
            return os.stat(parts[-1], dir_fd=directory.number, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError, IndexError):
            return None
        except LoaderError:
            return None  # a directory the loader would refuse: no pin of its is there for it

    def _lookup_directory(self, parts: tuple[str, ...]) -> Fd:
        """The directory `parts`, opened (and checked) once for lookups. One that was removed
        since (no links left: a run's roll back or removal) is opened again."""
        if not parts:
            return self.fd
        with self._looking:
            fd = self._looked_in.get(parts)
            if fd is not None and os.fstat(fd.number).st_nlink > 0:
                return fd
            if fd is not None:
                fd.close()
            fd, _ = self._directory(list(parts))
            self._looked_in[parts] = fd
            return fd

    def is_pin(self, path: str) -> bool:
        """Something is at `path` and it is not a directory: a directory that took a pin's place
        is not that pin (never kept as it, claimed by a rebuild, or removed)."""
        st = self.entry(path)
        return st is not None and not stat.S_ISDIR(st.st_mode)

    def owner_of(self, path: str) -> Ownership:
        """The owner, group and mode of what is at `path` (not followed if a link)."""
        st = self.entry(path)
        if st is None:
            raise PinError(f"{path} vanished while the object was loading")
        return Ownership(uid=st.st_uid, gid=st.st_gid, mode=stat.S_IMODE(st.st_mode))

    # -- pins ------------------------------------------------------------------------------

    def open_pin(self, path: str, kind: PinKind) -> Fd | None:
        """The object pinned at `path`, which must be of `kind`; None if none. Never through a
        link (a link is an error: the loader never follows links in the pin root)."""
        try:
            with self.parent_of(path) as (directory, name):
                fd = Fd(kpins.open_pinned_at(directory.number, name))
        except FileNotFoundError:
            return None
        except KernelError as e:
            if e.errno == errno.ENOENT:
                return None
            if e.errno == errno.ELOOP:
                raise PinError(
                    f"{path} is a symbolic link: the loader never follows links in the pin root"
                ) from e
            if e.errno == errno.EISDIR:
                raise PinError(f"{path} is a directory, not a pinned {kind}") from e
            raise e.explained(f"cannot open existing pin {path}: {e.reason}") from e
        found = kpins.pinned_kind(fd.number)
        if found is not kind:
            fd.close()
            raise PinError(f"pin {path} holds a BPF {found or 'object'}, not a {kind}")
        return fd

    def stage(self, fd: Fd, owner: Ownership) -> str:
        """Pin `fd` in the staging directory with its owner and mode; its name there."""
        assert self.staging is not None
        name = f"pin_{os.getpid()}_{next(self._staged_count)}"
        kpins.pin_at(fd.number, self.staging.number, name)
        try:
            kpins.set_owner_at(self.staging.number, name, owner.uid, owner.gid, owner.mode)
        except BaseException:
            self.unstage(name)
            raise
        return name

    def publish(self, staged: str, final: str, *, replaces: bool, dir_mode: int) -> list[str]:
        """Rename a staged pin to `final` (RENAME_NOREPLACE), or with `replaces` swap it with the
        pin there (RENAME_EXCHANGE: the replaced one is then at `staged`), making the missing
        directories with `dir_mode`. The directories made, outermost first."""
        assert self.staging is not None
        parts = self._parts(final)
        directory, made = self._directory(parts[:-1], make=dir_mode)
        with directory:
            try:
                if replaces:
                    kpins.exchange(self.staging.number, staged, directory.number, parts[-1])
                else:
                    kpins.publish(self.staging.number, staged, directory.number, parts[-1])
            except KernelError as e:
                self.remove_dirs(reversed(made))
                if e.errno == errno.EEXIST:
                    raise e.explained(f"{final} appeared while the object was loading") from e
                if e.errno == errno.ENOENT and replaces:
                    raise e.explained(f"{final} vanished while the object was loading") from e
                raise
        return made

    def take_back(self, staged: str, final: str) -> None:
        """Undo an exchange: the replaced pin (at `staged`) goes back to `final`."""
        assert self.staging is not None
        with self.parent_of(final) as (directory, name):
            kpins.exchange(self.staging.number, staged, directory.number, name)

    def unstage(self, staged: str) -> None:
        """Remove a pin from the staging directory; gone already is fine."""
        assert self.staging is not None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staged, dir_fd=self.staging.number)

    def remove_pin(self, path: str) -> None:
        """Unlink the pin at `path` (never through a link); gone already is fine."""
        with contextlib.suppress(FileNotFoundError), self.parent_of(path) as (directory, name):
            os.unlink(name, dir_fd=directory.number)

    def remove_dirs(self, paths: Iterable[str]) -> None:
        """Remove directories a failed object made, each only if nothing else lives there now."""
        for path in paths:
            # Not empty (others' pins live there now), or gone: left.
            with contextlib.suppress(OSError, LoaderError), self.parent_of(path) as (parent, name):
                os.rmdir(name, dir_fd=parent.number)

    def remove_pins(
        self,
        previous: LoaderState,
        state: LoaderState,
        reporter: Reporter,
        expected: dict[str, set[int]] | None = None,
    ) -> list[str]:
        """Unlink the pins `previous` records and `state` no longer does, each only while it is
        still the kernel object recorded (`expected` adds the ids a killed run was publishing
        there): a pin another process put in its place is left and reported."""
        owners = {pin.path: obj.path for obj in previous.objects.values() for pin in obj.pins}
        registered = {
            pin.path
            for obj in previous.objects.values()
            for pin in obj.pins
            if pin.kind is PinKind.MAP and pin.target.startswith(STRUCT_OPS_TARGET)
        }
        ids: dict[str, set[int]] = {}
        for obj in previous.objects.values():
            for pin in obj.pins:
                if pin.kernel_id:  # 0: not known (a state rebuilt from the pins)
                    ids.setdefault(pin.path, set()).add(pin.kernel_id)
        for path, more in (expected or {}).items():
            ids.setdefault(path, set()).update(more)
        removed = []
        for path in sorted(previous.pin_paths() - state.pin_paths()):
            problem = self._not_recorded(path, ids.get(path, set()))
            if problem is None:  # gone already (a run killed after unlinking it)
                self._remove_empty_dirs(os.path.dirname(path))
                continue
            if problem:
                reporter.emit(events.pin_not_removed(path, problem))
                continue
            if path in registered:
                self._unregister(path)
            self.remove_pin(path)
            removed.append(path)
            reporter.emit(events.pin_removed(path, owners[path]))
            self._remove_empty_dirs(os.path.dirname(path))
        for path in sorted(set(previous.objects) - set(state.objects)):
            reporter.emit(events.object_removed(path))
        return removed

    def _unregister(self, path: str) -> None:
        """Unregister the struct_ops map pinned at `path` where its value registered it (a
        `.struct_ops` map: it holds itself registered, pinned or not, until then); one a link
        registers goes with its link's pin."""
        from bpfloader.kernel import maps as kmaps
        from bpfloader.obj.bpftypes import BPF_F_LINK, MapType
        from bpfloader.obj.struct_ops import KEY_SIZE

        with (
            self.parent_of(path) as (directory, name),
            Fd(kpins.open_pinned_at(directory.number, name)) as fd,
        ):
            info = kmaps.map_info(fd.number)
            if info.type == MapType.STRUCT_OPS and not info.flags & BPF_F_LINK:
                with contextlib.suppress(KernelError):  # not registered (any more)
                    kmaps.delete(fd.number, bytes(KEY_SIZE))

    def _not_recorded(self, path: str, ids: set[int]) -> str | None:
        """Why the entry at `path` is not the pin a state recorded ('' when it is; None when
        nothing is there). Recorded without an id (a state rebuilt from the pins): any pin."""
        try:
            with self.parent_of(path) as (directory, name):
                st = os.stat(name, dir_fd=directory.number, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    return "it is a symbolic link now (the loader never follows links there)"
                if stat.S_ISDIR(st.st_mode):
                    return "it is a directory now, not the pin recorded"
                if not ids:
                    return ""
                with Fd(kpins.open_pinned_at(directory.number, name)) as fd:
                    found = kpins.object_id(fd.number)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except LoaderError as e:
            return e.reason
        if found not in ids:
            recorded = ", ".join(map(str, sorted(ids)))
            return f"it holds another object now (id {found}, recorded {recorded}), left in place"
        return ""

    def _remove_empty_dirs(self, directory: str) -> None:
        while directory.startswith(self.path + "/"):
            try:
                with self.parent_of(directory) as (parent, name):
                    os.rmdir(name, dir_fd=parent.number)
            except (OSError, LoaderError):
                return  # not empty: something else lives there
            directory = os.path.dirname(directory)


def _any_directory(st: os.stat_result, path: str) -> str | None:
    """The pin root itself is checked (and taken over) by PinRoot, not by the walk."""
    return None


def _mount(path: str, *, make: bool = False) -> str:
    """The commands that mount a bpffs at `path` (and, with `make`, make the directory)."""
    import shlex  # only to say what to do

    where = shlex.quote(path)
    return (f"mkdir -p {where} && " if make else "") + f"mount -t bpf -o mode=0700 bpf {where}"


def _not_a_directory(where: str, e: OSError, parent: Fd, name: str) -> LoaderError:
    """The error of a pin directory that could not be opened (O_NOFOLLOW: a link is ENOTDIR)."""
    if e.errno in (errno.ELOOP, errno.ENOTDIR):
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.stat(name, dir_fd=parent.number, follow_symlinks=False).st_mode):
                return PinError(
                    f"{where} is a symbolic link: the loader never follows links in the pin root"
                )
        return PinError(f"{where} is in the way of a pin directory: not a directory")
    error = LoaderError(f"{e.strerror}: {where}")
    error.__cause__ = e
    return error


def _remove_entry(parent: Fd, name: str, st: os.stat_result, where: str) -> None:
    """Remove what is at `name` in `parent`: unlinked, or a directory tree removed by fds."""
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent.number)
        return
    with dirfd.open_directory_at(parent, name, where) as directory:
        _remove_contents(directory, where)
    os.rmdir(name, dir_fd=parent.number)


def _remove_contents(directory: Fd, where: str, depth: int = 0) -> None:
    """Empty a directory by fds, never following a link; refuses a tree deeper than
    MAX_TREE_DEPTH (only another user could have built one there)."""
    if depth > MAX_TREE_DEPTH:
        raise LoaderError(f"{where} is more than {MAX_TREE_DEPTH} directories deep: not removed")
    for name in os.listdir(directory.number):
        st = os.stat(name, dir_fd=directory.number, follow_symlinks=False)
        if stat.S_ISDIR(st.st_mode):
            child_where = os.path.join(where, name)
            with dirfd.open_directory_at(directory, name, child_where) as child:
                _remove_contents(child, child_where, depth + 1)
            os.rmdir(name, dir_fd=directory.number)
        else:
            os.unlink(name, dir_fd=directory.number)
