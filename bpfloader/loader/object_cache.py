"""The object cache (/var/cache/bpfloader, `--cache-dir`): each object's ObjectSpec as the
reader made it, kept between runs, so that a boot whose objects have not changed reads no ELF
and no BTF. Reading and parsing was the largest part of a load of small objects (1.5 to 4 ms
each, and the import of the whole reader); an entry loads in a fraction of a millisecond.

An entry is found by its key, which holds everything that decides the spec an object reads into:
the cache's format, the object's path and content hash (its bytes and its policy file:
source.py), the running kernel's release, and the loader's identity: its versions, Python's,
and the name, size, inode, modification and change times of every file of the code that builds
specs (`obj/`, and `loader/policy.py`, which turns a policy's text into the program types the
reader is given). The change time and the inode are there because the modification time alone
does not say that a file changed: dpkg gives every file of a package the date of its changelog
entry, so a package rebuilt at the same version with an edit of the same size would otherwise
look the same; a file installed or written anew gets a new change time.
A key that differs in anything is another entry: a changed object, policy, kernel or reader is
parsed again, never served an old spec. The entry's file is named by the key's SHA-256, and
holds the key again, compared on every read.

Why pickle is acceptable. Unpickling runs whatever the bytes say, so the cache must only ever
read bytes that root wrote, and it does:
  - the directory is reached by a walk of directory fds from `/` (dirfd.py: `O_NOFOLLOW`, only
    root's links followed, every directory on the way held to the source directory's rule),
    and must be root's and writable by no one else (trust.root_only_problem, as the state
    directory). One that is not is not used at all for the run (a warning says why);
  - every entry is opened by name in that fd with `O_NOFOLLOW`, and used only when it is a
    regular file of root's that neither its group nor others can write (a file left by someone
    while the directory was open to them is a miss, and is replaced).
Only root can have written an entry that passes. What remains is an entry root wrote that is
not what this loader wrote for this key: torn by a crash, a bit flipped on disk, a file of
another key copied by hand. The file's SHA-256 of what follows its magic is checked before
anything is unpickled, then its key compared with the one wanted; any of it wrong, or an
exception while unpickling, is a miss, and the entry is written anew.

That is also why this reader is not in the fuzz harness (fuzz/contract.py): it reads no
untrusted bytes. Its only input is a file that only root can have written, and what it does
before the digest matches is a comparison of a fixed magic, a hash of the bytes and a
comparison of 32 bytes, with no length or offset read from the file; the key's length and the
key, then the pickle, are read only from bytes whose digest matched.

The cache never fails a load: a directory that cannot be used, an entry that cannot be read, a
write that fails (a read-only file system, a full disk) each cost only the parse. Writes are a
temporary file (`O_EXCL`, 0600) renamed into place, without fsync: a file torn by a crash fails
its digest. At the end of a run, the entries of objects the run did not read are removed, so
that the cache holds the current objects' specs and no more (deleting the whole directory is
always safe: the next run parses, and fills it again).
"""

from __future__ import annotations

# `_pickle`: the C module under `pickle`, as journal_protocol.py uses `_socket`: pickle.py's
# own import costs a boot 2 ms, more than the entries of a small directory take to load.
import _pickle
import contextlib
import dataclasses
import hashlib
import io
import os
import re
import stat
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bpfloader.errors import UntrustedError
from bpfloader.kernel import system
from bpfloader.kernel.fd import Fd
from bpfloader.loader import dirfd
from bpfloader.loader.trust import directory_problem, read_all, root_only_problem
from bpfloader.version import LOADER_VERSION, __version__

if TYPE_CHECKING:
    from bpfloader.obj.spec import ObjectSpec

FORMAT = 1  # of an entry and its key; a new one makes every entry a miss
MAGIC = b"bpfloader object cache 1\n"
PROTOCOL = 5  # pickle's, the highest of every Python the loader runs on
MAX_ENTRY = 64 << 20  # an entry larger is neither written nor read
DIRECTORY_MODE = 0o700
TEMP_PREFIX = ".tmp-"
ENTRY_NAME = re.compile(r"[0-9a-f]{64}")
O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The code that builds an ObjectSpec from an object's bytes and its policy: a directory's .py
# files, or one file.
SPEC_CODE = (os.path.join(_PACKAGE, "obj"), os.path.join(_PACKAGE, "loader", "policy.py"))


