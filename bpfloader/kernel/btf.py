"""BTF in the kernel: load an object's BTF (BPF_BTF_LOAD), read a loaded one back by its id (a
map's types, for the client), and find types in the kernel's own.

The kernel's BTF (/sys/kernel/btf/vmlinux) is read only when a program needs a type from it
(fentry/, fexit/, lsm/, tp_btf/, iter/ programs), once per process; and parsed whole, as the
target of CO-RE relocations, only when an object has some (`kernel_target`), once per process.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import threading
from collections.abc import Collection
from typing import TYPE_CHECKING

from bpfloader.errors import KernelError, LoaderError
from bpfloader.kernel.attrs import BtfInfoStruct, BtfLoadAttr, GetIdAttr, InfoAttr
from bpfloader.kernel.fd import Fd
from bpfloader.kernel.syscall import Cmd, bpf, objects_by_id

if TYPE_CHECKING:
    from bpfloader.obj.btf import Kind
    from bpfloader.obj.core import TargetBtf

BTF_DIR = "/sys/kernel/btf"
VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
LOG_SIZE = 1 << 20
LOG_MAX_SIZE = 64 << 20
MAX_LOADED_SIZE = 16 << 20  # the kernel's BTF_MAX_SIZE: no BTF it loaded for an object is larger


class BtfLoadError(KernelError):
    """BPF_BTF_LOAD was refused; `log` is what the kernel's BTF checker said."""

    def __init__(self, err: int, log: str):
        lines = [line for line in log.splitlines() if line.strip()]
        super().__init__("BPF_BTF_LOAD", err, " | ".join(lines[-2:]))
        self.log = log


def load_btf(raw: bytes) -> int:
    """A BTF fd for `raw`. The log is only asked for when the kernel refuses."""
    data = ctypes.create_string_buffer(raw, len(raw))
    attr = BtfLoadAttr(btf=ctypes.addressof(data), btf_size=len(raw))
    try:
        return bpf(Cmd.BTF_LOAD, attr)
    except KernelError:
        pass
    size = LOG_SIZE
    while True:
        log = ctypes.create_string_buffer(size)
        attr.btf_log_buf, attr.btf_log_size, attr.btf_log_level = ctypes.addressof(log), size, 1
        try:
            return bpf(Cmd.BTF_LOAD, attr)
        except KernelError as e:
            if e.errno == errno.ENOSPC and size < LOG_MAX_SIZE:
                size *= 4
                continue
            raise BtfLoadError(e.errno, log.value.decode(errors="replace")) from e


