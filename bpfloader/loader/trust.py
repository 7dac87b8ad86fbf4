"""The trust policy on the source directory, like sshd's StrictModes: only root may be able to
change what the loader feeds the kernel. Pure but for lstat/stat/realpath: no bpf syscalls.

An object is refused when:
  - it, or any directory on its real path from / down (the source directory included), is not
    owned by root;
  - it is writable by its group or by everyone, whatever that group is;
  - a directory on that path is writable by its group or by everyone, unless it is owned by root
    and sticky (like /tmp: others may add entries but not rename or remove root's);
  - it is reached through a symlink inside the source directory that points outside it;
  - its policy file (next to it) fails the same checks.
`--insecure-allow-untrusted` turns refusals into warnings, for development.
"""

from __future__ import annotations

import os
import stat

from bpfloader.errors import LoaderError
from bpfloader.loader.policy import policy_path

WHY = "only root may be able to change what the loader runs"


class UntrustedError(LoaderError):
    """An object, or something on its path, could have been written by someone but root."""


def file_problem(st: os.stat_result) -> str | None:
    """Why a file with this status is not trusted, or None."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root (mode {mode:04o})"
    writers = _writers(st)
    if writers:
        return f"writable by {writers} (mode {mode:04o})"
    return None


def directory_problem(st: os.stat_result) -> str | None:
    """Why a directory with this status is not trusted, or None. A group- or world-writable
    directory is trusted only when root owns it and it is sticky."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root (mode {mode:04o})"
    writers = _writers(st)
    if writers and not mode & stat.S_ISVTX:
        return f"writable by {writers} and not sticky (mode {mode:04o})"
    return None


def _writers(st: os.stat_result) -> str:
    who = []
    if st.st_mode & stat.S_IWGRP:
        who.append(f"group {st.st_gid}")
    if st.st_mode & stat.S_IWOTH:
        who.append("everyone")
    return " and ".join(who)


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _ancestors(path: str) -> list[str]:
    """'/a/b/c' -> ['/', '/a', '/a/b', '/a/b/c']."""
    out = ["/"]
    current = ""
    for part in path.split("/"):
        if part:
            current += "/" + part
            out.append(current)
    return out


def refused(problem: str) -> UntrustedError:
    """The error of an object the policy refuses: `refused: why; only root may ...`."""
    return UntrustedError(f"refused: {problem}; {WHY}")


class TrustPolicy:
    """Checks the objects of one source directory; directories are checked once per run."""

    def __init__(self, source_dir: str):
        self.source_dir = os.path.abspath(source_dir)
        self.real_source_dir = os.path.realpath(source_dir)
        self._dirs: dict[str, str | None] = {}

    def problem(self, path: str) -> str | None:
        """Why the object at `path` (under the source directory) is not trusted, or None."""
        problem = self._path_problem(path, "")
        if problem is not None:
            return problem
        policy = policy_path(path)
        if os.path.lexists(policy):
            return self._path_problem(policy, f"its policy file {policy}")
        return None

    def _path_problem(self, path: str, subject: str) -> str | None:
        real = os.path.realpath(path)
        if not _within(real, self.real_source_dir):
            how = "a symlink" if os.path.islink(path) else "reached through a symlink"
            where = f"{how} to {real}, outside {self.source_dir}"
            return f"{subject} is {where}" if subject else where
        for directory in _ancestors(os.path.dirname(real)):
            problem = self._directory(directory)
            if problem is not None:
                return f"directory {directory} is {problem}"
        if real != os.path.abspath(path):
            subject = subject or "its target"
            subject += f" {real}" if subject == "its target" else f" (target {real})"
        try:
            st = os.stat(real)
        except OSError as e:
            problem = f"not readable: {e.strerror}"
        else:
            regular = stat.S_ISREG(st.st_mode)
            problem = file_problem(st) if regular else "not a regular file"
        if problem is None:
            return None
        return f"{subject} is {problem}" if subject else problem

    def _directory(self, directory: str) -> str | None:
        if directory not in self._dirs:
            try:
                self._dirs[directory] = directory_problem(os.stat(directory))
            except OSError as e:
                self._dirs[directory] = f"not readable: {e.strerror}"
        return self._dirs[directory]
