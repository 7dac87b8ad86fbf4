"""Opening a pin as the kind of object the caller expects, with errors that say what is there and
what it allows; and where the loader pins an object's map or program by name."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat

from bpfloader.errors import KernelError, LoaderError, PinError, PinOpenError
from bpfloader.kernel import pins as kpins
from bpfloader.locations import DEFAULT_PIN_ROOT
from bpfloader.obj.bpftypes import PinKind


def open_pin(path: str, kind: PinKind, *, readonly: bool = False) -> int:
    """A new fd for the `kind` of object pinned at `path`. PinOpenError (an OSError with the
    kernel's errno) where the kernel would not open it; PinError for a pin of another kind."""
    try:
        fd = kpins.open_pinned(path, readonly=readonly)
    except KernelError as e:
        reason = _not_opened(path, e.errno, readonly)
        if reason is None:
            e.where(file=path)
            raise  # the errno says it all
        raise PinOpenError(e.operation, e.errno, reason=reason, file=path) from e
    found = kpins.pinned_kind(fd)
    if found is not kind:
        os.close(fd)
        raise PinError(f"a {found or 'BPF object'} pin, not a {kind} pin", file=path)
    return fd


def _not_opened(path: str, err: int, readonly: bool) -> str | None:
    """Why BPF_OBJ_GET refused `path`, from what is there; None where the errno says it."""
    if not os.path.lexists(path):
        return "no such pin" if err == errno.ENOENT else _no_search(err)
    if not kpins.is_bpffs(path):
        return "not a pin: it is not on a bpf filesystem"
    if os.path.isdir(path):
        return "a directory, not a pin"
    if err == errno.EACCES:
        return _access(path, readonly)
    return None


def _no_search(err: int) -> str | None:
    """A path that cannot be looked at: refused on the way (EACCES), or the errno says it."""
    if err != errno.EACCES:
        return None
    return (
        "BPF_OBJ_GET refused (EACCES): a directory on the way to the pin does not let you"
        " search it (x)"
    )


def _access(path: str, readonly: bool) -> str:
    """What the pin's owner, group and mode allow this process, said for a refused open."""
    try:
        st = os.stat(path)
    except OSError:
        return "BPF_OBJ_GET refused (EACCES), and the pin cannot be examined"
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == os.geteuid():
        whom, bits = "its owner (you)", mode >> 6
    elif st.st_gid == os.getegid() or st.st_gid in os.getgroups():
        whom, bits = "its group (one of yours)", mode >> 3
    else:
        whom, bits = "others (not its owner, not in its group)", mode
    can_read, can_write = bool(bits & 4), bool(bits & 2)
    asked = "read-only" if readonly else "read-write"
    pin = f"the pin is {_user(st.st_uid)}:{_group(st.st_gid)} mode {mode:04o}"
    said = f"BPF_OBJ_GET refused {asked} (EACCES): {pin}"
    if can_read and not can_write and not readonly:
        return f"{said}, which lets {whom} only read it: open it with readonly=True"
    if not can_read and not can_write:
        return f"{said}, which lets {whom} neither read nor write it"
    return f"{said}, which allows {whom} this: something else refused (an LSM?)"


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def map_pin_path(
    obj: str | None, name: str, *, pin_root: str = DEFAULT_PIN_ROOT, subdir: str = ""
) -> str:
    """Where the loader pins map `name` of object `obj` (README "Pin names"):
    PIN_ROOT[/SUBDIR]/map_FILENAME_NAME; a shared map's (`obj` None) is map__NAME. `obj` is the
    object's FILENAME or its file's name, by the rule of either format (`netd`, `netd.o`,
    `offload@mainline.o`, `minimal.bpf.o`)."""
    from bpfloader.loader import naming

    try:
        filename = "" if obj is None else naming.given_object_name(obj)
        pin = naming.map_pin_name(filename, name, shared=obj is None)
        return naming.pin_path(pin_root, naming.check_subdir(subdir, "pin directory"), pin)
    except LoaderError as e:
        raise PinError(e.reason) from e


def program_pin_path(
    obj: str, section: str, *, pin_root: str = DEFAULT_PIN_ROOT, subdir: str = ""
) -> str:
    """Where the loader pins the program of section `section` of object `obj` (README "Pin
    names"): PIN_ROOT[/SUBDIR]/prog_FILENAME_SECTION, a `$variant` dropped and what a pin may
    not hold made `_`. A libbpf section that names nothing of its own takes the function's name
    after it: give `socket/measure` for `SEC("socket") int measure`."""
    from bpfloader.loader import naming

    try:
        # `$variant` cut from the last `$`, as Android's loader cuts it; then libbpf's rule,
        # which agrees with Android's on every section Android's rule lets through.
        stem = section.rsplit("$", 1)[0]
        pin = naming.program_pin_name(naming.given_object_name(obj), stem, libbpf=True)
        return naming.pin_path(pin_root, naming.check_subdir(subdir, "pin directory"), pin)
    except LoaderError as e:
        raise PinError(e.reason) from e