class CacheUnusable(Exception):
    """The cache directory cannot be used for this run. `refused`: by the trust rule (someone
    besides root could write there), not for want of the directory or of a writable disk."""

    def __init__(self, reason: str, *, refused: bool):
        super().__init__(reason)
        self.reason = reason
        self.refused = refused


@dataclass(frozen=True)
class Identity:
    """What, besides an object's bytes and policy, decides the spec it reads into."""

    release: str  # the running kernel's (uname -r)
    loader: str  # the loader version objects gate on, the package version, Python's version
    code: str  # SHA-256 of the name, size, inode, mtime and ctime of each file of SPEC_CODE


def current_identity() -> Identity:
    """This loader's identity on this kernel (a stat of each file of SPEC_CODE: once a run)."""
    described = []
    for path in SPEC_CODE:
        if os.path.isdir(path):
            with os.scandir(path) as entries:
                files = sorted(e.path for e in entries if e.name.endswith(".py"))
        else:
            files = [path]
        for file in files:
            st = os.stat(file)
            described.append(
                f"{os.path.relpath(file, _PACKAGE)} {st.st_size} {st.st_ino} "
                f"{st.st_mtime_ns} {st.st_ctime_ns}"
            )
    code = hashlib.sha256("\n".join(described).encode()).hexdigest()
    return Identity(system.kernel_release(), f"{LOADER_VERSION} {__version__} {sys.version}", code)


class ObjectCache:
    """The cache directory, open (its fd) for one run. `unwritten`: why an entry was not
    written (the first reason, said once by the run), None while all were."""

    def __init__(self, path: str, fd: Fd, identity: Identity):
        self.path = path
        self.fd = fd
        self.identity = identity
        self.unwritten: str | None = None
        self._writing = True  # False once a write failed: the run writes no more
        self._used: set[str] = set()  # the entries of this run's objects, kept by prune()

    @classmethod
    def open(cls, path: str, identity: Identity | None = None) -> ObjectCache:
        """The cache at `path`, checked (made, mode 0700, where missing and its parent passes
        the rule); `identity` defaults to current_identity(). CacheUnusable says why not."""
        path = os.path.abspath(path)
        try:
            fd, _ = dirfd.open_directory(
                path, directory_problem, check_last=root_only_problem, make=DIRECTORY_MODE
            )
        except UntrustedError as e:
            raise CacheUnusable(e.reason, refused=True) from e
        except OSError as e:
            raise CacheUnusable(f"{e.strerror}: {e.filename}", refused=False) from e
        try:
            return cls(path, fd, identity or current_identity())
        except OSError as e:
            fd.close()
            raise CacheUnusable(
                f"cannot read the loader's code: {e.strerror}: {e.filename}", refused=False
            ) from e

    def close(self) -> None:
        self.fd.close()

    def __enter__(self) -> ObjectCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def keep(self, path: str, content_hash: str) -> None:
        """Keep this object's entry when the run prunes (an object the run did not parse, as a
        reload's unchanged ones)."""
        self._used.add(entry_name(entry_key(self.identity, path, content_hash)))

    def get(self, path: str, content_hash: str) -> ObjectSpec | None:
        """The spec stored for this object, or None (a miss: nothing there, or nothing that
        passed every check)."""
        key = entry_key(self.identity, path, content_hash)
        name = entry_name(key)
        self._used.add(name)
        data = self._read(name)
        if data is None:
            return None
        return decoded(data, key)

    def put(self, path: str, content_hash: str, spec: ObjectSpec) -> None:
        """Store `spec` as this object's entry. Never raises: a failure to write is kept in
        `unwritten`; after a failed write (a read-only or full file system), the run writes no
        more."""
        if not self._writing:
            return
        key = entry_key(self.identity, path, content_hash)
        name = entry_name(key)
        self._used.add(name)
        try:
            payload = _pickled(spec)
        except Exception as e:  # a spec that cannot be pickled is a bug: said, not fatal
            why = f"not written: {path}: cannot be pickled: {type(e).__name__}: {e}"
            self.unwritten = self.unwritten or why
            return
        entry = encoded(key, payload)
        if len(entry) > MAX_ENTRY:
            return  # parsed at every run, as without a cache
        try:
            self._write(name, entry)
        except OSError as e:
            self.unwritten = self.unwritten or f"not written: {e.strerror}"
            self._writing = False

    def prune(self) -> None:
        """Remove the entries (and temporary files of killed runs) that no object of this run
        used; nothing else in the directory is touched. Never raises."""
        with contextlib.suppress(OSError):
            for name in os.listdir(self.fd.number):
                ours = ENTRY_NAME.fullmatch(name) or name.startswith(TEMP_PREFIX)
                if ours and name not in self._used:
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=self.fd.number)

    def _read(self, name: str) -> bytes | None:
        """The entry's bytes, when it is a regular file only root can have written."""
        try:
            fd = Fd(os.open(name, O_READ, dir_fd=self.fd.number))
        except OSError:  # none (ENOENT), a link (ELOOP), or anything else: a miss
            return None
        with fd:
            try:
                st = os.fstat(fd.number)
                if (
                    not stat.S_ISREG(st.st_mode)
                    or st.st_uid != 0
                    or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
                    or st.st_size > MAX_ENTRY
                ):
                    return None
                return read_all(fd, MAX_ENTRY)
            except OSError:
                return None

    def _write(self, name: str, data: bytes) -> None:
        """`data` as the entry `name`: a temporary file of this process, renamed into place
        (over whatever was there: a rename never follows a link)."""
        temp = f"{TEMP_PREFIX}{os.getpid()}-{name}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp, dir_fd=self.fd.number)  # a killed run's of the same pid
        fd = Fd(os.open(temp, flags, 0o600, dir_fd=self.fd.number))
        try:
            with fd:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd.number, view) :]
            os.rename(temp, name, src_dir_fd=self.fd.number, dst_dir_fd=self.fd.number)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=self.fd.number)
            raise


