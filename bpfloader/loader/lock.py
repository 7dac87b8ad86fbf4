"""One run at a time: load, reload and unload take an exclusive lock under the state dir, so
the boot run and a manual reload never interleave."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator

from bpfloader.errors import LoaderError
from bpfloader.loader.state_dir import StateDir

LOCK_FILE = "lock"
POLL_SECONDS = 0.05


@contextlib.contextmanager
def run_lock(state_dir: StateDir, timeout: float) -> Iterator[None]:
    """Hold the lock for the block; wait up to `timeout` seconds for another run to finish."""
    path = state_dir.file(LOCK_FILE)
    fd = state_dir.open_file(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as e:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                    raise LoaderError(
                        f"another bpfloader run (pid {holder}) holds {path}; "
                        f"gave up waiting after {timeout:g} s"
                    ) from e
                time.sleep(POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # no stale pid for the next one who waits to read
    finally:
        os.close(fd)  # releases the lock
