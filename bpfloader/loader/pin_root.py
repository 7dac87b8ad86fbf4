"""The pin root's files: every file operation the loader makes under it is here (making pin
directories, removing pins and the directories they leave empty, the staging directory).

The pin root is bpffs, and bpffs holds symbolic links as well as pins: a link left in it
(by a mistake or by a process that could write there) must not send the loader somewhere
else, where it would open, replace or unlink an object it never made. Every path the loader
touches under the pin root is therefore walked component by component with lstat first, and
the staging directory is checked to be a plain directory on the pin root's own bpffs.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bpfloader.errors import LoaderError, PinError
from bpfloader.journal import Reporter
from bpfloader.kernel import pins as kpins
from bpfloader.loader import events
from bpfloader.obj.ownership import Ownership

if TYPE_CHECKING:
    from bpfloader.loader.state import LoaderState

STAGING_DIR = "bpfloader_staging"


def symlink_on_path(pin_root: str, path: str) -> str | None:
    """The first symbolic link among the components of `path` below `pin_root`, or None.

    Components that do not exist yet end the walk: nothing below them can be a link."""
    relative = os.path.relpath(path, pin_root)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        raise LoaderError(f"{path} is outside the pin root {pin_root}")
    current = pin_root
    for part in relative.split(os.sep):
        if part == os.curdir:
            continue
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(st.st_mode):
            return current
    return None


def refuse_symlinks(pin_root: str, path: str) -> None:
    link = symlink_on_path(pin_root, path)
    if link is not None:
        raise PinError(f"{link} is a symbolic link: the loader never follows links in the pin root")


def open_pin_root(pin_root: str, reporter: Reporter) -> str:
    """Check the pin root, make it traversable, and set up an empty private staging dir
    (its path is returned; close_staging removes it after the run)."""
    if not kpins.is_bpffs(pin_root):
        raise LoaderError(
            f"pin root {pin_root} is not a bpf filesystem (mount it: mount -t bpf bpf {pin_root})"
        )
    mode = stat.S_IMODE(os.stat(pin_root).st_mode)
    if mode & 0o111 != 0o111:
        # systemd mounts /sys/fs/bpf 0700: no one but root could reach the pins in it.
        try:
            os.chmod(pin_root, mode | 0o111)
        except OSError as e:
            raise LoaderError(f"cannot make pin root {pin_root} traversable: {e.strerror}") from e
        reporter.emit(events.pin_root_opened(pin_root, mode, mode | 0o111))
    return prepare_staging(pin_root)


def close_staging(staging: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(staging)


def prepare_staging(pin_root: str) -> str:
    """An empty directory, mode 0700 and owned by us, on the pin root's bpffs: where pins are
    made before they are renamed into place (a rename cannot cross file systems, and a pin
    must get its owner and mode before any other process can see it)."""
    staging = os.path.join(pin_root, STAGING_DIR)
    try:
        os.mkdir(staging, 0o700)
        leftover = False
    except FileExistsError:
        leftover = True
    st = os.lstat(staging)
    if not stat.S_ISDIR(st.st_mode):
        raise LoaderError(f"{staging} exists and is not a directory")
    if st.st_dev != os.stat(pin_root).st_dev:
        raise LoaderError(f"{staging} is not on the pin root's bpf filesystem (a mount over it?)")
    # Ours and private before anything in it is trusted: its owner could otherwise keep
    # adding entries (or open it up again) while it is being cleaned.
    os.chown(staging, os.geteuid(), os.getegid(), follow_symlinks=False)
    os.chmod(staging, 0o700, follow_symlinks=False)
    if leftover:
        _remove_contents(staging)
    return staging


def _remove_contents(staging: str) -> None:
    """Remove what an interrupted run left staged."""
    import shutil  # only after an interrupted run

    with os.scandir(staging) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)  # never follows links inside
            else:
                os.unlink(entry.path)


# -- pins and pin directories -----------------------------------------------------------------


def owner_of(path: str) -> Ownership:
    """The owner, group and mode of what is at `path` (not followed if a link)."""
    st = os.lstat(path)
    return Ownership(uid=st.st_uid, gid=st.st_gid, mode=stat.S_IMODE(st.st_mode))


def is_directory(path: str) -> bool:
    """Whether a directory (not a link to one) is at `path`."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def make_dirs(pin_root: str, directory: str, mode: int) -> list[str]:
    """Make `directory` and the missing ones above it under the pin root, each with exactly
    `mode` (whatever the umask); the ones made, outermost first."""
    refuse_symlinks(pin_root, directory)
    missing = []
    while not os.path.lexists(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    if not os.path.isdir(directory):
        raise PinError(f"{directory} is in the way of a pin directory: not a directory")
    made = []
    for path in reversed(missing):
        os.mkdir(path)
        os.chmod(path, mode)
        made.append(path)
    return made


def remove_pin(path: str) -> None:
    """Unlink a pin (or a staged one); gone already is fine."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def remove_dirs(paths: Iterable[str]) -> None:
    """Remove directories a failed object made, each only if nothing else lives there now."""
    for path in paths:
        with contextlib.suppress(OSError):  # another object's pins live there now
            os.rmdir(path)


def remove_pins(previous: LoaderState, state: LoaderState, reporter: Reporter) -> list[str]:
    """Unlink the pins `previous` records and `state` no longer does; nothing else."""
    owners = {pin.path: obj.path for obj in previous.objects.values() for pin in obj.pins}
    removed = []
    for path in sorted(previous.pin_paths() - state.pin_paths()):
        if not os.path.lexists(path):
            # Gone already (a run killed after unlinking it): its directory may still be left.
            _remove_empty_dirs(os.path.dirname(path), previous.pin_root)
            continue
        problem = _not_a_recorded_pin(previous.pin_root, path)
        if problem:
            reporter.emit(events.pin_not_removed(path, problem))
            continue
        os.unlink(path)
        removed.append(path)
        reporter.emit(events.pin_removed(path, owners[path]))
        _remove_empty_dirs(os.path.dirname(path), previous.pin_root)
    for path in sorted(set(previous.objects) - set(state.objects)):
        reporter.emit(events.object_removed(path))
    return removed


def _not_a_recorded_pin(pin_root: str, path: str) -> str:
    """Why the file at `path` cannot be the pin a state recorded ('' when it can be)."""
    link = symlink_on_path(pin_root, path)
    if link is not None:
        return f"{link} is a symbolic link now, the loader never follows links in the pin root"
    if stat.S_ISDIR(os.lstat(path).st_mode):
        return "it is a directory now, not the pin recorded"
    return ""


def _remove_empty_dirs(directory: str, pin_root: str) -> None:
    while os.path.abspath(directory) != os.path.abspath(pin_root) and directory.startswith(
        pin_root
    ):
        try:
            os.rmdir(directory)
        except OSError:
            return  # not empty: something else lives there
        directory = os.path.dirname(directory)
