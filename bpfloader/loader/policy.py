"""Policy files: the owner, group and mode of an object's pins, where the object cannot say.

libbpf-style objects carry no ownership (Android's defs do), so their pins default to root
0600 (maps) and root 0440 (programs). A TOML file next to the object, named like it with
`.policy` for `.o` (`/etc/bpf/netmon.o` -> `/etc/bpf/netmon.policy`), sets them:

    [maps]                    # every map of the object
    group = "netmon"          # a name or a number; `user` likewise
    mode = "0640"             # octal, as a string or as a TOML integer (0o640)

    [programs]                # every program
    group = "netmon"

    [map.counters]            # one map, by name (the MAPNAME of its pin)
    mode = "0660"

    [program.count_packets]   # one program, by the name of its function
    user = "root"

A libbpf-style object whose sections libbpf cannot type may have its programs' type given,
as bpftool's `prog loadall OBJ DIR type xdp` gives it: `type = "xdp"` at the top of the file
(every program) or in a `[program.NAME]` table (that program, over the top's). The names are
libbpf's section names that need nothing else (`xdp`, `tc`, `socket`, `kprobe`, ...), read
strictly: any other is an error naming the valid ones.

The most specific table wins, field by field. A policy file applies to an object of either
format; for an Android-format object it overrides what the defs declare. Anything the file
names that the object does not have, and any unknown key, is an error: a typo must not leave
a pin more open, or more closed, than intended.

A policy file the trust policy refuses (trust.py: not root's, writable by others, a link
someone else owns, ...) is not applied, and the object loads as it declares, with a warning;
the object is not refused for it. In a sticky source directory any user may add `NAME.policy`
beside root's `NAME.o` when root gave it none, but may not replace or remove a policy file of
root's: so a policy file that is not trusted was never root's intention for the object, and
refusing the object would let any user fail any of root's objects. With
`--insecure-allow-untrusted` it is applied, and said to be untrusted.
"""

from __future__ import annotations

import dataclasses
import grp
import os
import pwd
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bpfloader.errors import LoaderError
from bpfloader.loader.attachments import ATTACH_KEY, Declared, parse_attach, resolved
from bpfloader.loader.trust import Confinement, SourceDirectory, open_checked, read_all
from bpfloader.obj.ownership import Ownership

if TYPE_CHECKING:
    from bpfloader.obj.libbpf_sections import SectionDef
    from bpfloader.obj.spec import MapSpec, ObjectSpec, ProgramSpec

POLICY_SUFFIX = ".policy"
MAX_POLICY_BYTES = 1 << 20  # a policy file is a few lines: a bigger one is not read whole
FIELDS = ("user", "group", "mode")
TYPE_KEY = "type"  # the program type, at the top and in [program.NAME]
Rule = dict[str, int]  # "uid", "gid", "mode" -> value


class PolicyError(LoaderError):
    """A policy file that cannot be read or says something impossible."""


@dataclasses.dataclass(frozen=True)
class Policy:
    path: str
    maps: Rule
    programs: Rule
    map: dict[str, Rule]
    program: dict[str, Rule]
    text: bytes  # the file's bytes: a change to them is a change to the object
    # Program types by program name ("": every program), for the reader (obj/reader.py).
    types: dict[str, SectionDef] = dataclasses.field(default_factory=dict)
    # Where programs attach once loaded, by program name: (target, optional) each
    # (loader/attachments.py).
    attach: dict[str, Declared] = dataclasses.field(default_factory=dict)


def policy_types(policy: Policy | None) -> dict[str, SectionDef]:
    """The program types a policy gives, for read_object (none without a policy)."""
    return policy.types if policy is not None else {}


def policy_path(object_path: str) -> str:
    base = object_path[: -len(".o")] if object_path.endswith(".o") else object_path
    return base + POLICY_SUFFIX


