"""Paths under the pin root, handled without trusting what is already there.

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

from bpfloader.errors import LoaderError
from bpfloader.journal import Event, MessageId, Priority, Reporter
from bpfloader.kernel import pins as kpins

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
        raise LoaderError(
            f"{link} is a symbolic link: the loader never follows links in the pin root"
        )


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
            raise LoaderError(
                f"cannot make pin root {pin_root} traversable: {e.strerror}"
            ) from None
        reporter.emit(
            Event(
                MessageId.PIN_ROOT_OPENED,
                Priority.NOTICE,
                f"made pin root {pin_root} traversable ({mode:04o} -> {mode | 0o111:04o})",
                {"BPF_PIN": pin_root},
            )
        )
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
