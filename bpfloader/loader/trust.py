"""The trust policy on the source directory, like sshd's StrictModes: only root may be able to
change what the loader feeds the kernel. No bpf syscalls: directory fds, `openat`, `fstat`.

Every check is made on what was opened, never on a second lookup of a name (dirfd.py): the
source directory is opened by a walk from `/`, each location from its fd, and each file once,
by name in its directory's fd, `O_NOFOLLOW`; what is read is read from that fd.

An object is refused when:
  - it, or any directory on its real path from / down (the source directory included), is not
    owned by root;
  - it is writable by its group or by everyone, whatever that group is;
  - a directory on that path is writable by its group or by everyone, unless it is owned by root
    and sticky (like /tmp: others may add entries but not rename or remove root's);
  - it is not a regular file;
  - it is a symbolic link owned by someone other than root (nothing of it is read: in a sticky
    directory anyone may add a link to one of root's objects, and flip it);
  - it is a link of root's that leads (through root's links only, every directory on the way
    checked) outside the source directory, or to a file these rules refuse.
A volume the kubelet wrote (root's `..data` link in the source directory) is read through that
link, and its own directory, the kubelet's 0777 one, is accepted where it is a read-only mount
(kubelet.py says why).
Its policy file (next to it, the same rules) is not applied when these rules refuse it: the
object loads as it declares, with a warning (policy.py says why it is not refused).
`--insecure-allow-untrusted` turns refusals into warnings, for development.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from bpfloader.errors import UntrustedError
from bpfloader.kernel.fd import Fd
from bpfloader.loader import dirfd

WHY = "only root may be able to change what the loader runs"
# How a file of the source directory is opened (dirfd adds O_NOFOLLOW): a FIFO must not hang
# the boot, and a terminal must not become the loader's.
FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY


def file_problem(st: os.stat_result, path: str) -> str | None:
    """Why the file `path` with this status is not trusted (and how to fix it), or None."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root (mode {mode:04o}; fix: chown root {_q(path)})"
    writers, details = _writers(st)
    if writers:
        return f"writable by {writers} ({details}; fix: chmod {_who(st)}-w {_q(path)})"
    return None


def directory_problem(st: os.stat_result, path: str) -> str | None:
    """Why the directory `path` with this status is not trusted (and how to fix it), or None.
    A group- or world-writable directory is trusted only when root owns it and it is sticky."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root (mode {mode:04o}; fix: chown root {_q(path)})"
    writers, details = _writers(st)
    if writers and not mode & stat.S_ISVTX:
        return (
            f"writable by {writers} and not sticky ({details}; fix: chmod {_who(st)}-w {_q(path)})"
        )
    return None


def root_only_problem(st: os.stat_result, path: str) -> str | None:
    """Why the directory `path` with this status is not root's alone (owned by root, writable
    by no one else, sticky or not): what a pin directory the loader did not make, and the state
    directory, must be."""
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid != 0:
        return f"owned by uid {st.st_uid}, not root (mode {mode:04o}; fix: chown root {_q(path)})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by others (mode {mode:04o}; fix: chmod {_who(st)}-w {_q(path)})"
    return None


def _writers(st: os.stat_result) -> tuple[str, str]:
    """Who may write besides the owner ('' when no one: `group adm and everyone`), and the
    group's id and the mode (`gid 4, mode 0666`)."""
    mode = f"mode {stat.S_IMODE(st.st_mode):04o}"
    everyone = bool(st.st_mode & stat.S_IWOTH)
    if st.st_mode & stat.S_IWGRP:
        name = _group_name(st.st_gid)
        who = f"group {name or st.st_gid}" + (" and everyone" if everyone else "")
        return who, f"gid {st.st_gid}, {mode}" if name else mode
    return ("everyone" if everyone else ""), mode


def _who(st: os.stat_result) -> str:
    """chmod's letters for those who may write besides the owner."""
    return ("g" if st.st_mode & stat.S_IWGRP else "") + ("o" if st.st_mode & stat.S_IWOTH else "")


def _group_name(gid: int) -> str | None:
    import grp  # only to say why something is refused

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:  # a group without a name
        return None