@dataclasses.dataclass(frozen=True)
class PolicyRead:
    """An object's policy file, as read from its directory's fd."""

    policy: Policy | None  # what applies (None: nothing, as declared)
    untrusted: str | None = None  # why the trust policy would not apply it (applied: insecure)
    ignored: str | None = None  # why it exists and is not applied (`policy PATH: ...`)


def read_policy_in(
    directory: SourceDirectory, object_path: str, within: Confinement, *, insecure: bool = False
) -> PolicyRead:
    """The policy file of the object `object_path`, looked up once in `directory` (the one
    holding the object) and read from the fd it was opened at, if the trust policy allows."""
    path = policy_path(object_path)
    try:
        opened = open_checked(directory, os.path.basename(path), within, insecure=insecure)
        if opened is None:
            return PolicyRead(None)
        try:
            if opened.fd is None:
                return PolicyRead(None, ignored=f"policy {path}: not applied: {opened.problem}")
            text = read_all(opened.fd, MAX_POLICY_BYTES)
        finally:
            opened.close()
    except OSError as e:
        raise PolicyError(f"policy {path}: cannot read: {e.strerror}") from e
    if len(text) > MAX_POLICY_BYTES:
        raise PolicyError(f"policy {path}: larger than {MAX_POLICY_BYTES} bytes")
    untrusted = None if opened.problem is None else f"its policy file {path}: {opened.problem}"
    return PolicyRead(parse_policy(text, path), untrusted)


def read_policy(object_path: str) -> Policy | None:
    """The policy file of an object, or None where there is none, by its path (`check`, on
    files of a build: not the source directory, where read_policy_in reads it)."""
    path = policy_path(object_path)
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise PolicyError(f"policy {path}: cannot read: {e.strerror}") from e
    return parse_policy(text, path)


def parse_policy(text: bytes, path: str) -> Policy:
    import tomllib  # only where a policy file exists: most boots have none

    try:
        doc = tomllib.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise PolicyError(f"policy {path}: not valid TOML: {e}") from e
    unknown = set(doc) - {"maps", "programs", "map", "program", TYPE_KEY}
    if unknown:
        raise PolicyError(
            f"policy {path}: unknown table [{sorted(unknown)[0]}] "
            "(known: [maps], [programs], [map.NAME], [program.NAME], and the key type)"
        )
    types: dict[str, SectionDef] = {}
    if TYPE_KEY in doc:
        types[""] = _type(doc[TYPE_KEY], path, "type")
    programs = doc.get("program", {})
    attach: dict[str, Declared] = {}
    if isinstance(programs, dict):  # `type`, `attach` taken out of each [program.NAME]
        for name, table in programs.items():
            if isinstance(table, dict) and TYPE_KEY in table:
                types[name] = _type(table[TYPE_KEY], path, f"[program.{name}]: type")
            if isinstance(table, dict) and ATTACH_KEY in table:
                try:
                    attach[name] = parse_attach(table[ATTACH_KEY], f"[program.{name}]: attach")
                except ValueError as e:
                    raise PolicyError(f"policy {path}: {e}") from e
        programs = {
            name: {k: v for k, v in table.items() if k not in (TYPE_KEY, ATTACH_KEY)}
            if isinstance(table, dict)
            else table
            for name, table in programs.items()
        }
    return Policy(
        path,
        _rule(doc.get("maps", {}), path, "[maps]"),
        _rule(doc.get("programs", {}), path, "[programs]"),
        _rules(doc.get("map", {}), path, "map"),
        _rules(programs, path, "program"),
        text,
        types,
        attach,
    )


def _type(value: Any, path: str, where: str) -> SectionDef:
    """A program type by its libbpf name, strictly: an unknown one names the valid ones."""
    from bpfloader.obj.libbpf_sections import typing_names

    valid = typing_names()
    if isinstance(value, str) and value in valid:
        return valid[value]
    raise PolicyError(
        f"policy {path}: {where}: {value!r} is not a program type this loader knows "
        f"(valid: {', '.join(valid)})"
    )