def loaded_btf(btf_id: int) -> bytes:
    """The raw bytes of the BTF object `btf_id` (a map's `btf_id`, which holds its key and value
    types): BPF_BTF_GET_FD_BY_ID, then BPF_OBJ_GET_INFO_BY_FD asked for its size and then for
    the bytes. The kernel gives a BTF fd by id only to CAP_SYS_ADMIN: KernelError EPERM for
    anyone else. A BTF larger than any the kernel loads for an object is refused unread."""
    attr_id = GetIdAttr(id=btf_id)
    with Fd(bpf(Cmd.BTF_GET_FD_BY_ID, attr_id, operation="BPF_BTF_GET_FD_BY_ID")) as fd:
        info = BtfInfoStruct()
        attr = InfoAttr(bpf_fd=fd.number, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
        bpf(Cmd.OBJ_GET_INFO_BY_FD, attr, operation="BPF_OBJ_GET_INFO_BY_FD (BTF)")
        size = info.btf_size
        if size > MAX_LOADED_SIZE:
            raise LoaderError(f"BTF {btf_id} is {size} bytes, more than the kernel loads")
        data = ctypes.create_string_buffer(size)
        info = BtfInfoStruct(btf=ctypes.addressof(data), btf_size=size)
        attr = InfoAttr(bpf_fd=fd.number, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
        bpf(Cmd.OBJ_GET_INFO_BY_FD, attr, operation="BPF_OBJ_GET_INFO_BY_FD (BTF)")
        return data.raw[: min(size, info.btf_size)]


@functools.cache
def _vmlinux_index() -> dict[tuple[Kind, str], int]:
    try:
        with open(VMLINUX_BTF, "rb") as f:
            data = f.read()
    except OSError as e:
        raise LoaderError(
            f"cannot read the kernel's BTF ({VMLINUX_BTF}: {e.strerror}); tracing programs "
            "need a kernel built with CONFIG_DEBUG_INFO_BTF"
        ) from e
    from bpfloader.obj.btf import BtfError, Kind, type_ids_by_name  # BTF's reader: only here

    try:
        return type_ids_by_name(data, (Kind.FUNC, Kind.TYPEDEF))
    except BtfError as e:
        raise LoaderError(f"{VMLINUX_BTF}: {e}") from e


def vmlinux_type_id(name: str, kind: str) -> int:
    """The id of kernel BTF type `name` of `kind` ("FUNC" or "TYPEDEF")."""
    from bpfloader.obj.btf import Kind

    found = _vmlinux_index().get((Kind[kind], name))
    if found is None:
        what = "function" if kind == "FUNC" else "type"
        raise LoaderError(f"the kernel has no {what} '{name}' in its BTF ({VMLINUX_BTF})")
    return found


_target_lock = threading.Lock()  # objects load side by side (loader/parallel.py): read once
_target: list[TargetBtf] = []


def kernel_target() -> TargetBtf:
    """The running kernel's BTF as the target of CO-RE relocations: vmlinux's, parsed whole,
    and that of each loaded module with BTF of its own (/sys/kernel/btf/MODULE, in name
    order; read here, parsed only if a type vmlinux lacks is looked for)."""
    with _target_lock:
        if not _target:
            _target.append(_read_target())
        return _target[0]


def _read_target() -> TargetBtf:
    from bpfloader.obj.btf import BtfError, parse_btf
    from bpfloader.obj.core import TargetBtf

    try:
        with open(VMLINUX_BTF, "rb") as f:
            data = f.read()
        modules = []
        for name in sorted(os.listdir(BTF_DIR)):
            if name != "vmlinux":
                with open(os.path.join(BTF_DIR, name), "rb") as f:
                    modules.append((name, f.read()))
    except OSError as e:
        raise LoaderError(
            f"cannot read the kernel's BTF ({VMLINUX_BTF}: {e.strerror}); CO-RE relocations "
            "need a kernel built with CONFIG_DEBUG_INFO_BTF"
        ) from e
    try:
        return TargetBtf(VMLINUX_BTF, parse_btf(data), tuple(modules))
    except BtfError as e:
        raise LoaderError(f"{VMLINUX_BTF}: {e}") from e


def kernel_btf_fds(names: Collection[str]) -> dict[str, Fd]:
    """Fds of the kernel's own BTF objects named `names` (`vmlinux`, or a module's name), found
    by walking the BTF ids: a program that uses a module's kfunc or variable names the
    module's BTF by fd. One that is not there (a module unloaded meanwhile) is a LoaderError."""
    found: dict[str, Fd] = {}
    try:
        for fd in objects_by_id(Cmd.BTF_GET_NEXT_ID, Cmd.BTF_GET_FD_BY_ID):
            with contextlib.ExitStack() as unless_kept:
                unless_kept.callback(fd.close)
                name = _kernel_btf_name(fd)
                if name is not None and name in names and name not in found:
                    found[name] = fd
                    unless_kept.pop_all()
            if len(found) == len(names):
                break
        missing = sorted(set(names) - set(found))
        if missing:
            raise LoaderError(f"the kernel has no BTF named {missing[0]} (a module unloaded?)")
    except BaseException:
        for fd in found.values():
            fd.close()
        raise
    return found


def _kernel_btf_name(fd: Fd) -> str | None:
    """The name of a kernel BTF (vmlinux's, a module's); None for an object's BTF."""
    name = ctypes.create_string_buffer(64)
    info = BtfInfoStruct(name=ctypes.addressof(name), name_len=len(name))
    attr = InfoAttr(bpf_fd=fd.number, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    bpf(Cmd.OBJ_GET_INFO_BY_FD, attr, operation="BPF_OBJ_GET_INFO_BY_FD (BTF)")
    return name.value.decode(errors="replace") if info.kernel_btf else None
