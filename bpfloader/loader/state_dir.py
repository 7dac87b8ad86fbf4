"""The state directory (/run/bpfloader): the run lock, the state file, the loaded marker and the
publication record, every one of them opened by the directory's fd, never by a path.

`unload` deletes the pins the state file lists, so whoever can write that file chooses what
root deletes; and a link planted in the directory would send a write elsewhere. The directory
is therefore held to the trust rule: reached through directories only root can change
(dirfd.py), root's itself and writable by no one else. A state directory that fails is not
used at all: the run stops with one line, before it changes anything.
"""

from __future__ import annotations

import contextlib
import os
import stat

from bpfloader.errors import LoaderError
from bpfloader.kernel.fd import Fd
from bpfloader.loader import dirfd
from bpfloader.loader.trust import directory_problem, root_only_problem

O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
MAX_FILE = 64 << 20  # a state file of more is not one this loader wrote
DIRECTORY_MODE = 0o755  # made so where missing: the client reads the loaded marker


class StateDirError(LoaderError):
    """The state directory cannot be trusted or used: the run does nothing."""


class StateDir:
    """The state directory, open. `path` is for messages and for the client (which reads the
    loaded marker by path, unprivileged)."""

    def __init__(self, path: str, fd: Fd):
        self.path = path
        self.fd = fd

    @classmethod
    def open(cls, path: str, *, create: bool = True) -> StateDir:
        """Open (with `create`, make: mode 0755) the state directory, checked; without
        `create`, FileNotFoundError when it does not exist."""
        path = os.path.abspath(path)
        try:
            fd, _ = dirfd.open_directory(
                path,
                directory_problem,
                check_last=root_only_problem,
                make=DIRECTORY_MODE if create else None,
            )
        except LoaderError as e:
            raise StateDirError(f"state directory {path}: {e.reason}") from e
        except FileNotFoundError:
            raise
        except OSError as e:
            raise StateDirError(f"state directory {path}: {e.strerror}: {e.filename}") from e
        return cls(path, fd)

    def close(self) -> None:
        self.fd.close()

    def __enter__(self) -> StateDir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def file(self, name: str) -> str:
        """The path of a file here, for messages."""
        return os.path.join(self.path, name)

    def names(self) -> list[str]:
        return os.listdir(self.fd.number)

    def open_file(self, name: str, flags: int, mode: int = 0o644) -> int:
        """An fd for `name` here, never through a link."""
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd.number)

    def read(self, name: str) -> bytes | None:
        """The content of the regular file `name`, None if there is none."""
        try:
            fd = os.open(name, O_READ, dir_fd=self.fd.number)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise StateDirError(f"{self.file(name)} is not a regular file")
            if st.st_size > MAX_FILE:
                raise StateDirError(f"{self.file(name)} is {st.st_size} bytes: not the loader's")
            return f.read(MAX_FILE + 1)

    def write_atomically(self, name: str, text: str, temp_prefix: str) -> None:
        """Replace `name` with `text`: a temporary file written and synced, renamed over it,
        then the directory synced. Only the run holding the lock writes here, and the
        leftovers of killed runs are gone first, so this process's pid names the temporary
        file uniquely."""
        tmp = f"{temp_prefix}{name}-{os.getpid()}"
        fd = self.open_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fchmod(f.fileno(), 0o644)
                os.fsync(f.fileno())
            os.rename(tmp, name, src_dir_fd=self.fd.number, dst_dir_fd=self.fd.number)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=self.fd.number)
            raise
        os.fsync(self.fd.number)

    def append(self, name: str, text: str) -> None:
        """Add `text` at the end of `name` (made if missing), in one write."""
        fd = self.open_file(name, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd.number)