def _q(path: str) -> str:
    """`path` as a shell word, for a fix to paste."""
    import shlex  # only to say why something is refused

    return shlex.quote(path)


def _within(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def refused(problem: str) -> UntrustedError:
    """The error of an object the policy refuses: `refused: why; only root may ...`."""
    return UntrustedError(f"refused: {problem}; {WHY}")


@dataclass(frozen=True)
class SourceDirectory:
    """A directory of the source tree (the source directory, or a location in it), open.
    `problem`: why it, or a directory above it, is not trusted (None: it is); then nothing in
    it is opened unless the trust policy is off."""

    fd: Fd
    real: str  # its real path, as its walk found it
    problem: str | None


@dataclass(frozen=True)
class Confinement:
    """Where a root-owned link may lead: into the source directory (`real`, as its walk found
    it; `path`, as it was given, for messages)."""

    path: str
    real: str


@dataclass
class Opened:
    """A file of the source directory, looked up once. `fd` is None when it was not opened (a
    refusal that needs nothing of it); `problem` says why it is not trusted (None: it is)."""

    fd: Fd | None
    problem: str | None

    def close(self) -> None:
        if self.fd is not None:
            self.fd.close()


def open_checked(
    directory: SourceDirectory, name: str, within: Confinement, *, insecure: bool = False
) -> Opened | None:
    """The entry `name` of `directory` opened once and checked on its fd (None: there is no
    such entry). Refused (with `insecure`: only noted) as the module says. Raises OSError for a
    file that cannot be opened for any other reason. The caller closes what it gets."""
    if directory.problem is not None and not insecure:
        return Opened(None, directory.problem)  # nothing in it is opened
    try:
        fd, real = dirfd.open_file_at(
            directory.fd, directory.real, name, FILE_FLAGS, directory_problem
        )
    except FileNotFoundError:
        # No such entry (or it went away), or a link of root's to nothing: told apart by a
        # second look, which only says which of the two errors this is.
        if not _exists(directory, name):
            return None
        raise
    except UntrustedError as e:
        refusal = str(e)
        if isinstance(e, dirfd.LinkRefused) and e.path == dirfd.join(directory.real, name):
            refusal = f"a symbolic link owned by uid {e.uid}"
        if not insecure:
            return Opened(None, directory.problem or refusal)
        # Insecure: the link is followed as any program would follow it.
        return Opened(_open_following(directory, name), directory.problem or refusal)
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise
        # A socket (open() is ENXIO): refused on who made it, when not root.
        st = os.stat(name, dir_fd=directory.fd.number, follow_symlinks=False)
        if st.st_uid == 0:
            raise
        return Opened(None, directory.problem or file_problem(st, dirfd.join(directory.real, name)))
    problem = directory.problem or _file_problem(fd, real, directory, name, within)
    if problem is not None and not insecure:
        fd.close()
        return Opened(None, problem)
    return Opened(fd, problem)


def _file_problem(
    fd: Fd, real: str, directory: SourceDirectory, name: str, within: Confinement
) -> str | None:
    linked = real != dirfd.join(directory.real, name)
    if linked and not _within(real, within.real):
        return f"a symlink to {real}, outside {within.path}"
    st = os.fstat(fd.number)
    problem = file_problem(st, real) if stat.S_ISREG(st.st_mode) else "not a regular file"
    if problem is None:
        return None
    return f"its target {real} is {problem}" if linked else problem


def _exists(directory: SourceDirectory, name: str) -> bool:
    try:
        os.stat(name, dir_fd=directory.fd.number, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


def _open_following(directory: SourceDirectory, name: str) -> Fd:
    try:
        return Fd(os.open(name, FILE_FLAGS, dir_fd=directory.fd.number))
    except OSError as e:
        raise OSError(e.errno, e.strerror, dirfd.join(directory.real, name)) from e


def read_all(fd: Fd, most: int) -> bytes:
    """What the file open at `fd` holds, up to `most` + 1 bytes: more than `most` says it holds
    more (it may have grown since its size was checked)."""
    data = bytearray()
    while len(data) <= most and (chunk := os.read(fd.number, min(1 << 20, most + 1 - len(data)))):
        data += chunk
    return bytes(data)
