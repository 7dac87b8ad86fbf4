"""Reading the source directory's objects: each file's trust check, its bytes, its policy file,
its content hash, and its plan, one object at a time (a load starts on the first object while
the next ones are still being read).

Each object is opened once, by name in its directory's fd (scan.py, trust.py), checked on that
fd, and read from it: what is checked is what is read, and what is hashed. Its policy file
likewise (policy.py).

An object whose content matches what the recorded state says is loaded, with every pin in
place, is not parsed at all: a reload that finds nothing changed costs a hash per file. Any
other object's spec is taken from the object cache when it holds one for this content (and
this loader and kernel: object_cache.py), else parsed and stored there.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bpfloader.errors import LoaderError
from bpfloader.loader.naming import check_not_reserved
from bpfloader.loader.plan import ObjectPlan, Planner, SourceObject
from bpfloader.loader.policy import Policy, apply_policy, policy_types, read_policy_in
from bpfloader.loader.scan import SourceTree
from bpfloader.loader.state import LoaderState, unchanged
from bpfloader.loader.trust import open_checked, read_all, refused
from bpfloader.loader.twins import twin_skip_reason

if TYPE_CHECKING:
    from bpfloader.loader.object_cache import ObjectCache
    from bpfloader.obj.libbpf_sections import SectionDef
    from bpfloader.obj.spec import ObjectSpec

# The largest object file read (`--max-object-size`): far above any real object (Android's
# and libbpf's are kilobytes to a few megabytes), and low enough that a file meant to exhaust
# the reader's memory (about 14 times the file, issue 16) is refused before it is read.
DEFAULT_MAX_OBJECT_BYTES = 64 << 20


@dataclass(frozen=True)
class SourceRead:
    """What reading an object's file found, beside its plan: what the run records and reports,
    not what it does."""

    sha256: str | None = None  # of the file's content and its policy, when they could be read
    untrusted: str | None = None  # why the trust policy would refuse it (let through: insecure)
    parse_seconds: float = 0.0  # reading, parsing and planning it (`load --stats`)
    policy_ignored: str | None = None  # why its policy file was not applied (a warning)
    # Its spec came from the object cache (True), or was parsed and stored there (False); None
    # when the cache was not asked (no cache, an unchanged or unreadable object).
    cached: bool | None = None


@dataclass(frozen=True)
class PlannedObject:
    """One object of the source directory: its plan and what reading it found."""

    plan: ObjectPlan
    read: SourceRead

    @property
    def path(self) -> str:
        return self.plan.path


@dataclass
class RunPlan:
    """Every object of the source directory, in directory order (what `--dry-run` prints)."""

    objects: list[PlannedObject] = field(default_factory=list)


def plan_sources(
    tree: SourceTree,
    planner: Planner,
    *,
    allow_untrusted: bool = False,
    recorded: LoaderState | None = None,
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES,
    cache: ObjectCache | None = None,
) -> Iterator[PlannedObject]:
    """The plan of each object of `tree` in turn, each read and parsed when it is its turn;
    the tree's fds are closed after the last one. With `recorded` (a reload), an object found
    unchanged is planned as such, unparsed. An object over `max_object_bytes` fails unread.
    With `cache`, specs are taken from it and stored in it."""
    with tree:
        siblings = {source.path for source in tree}
        for source in tree:
            started = time.perf_counter()
            reading = _Reading(tree, source, allow_untrusted, max_object_bytes, cache)
            twin = twin_skip_reason(source.path, siblings, planner.env)
            plan = ObjectPlan(source, skip_reason=twin) if twin else reading.plan(planner, recorded)
            read = SourceRead(
                reading.sha256,
                reading.untrusted,
                time.perf_counter() - started,
                reading.ignored,
                reading.cached,
            )
            yield PlannedObject(plan, read)


class _Reading:
    """One object read from its directory's fd: its bytes, its policy, what was found."""

    def __init__(
        self,
        tree: SourceTree,
        source: SourceObject,
        insecure: bool,
        ceiling: int,
        cache: ObjectCache | None,
    ):
        self.tree = tree
        self.source = source
        self.insecure = insecure
        self.ceiling = ceiling
        self.cache = cache
        self.data = b""
        self.sha256: str | None = None
        self.untrusted: str | None = None
        self.ignored: str | None = None
        self.cached: bool | None = None

    def plan(self, planner: Planner, recorded: LoaderState | None) -> ObjectPlan:
        source = self.source
        try:
            check_not_reserved(source.location, "location directory")
            data = self._read()
            if data is None:
                # Nothing of an untrusted file is read: not even whether it is critical.
                problem, self.untrusted = self.untrusted, None  # refused, not let through
                assert problem is not None
                return planner.failed(source, refused(problem), False)
            directory = self.tree.directory(source.location)
            found = read_policy_in(directory, source.path, self.tree.within, insecure=self.insecure)
            self.untrusted = self.untrusted or found.untrusted
            self.ignored = found.ignored
            self.sha256 = _content_hash(data, found.policy) if data else None
            old = recorded.objects.get(source.path) if recorded is not None else None
            if old is not None and unchanged(old, self.sha256):
                if self.cache is not None and self.sha256 is not None:
                    self.cache.keep(source.path, self.sha256)
                return planner.unchanged(source, [pin.path for pin in old.pins], old.critical)
            spec = self._spec(data, found.policy)
            return planner.plan(source, apply_policy(spec, found.policy))
        except LoaderError as e:
            return planner.failed(source, e, _declares_critical(self.data))
        except OSError as e:
            return planner.failed(source, cannot_read(e), _declares_critical(self.data))

    def _spec(self, data: bytes, policy: Policy | None) -> ObjectSpec:
        """The object's spec: the cache's, else parsed (and stored there)."""
        path, cache, sha256 = self.source.path, self.cache, self.sha256
        if cache is None or sha256 is None:
            return _parse(data, path, policy_types(policy))
        spec = cache.get(path, sha256)
        self.cached = spec is not None
        if spec is None:
            spec = _parse(data, path, policy_types(policy))
            cache.put(path, sha256, spec)
        return spec

    def _read(self) -> bytes | None:
        """The object's bytes, read from the fd it was checked on; None when refused."""
        name = os.path.basename(self.source.path)
        directory = self.tree.directory(self.source.location)
        opened = open_checked(directory, name, self.tree.within, insecure=self.insecure)
        if opened is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.source.path)
        self.untrusted = opened.problem
        if opened.fd is None:
            return None
        try:
            size = os.fstat(opened.fd.number).st_size
            if size <= self.ceiling:
                self.data = read_all(opened.fd, self.ceiling)
                size = len(self.data)
        finally:
            opened.close()
        if size > self.ceiling:
            self.data = b""  # not asked whether it is critical either: it was not read whole
            raise LoaderError(
                f"too large: {size} bytes, over the ceiling of {self.ceiling} bytes "
                "(--max-object-size)"
            )
        return self.data


def cannot_read(e: OSError) -> LoaderError:
    """A file the loader could not read, as its error (the OSError kept as the cause)."""
    error = LoaderError(f"cannot read: {e.strerror}")
    error.__cause__ = e
    return error


def _parse(data: bytes, path: str, types: Mapping[str, SectionDef]) -> ObjectSpec:
    """The reader is imported only when an object has to be parsed: an unchanged reload never
    needs it (the import costs more than the rest of such a run)."""
    from bpfloader.obj.reader import read_object

    return read_object(data, path, types)


def _declares_critical(data: bytes) -> bool:
    from bpfloader.obj.reader import declares_critical

    return declares_critical(data)


def _content_hash(data: bytes, policy: Policy | None) -> str:
    digest = hashlib.sha256(data)
    if policy is not None:  # a changed policy is a changed object, for reload
        digest.update(b"\0policy\0" + policy.text)
    return digest.hexdigest()
