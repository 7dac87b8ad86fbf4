"""Declared attachments: a policy file says where a program attaches once loaded, in the
target syntax of `bpfloader attach` (client/targets.py), and the loader attaches it after the
object's pins are published, pinning each BPF link beside the program.

    [program.count_switches]
    attach = ["tracepoint:sched:sched_switch"]     # or tables: {target = "...", optional = true}

    [program.handle_exec]
    attach = "auto"                                 # the target its section names, as libbpf's
                                                    # skeleton attaches it (tp/, kprobe/, ...)

Each link is pinned as `link_FILENAME_PROGRAM` in the program's pin directory, with the
program's owner, group and mode; a program's second attachment adds `_2`, and so on; an
attachment held by several links (a perf event per CPU) adds each link's name (`_cpu0`). An
attachment that fails fails its object (rolled back, nothing of it left) unless optional.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from bpfloader.errors import LoaderError

if TYPE_CHECKING:
    from bpfloader.client.attachment import Attachment
    from bpfloader.obj.spec import ProgramSpec

# A program's attachments as a policy file declares them: (target or "auto", optional) each.
Declared = tuple[tuple[str, bool], ...]

ATTACH_KEY = "attach"
AUTO = "auto"
# The kinds of target (the text before the first ':'): client/targets.py's TARGETS, named
# here so that a policy file is checked without importing the attach code (a test keeps both
# the same).
KINDS = (
    "tracepoint",
    "kprobe",
    "kretprobe",
    "uprobe",
    "uretprobe",
    "raw_tracepoint",
    "fentry",
    "fexit",
    "fmod_ret",
    "tp_btf",
    "lsm",
    "perf_event",
    "cgroup",
    "xdp",
    "tc",
)
# libbpf's sections that name their target -> how the target is written (`auto`).
_AUTO_LIBBPF = {
    "tp": "tracepoint",
    "tracepoint": "tracepoint",
    "kprobe": "kprobe",
    "kretprobe": "kretprobe",
    "uprobe": "uprobe",
    "uretprobe": "uretprobe",
    "raw_tp": "raw_tracepoint",
    "raw_tracepoint": "raw_tracepoint",
    "fentry": "fentry",
    "fentry.s": "fentry",
    "fexit": "fexit",
    "fexit.s": "fexit",
    "fmod_ret": "fmod_ret",
    "fmod_ret.s": "fmod_ret",
    "lsm": "lsm",
    "lsm.s": "lsm",
    "tp_btf": "tp_btf",
}
# Android's section prefixes that name their target the same way.
_AUTO_ANDROID = ("tracepoint", "kprobe", "kretprobe")
# Kinds whose target is the program's BTF attach point, not a name after the '/'.
_TRACING = ("fentry", "fexit", "fmod_ret", "tp_btf", "lsm")


class AttachmentError(LoaderError):
    """A declared attachment that cannot be made (or declared)."""


def parse_attach(value: Any, where: str) -> Declared:
    """A policy file's `attach`: "auto", or a list of targets and {target, optional} tables.
    A ValueError says what is wrong."""
    if value == AUTO:
        return ((AUTO, False),)
    if not isinstance(value, list) or not value:
        raise ValueError(f'{where} must be "auto" or a list of targets')
    found = []
    for item in value:
        target, optional = item, False
        if isinstance(item, dict):
            unknown = set(item) - {"target", "optional"}
            if unknown or "target" not in item:
                raise ValueError(f"{where}: a table there holds target and optional, not {item}")
            target, optional = item["target"], item.get("optional", False)
        if not isinstance(target, str) or not isinstance(optional, bool):
            raise ValueError(f"{where}: {item!r} is not a target")
        kind = target.partition(":")[0]
        if kind not in KINDS:
            raise ValueError(
                f"{where}: {target!r} is not a target (kinds: {', '.join(KINDS)}; "
                "`bpfloader attach --help` shows each)"
            )
        found.append((target, optional))
    return tuple(found)


def resolved(spec: ProgramSpec, attach: Declared, libbpf: bool) -> ProgramSpec:
    """`spec` with its attachments, `auto` made the target its section names."""
    import dataclasses

    from bpfloader.obj.spec import AttachSpec

    targets = tuple(
        AttachSpec(auto_target(spec, libbpf) if target == AUTO else target, optional)
        for target, optional in attach
    )
    return dataclasses.replace(spec, attach=targets)


def auto_target(spec: ProgramSpec, libbpf: bool) -> str:
    """The target a program's section names, in the target syntax (`tp/sched/sched_switch` ->
    `tracepoint:sched:sched_switch`); an AttachmentError for a section that names none."""
    section = spec.base_section
    kind, _, name = section.partition("/")
    written = _AUTO_LIBBPF.get(kind) if libbpf else (kind if kind in _AUTO_ANDROID else None)
    if written is None or (not name and written not in _TRACING):
        raise AttachmentError(
            f"program {spec.name}: attach = \"auto\": section '{section}' names no target; "
            "write where it attaches (`bpfloader attach --help` shows the syntax)",
            section=spec.section,
        )
    if written in _TRACING:
        return written
    if written == "tracepoint":
        return "tracepoint:" + name.replace("/", ":", 1)
    return f"{written}:{name}"


def attach(program_fd: int, pin: str, target: str) -> Attachment:
    """Attach a program the loader holds (the client's code does it, on its own copy of the
    fd: imported only when some object declares an attachment)."""
    from bpfloader.client.programs import Program
    from bpfloader.client.targets import attach as attach_target

    with Program(os.dup(program_fd), pin) as program:
        return attach_target(program, target)


def link_pin_path(base: str, index: int) -> str:
    """The pin of a program's attachment number `index` (from 0): `base`, `base_2`, ..."""
    return base if index == 0 else f"{base}_{index + 1}"


def link_pin_names(base: str, index: int, attachment: Attachment) -> list[tuple[str, int]]:
    """(pin path, link fd) of each link of a program's attachment number `index` (from 0)."""
    stem = link_pin_path(base, index)
    if len(attachment.links) == 1:
        return [(stem, attachment.links[0][1])]
    return [(f"{stem}_{name}", fd) for name, fd in attachment.links]


def link_pin_base(program_pin: str, object_name: str, program: str) -> str:
    """Where a program's links are pinned: `link_FILENAME_PROGRAM` beside its pin."""
    return os.path.join(os.path.dirname(program_pin), f"link_{object_name}_{program}")