class _Pickler(_pickle.Pickler):
    """pickle's, except that a dataclass with slots is stored as its class and its fields'
    values, and loaded by calling the class. Without this, it is loaded by dataclasses' own
    __setstate__, in Python, which took most of a hit's time: a small object's spec holds
    dozens of them (LineInfo, FuncInfo, MapReference), each loaded three times faster so."""

    def reducer_override(self, obj: object) -> Any:  # a reduce tuple, or NotImplemented
        cls = type(obj)
        if "__slots__" in cls.__dict__ and dataclasses.is_dataclass(cls):
            fields = dataclasses.fields(cls)
            if all(f.init and not f.kw_only for f in fields):
                return cls, tuple(getattr(obj, f.name) for f in fields)
        return NotImplemented  # pickle's own way


def _pickled(spec: ObjectSpec) -> bytes:
    out = io.BytesIO()
    _Pickler(out, PROTOCOL).dump(spec)
    return out.getvalue()


def entry_key(identity: Identity, path: str, content_hash: str) -> bytes:
    """The whole key of the object at `path` with this content hash, under `identity`. Not a
    secret: anyone who can read the loader's files and the object can work it out (what keeps
    an entry root's is who can write the directory)."""
    fields = (str(FORMAT), path, content_hash, identity.release, identity.loader, identity.code)
    # NUL cannot be in a path, and is in no other field: the fields cannot run together.
    return b"\0".join(os.fsencode(field) for field in fields)


def entry_name(key: bytes) -> str:
    """The name of the file of the entry of `key`."""
    return hashlib.sha256(key).hexdigest()


def encoded(key: bytes, payload: bytes) -> bytes:
    """An entry's bytes: MAGIC, the SHA-256 of what follows, the key's length (4 bytes, big
    endian), the key, the pickle."""
    body = len(key).to_bytes(4, "big") + key + payload
    return MAGIC + hashlib.sha256(body).digest() + body


def decoded(data: bytes, key: bytes) -> ObjectSpec | None:
    """The spec in an entry's bytes, when they are intact and of `key`; None otherwise. Nothing
    is unpickled before the digest matches and the key is the one wanted."""
    head = len(MAGIC) + 32
    if len(data) < head + 4 or not data.startswith(MAGIC):
        return None
    body = data[head:]
    if hashlib.sha256(body).digest() != data[len(MAGIC) : head]:
        return None
    length = int.from_bytes(body[:4], "big")
    if body[4 : 4 + length] != key:
        return None  # another key's entry (a copy, a collision): not this object's
    try:
        spec = _pickle.loads(body[4 + length :])
    except Exception:  # root's bytes, intact, of this key, yet not loadable: a miss
        return None
    from bpfloader.obj.spec import ObjectSpec  # imported by now: the pickle's own class

    return spec if isinstance(spec, ObjectSpec) else None
