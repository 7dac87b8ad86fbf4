"""Reading the source directory's objects: each file's trust check, its bytes, its policy file,
its content hash, and its plan, one object at a time (a load starts on the first object while
the next ones are still being read).

An object whose content matches what the recorded state says is loaded, with every pin in
place, is not parsed at all: a reload that finds nothing changed costs a hash per file.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bpfloader.errors import LoaderError
from bpfloader.loader.plan import ObjectPlan, Planner, SourceObject
from bpfloader.loader.policy import Policy, apply_policy, read_policy
from bpfloader.loader.state import LoaderState, unchanged
from bpfloader.loader.trust import TrustPolicy, refused

if TYPE_CHECKING:
    from bpfloader.obj.spec import ObjectSpec


@dataclass(frozen=True)
class SourceRead:
    """What reading an object's file found, beside its plan: what the run records and reports,
    not what it does."""

    sha256: str | None = None  # of the file's content and its policy, when they could be read
    untrusted: str | None = None  # why the trust policy would refuse it (let through: insecure)
    parse_seconds: float = 0.0  # reading, parsing and planning it (`load --stats`)


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
    sources: list[SourceObject],
    planner: Planner,
    trust: TrustPolicy,
    *,
    allow_untrusted: bool = False,
    recorded: LoaderState | None = None,
) -> Iterator[PlannedObject]:
    """The plan of each object in turn, each read and parsed when it is its turn. With
    `recorded` (a reload), an object found unchanged is planned as such, unparsed."""
    for source in sources:
        started = time.perf_counter()
        data = b""
        sha256 = None
        untrusted = trust.problem(source.path)
        if untrusted is not None and not allow_untrusted:
            # Nothing of an untrusted file is read: it is not even asked whether it is critical.
            yield PlannedObject(planner.failed(source, refused(untrusted), False), SourceRead())
            continue
        try:
            with open(source.path, "rb") as f:
                data = f.read()
            policy = read_policy(source.path)
            sha256 = _content_hash(data, policy) if data else None
            old = recorded.objects.get(source.path) if recorded is not None else None
            if old is not None and unchanged(old, sha256):
                plan = planner.unchanged(source, [pin.path for pin in old.pins], old.critical)
            else:
                plan = planner.plan(source, apply_policy(_parse(data, source.path), policy))
        except LoaderError as e:
            plan = planner.failed(source, e, _declares_critical(data))
        except OSError as e:
            plan = planner.failed(source, cannot_read(e), _declares_critical(data))
        read = SourceRead(sha256, untrusted, time.perf_counter() - started)
        yield PlannedObject(plan, read)


def cannot_read(e: OSError) -> LoaderError:
    """A file the loader could not read, as its error (the OSError kept as the cause)."""
    error = LoaderError(f"cannot read: {e.strerror}")
    error.__cause__ = e
    return error


def _parse(data: bytes, path: str) -> ObjectSpec:
    """The reader is imported only when an object has to be parsed: an unchanged reload never
    needs it (the import costs more than the rest of such a run)."""
    from bpfloader.obj.reader import read_object

    return read_object(data, path)


def _declares_critical(data: bytes) -> bool:
    from bpfloader.obj.reader import declares_critical

    return declares_critical(data)


def _content_hash(data: bytes, policy: Policy | None) -> str:
    digest = hashlib.sha256(data)
    if policy is not None:  # a changed policy is a changed object, for reload
        digest.update(b"\0policy\0" + policy.text)
    return digest.hexdigest()
