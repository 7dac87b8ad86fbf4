"""The pin naming contract (README.md, "Pin names"): what other processes rely on to find pins."""

from __future__ import annotations

import os
import re

from bpfloader.errors import PlanError

# bpffs refuses '.'; we pin only names that every shell, unit file and tool handles plainly.
_PIN_COMPONENT = re.compile(r"[A-Za-z0-9_\-]+")
# What a libbpf section's target may hold that a pin name may not (`uprobe/libc.so.6:malloc`,
# `kprobe/do_sys_openat2+0x4`): each such character becomes '_'.
_NOT_IN_PIN = re.compile(r"[^A-Za-z0-9_\-]")
MAX_COMPONENT = 255
# The loader's private staging directory at the top of the pin root: no object may pin there.
STAGING_DIR = "bpfloader_staging"


def object_name(path: str, *, libbpf: bool = False) -> str:
    """FILENAME. Android-format: the basename cut at the last '.', then at the last '@' (as
    Android's loader names it). libbpf-style: the basename up to its first '.', the object
    name libbpf gives it (`minimal.bpf.o` -> `minimal`)."""
    base = os.path.basename(path)
    if libbpf:
        base = base.split(".", 1)[0]
    else:
        if "." in base:
            base = base[: base.rindex(".")]
        if "@" in base:
            base = base[: base.rindex("@")]
    if not base:
        # An empty FILENAME would pin maps as `map__NAME`, the names of shared maps.
        raise PlanError(f"object file name {os.path.basename(path)!r} gives an empty FILENAME")
    return base


def given_object_name(given: str) -> str:
    """FILENAME from what a client names an object by (client/pinned.py): FILENAME itself, or
    the object's file name by the rule of either format (`netd`, `netd.o`, `offload@mainline.o`,
    `minimal.bpf.o`). Where both rules give a valid name they give the same: Android's can be
    valid and differ only by cutting at an '@' that libbpf's keeps, and no pin name holds '@'."""
    base = os.path.basename(given)
    android, libbpf = object_name(base), object_name(base, libbpf=True)
    return android if _PIN_COMPONENT.fullmatch(android) else check_component(libbpf, "object name")


def check_component(name: str, what: str) -> str:
    """Refuse, before any syscall, a name that bpffs would refuse or that could leave its dir."""
    if _PIN_COMPONENT.fullmatch(name) and len(name) <= MAX_COMPONENT:
        return name
    if not name:
        reason = "is empty"
    elif "." in name:
        reason = "contains '.', which bpffs refuses"
    elif "/" in name:
        reason = "contains '/'"
    elif len(name) > MAX_COMPONENT:
        reason = f"is longer than {MAX_COMPONENT} characters"
    else:
        reason = "may hold only letters, digits, '_' and '-'"
    raise PlanError(f"{what} {name!r} {reason}")


def check_not_reserved(subdir: str, what: str) -> None:
    """Refuse a directory under the pin root that would be the staging directory (or in it):
    pins published there would be taken for leftovers of a run and removed by the next one."""
    parts = [p for p in subdir.split("/") if p]
    if parts[:1] == [STAGING_DIR]:
        raise PlanError(
            f"{what} {subdir!r} is reserved: {STAGING_DIR} is the loader's staging directory"
        )


def check_subdir(subdir: str, what: str) -> str:
    """A relative directory under the pin root: components checked one by one, no '..', not
    the staging directory."""
    parts = [p for p in subdir.split("/") if p]
    for part in parts:
        if part == "..":
            raise PlanError(f"{what} {subdir!r} would escape the pin root ('..')")
        check_component(part, what)
    check_not_reserved(subdir, what)
    return "/".join(parts)


def map_pin_name(object_name: str, map_name: str, *, shared: bool) -> str:
    return check_component(f"map_{'' if shared else object_name}_{map_name}", "map pin name")


def program_pin_name(object_name: str, section: str, *, libbpf: bool = False) -> str:
    """prog_FILENAME_PROGTYPE_PROGNAME; `section` is already stripped of its `$variant`.
    Android's sections have '/' replaced by '_' (anything else a pin may not hold is refused);
    a libbpf section has every such character replaced: its target is a path, a symbol or an
    offset (`uprobe/libc.so.6:malloc` -> `uprobe_libc_so_6_malloc`)."""
    stem = _NOT_IN_PIN.sub("_", section) if libbpf else section.replace("/", "_")
    return check_component(f"prog_{object_name}_{stem}", "program pin name")


def pin_path(pin_root: str, subdir: str, name: str) -> str:
    return os.path.join(pin_root, subdir, name) if subdir else os.path.join(pin_root, name)


def given_pin_path(pin_root: str, relative: str, what: str) -> str:
    """A pin path an object gives whole (Android's 2026 `pin_location`, under the pin root):
    its directories and name checked as every other's."""
    directory, _, name = relative.rpartition("/")
    subdir = check_subdir(directory, f"{what} directory")
    return pin_path(pin_root, subdir, check_component(name, what))