def _rules(table: Any, path: str, kind: str) -> dict[str, Rule]:
    if not isinstance(table, dict):
        raise PolicyError(f"policy {path}: [{kind}] must hold tables [{kind}.NAME]")
    return {name: _rule(value, path, f"[{kind}.{name}]") for name, value in table.items()}


def _rule(table: Any, path: str, where: str) -> Rule:
    if not isinstance(table, dict):
        raise PolicyError(f"policy {path}: {where} must be a table")
    unknown = set(table) - set(FIELDS)
    if unknown:
        raise PolicyError(
            f"policy {path}: {where}: unknown key '{sorted(unknown)[0]}' (known: user, group, mode)"
        )
    rule: Rule = {}
    try:
        if "user" in table:
            rule["uid"] = _id(table["user"], pwd.getpwnam, "user")
        if "group" in table:
            rule["gid"] = _id(table["group"], grp.getgrnam, "group")
        if "mode" in table:
            rule["mode"] = _mode(table["mode"])
    except ValueError as e:
        raise PolicyError(f"policy {path}: {where}: {e}") from e
    return rule


def _id(value: Any, lookup: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be a name or a number, not {value!r}")
    if isinstance(value, int):
        if not 0 <= value < 2**32 - 1:
            raise ValueError(f"{what} {value} is not a valid id")
        return value
    if isinstance(value, str):
        try:
            found: int = lookup(value)[2]
        except KeyError as e:
            raise ValueError(f"no {what} named '{value}' on this system") from e
        return found
    raise ValueError(f"{what} must be a name or a number, not {value!r}")


def _mode(value: Any) -> int:
    if isinstance(value, str):
        try:
            mode = int(value, 8)
        except ValueError as e:
            raise ValueError(f"mode {value!r} is not an octal number") from e
    elif isinstance(value, int) and not isinstance(value, bool):
        mode = value
    else:
        raise ValueError(f'mode must be octal, as "0640" or 0o640, not {value!r}')
    if not 0 <= mode <= 0o777:
        raise ValueError(f"mode {mode:#o} has bits beyond 0777")
    return mode


def _owned(owner: Ownership, *rules: Mapping[str, int]) -> Ownership:
    fields = {"uid": owner.uid, "gid": owner.gid, "mode": owner.mode}
    for rule in rules:
        fields.update(rule)
    return Ownership(**fields)


def apply_policy(spec: ObjectSpec, policy: Policy | None) -> ObjectSpec:
    """The object with its maps' and programs' ownership as the policy says."""
    if policy is None:
        return spec
    names: dict[str, tuple[set[str], set[str]]] = {
        "map": (set(policy.map), {m.name for m in spec.maps}),
        "program": (set(policy.program) | set(policy.attach), {p.name for p in spec.programs}),
    }
    for kind, (named, known) in names.items():
        for name in sorted(named):
            if name not in known:
                raise PolicyError(
                    f"policy {policy.path}: [{kind}.{name}]: the object has no {kind} '{name}' "
                    f"(it has: {', '.join(sorted(known)) or 'none'})"
                )

    def owned_map(m: MapSpec) -> MapSpec:
        rule = policy.map.get(m.name, {})
        return dataclasses.replace(m, owner=_owned(m.owner, policy.maps, rule))

    def owned_program(p: ProgramSpec) -> ProgramSpec:
        rule = policy.program.get(p.name, {})
        owned = dataclasses.replace(p, owner=_owned(p.owner, policy.programs, rule))
        attach = policy.attach.get(p.name)
        if attach is None:
            return owned
        from bpfloader.obj.spec import ObjectStyle

        try:
            return resolved(owned, attach, libbpf=spec.style is ObjectStyle.LIBBPF)
        except LoaderError as e:
            raise PolicyError(f"policy {policy.path}: {e.reason}", section=p.section) from e

    return dataclasses.replace(
        spec,
        maps=tuple(owned_map(m) for m in spec.maps),
        programs=tuple(owned_program(p) for p in spec.programs),
    )
