"""An object's specs made real: its BTF, maps and programs in the kernel (no pins).

Used by `load`/`reload` (apply.py pins what this makes) and by `check --kernel` (which only
wants to know that the kernel takes it all). Every refusal the kernel explains only by an
errno is checked against kernel/features.py, so that "map type RINGBUF needs Linux 5.8; this
kernel is 4.19" is said where it is the reason.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Mapping

from bpfloader.errors import KernelError, LoaderError, VerifierError
from bpfloader.kernel import btf as kbtf
from bpfloader.kernel import features, system
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import programs as kprogs
from bpfloader.loader.plan import missing_types
from bpfloader.obj.bpftypes import (
    BPF_F_MMAPABLE,
    BPF_F_SLEEPABLE,
    BPF_PSEUDO_CALL,
    OPCODE_CALL,
    MapType,
    map_facts,
)
from bpfloader.obj.relocate import relocate
from bpfloader.obj.spec import MapSpec, ObjectSpec, ProgramSpec

U32_MAX = 0xFFFFFFFF


def effective_max_entries(spec: MapSpec) -> int:
    """What the map is created with: a perf event array without max_entries gets one slot per
    possible CPU (as libbpf does); a ring buffer's size is rounded up to a power-of-two number
    of pages, as the kernel requires (Android's loader raises one below a page to a page, which
    this includes; libbpf rounds so too), so that an object built for 4 KiB pages loads where
    pages are larger."""
    if spec.type == MapType.PERF_EVENT_ARRAY and spec.max_entries == 0:
        return len(system.possible_cpus())
    if spec.type in (MapType.RINGBUF, MapType.USER_RINGBUF) and spec.max_entries:
        page = os.sysconf("SC_PAGE_SIZE")
        rounded: int = page << (-(-spec.max_entries // page) - 1).bit_length()
        return rounded if rounded <= U32_MAX else spec.max_entries  # too large: the kernel says
    return spec.max_entries


class KernelObjects:
    """The BTF, maps and programs of one object; `close()` drops what this holds (the BTF).
    Map and program fds returned belong to the caller."""

    def __init__(self, obj: ObjectSpec, kern_version: int, warn: Callable[[str], None]):
        self.obj = obj
        self.kern_version = kern_version
        self.warn = warn
        self.btf_fd = 0

    def load_btf(self) -> None:
        """Load the object's BTF, if it has any. A kernel that refuses it is worth a warning,
        not a failure: maps and programs load without it (untyped, without source lines)."""
        if self.obj.btf is None or self.btf_fd:
            return
        try:
            self.btf_fd = kbtf.load_btf(self.obj.btf)
        except KernelError as e:
            why = features.unsupported(e.errno, ("BTF", features.BTF))
            self.warn(
                f"{self.obj.path}: the kernel refused the object's BTF ({why or e.reason}); "
                "loading without it"
            )

    def close(self) -> None:
        if self.btf_fd:
            os.close(self.btf_fd)
            self.btf_fd = 0

    # -- maps -------------------------------------------------------------------------------

    def create_map(self, spec: MapSpec) -> int:
        """A new map, with its BTF types, its initial data, and frozen if it is read-only."""
        inner_fd = self._create(spec.inner, 0, f"{spec.name} (inner map)") if spec.inner else 0
        try:
            fd = self._create(spec, inner_fd, spec.name)
        finally:
            if inner_fd:
                os.close(inner_fd)
        try:
            if spec.initial_data is not None:
                kmaps.update(fd, bytes(spec.key_size), spec.initial_data)
            if spec.frozen:
                kmaps.freeze(fd)
        except KernelError as e:
            os.close(fd)
            why = features.unsupported(e.errno, ("global data", features.GLOBAL_DATA))
            raise LoaderError(
                f"map '{spec.name}': {why or e.reason}", section=self.obj.maps_section
            ) from None
        return fd

    def _create(self, spec: MapSpec, inner_fd: int, what: str) -> int:
        typed = bool(self.btf_fd and spec.btf_value_type_id) and map_facts(spec.type).takes_btf
        try:
            return self._create_map(spec, inner_fd, typed)
        except KernelError as e:
            if typed:
                # As libbpf does: types the kernel will not take for this map are no reason
                # not to have the map.
                with contextlib.suppress(KernelError):
                    fd = self._create_map(spec, inner_fd, typed=False)
                    self.warn(f"map '{what}': created without its BTF types ({e.reason})")
                    return fd
            needs = features.map_type_need(spec.type)
            if spec.flags & BPF_F_MMAPABLE:
                needs.append(("BPF_F_MMAPABLE (global data maps)", features.MMAPABLE_MAPS))
            why = features.unsupported(e.errno, *needs)
            if not why and not typed and map_facts(spec.type).needs_btf:  # the plan saw types
                why = (
                    f"a {MapType(spec.type).name} map needs BTF types, and "
                    f"{missing_types(self.obj, spec.name, refused=True)}: {e.reason}"
                )
            raise LoaderError(
                f"map '{what}': {why or e.reason}", section=self.obj.maps_section
            ) from None

    def _create_map(self, spec: MapSpec, inner_fd: int, typed: bool) -> int:
        return kmaps.create_map(
            spec.kernel_name or spec.name,
            spec.type,
            spec.key_size,
            spec.value_size,
            effective_max_entries(spec),
            spec.flags,
            inner_map_fd=inner_fd,
            numa_node=spec.numa_node,
            btf_fd=self.btf_fd if typed else 0,
            btf_key_type_id=spec.btf_key_type_id if typed else 0,
            btf_value_type_id=spec.btf_value_type_id if typed else 0,
            map_extra=spec.map_extra,
        )

    def fill_slots(
        self,
        spec: MapSpec,
        fd: int,
        map_fds: Mapping[str, int],
        prog_fds: Mapping[str, int],
        created: bool,
        loaded: set[str],
    ) -> None:
        """Put the programs (prog array) or maps (map of maps) the object declares in `values`
        into their slots: all of them in a map `created` now; in a map kept from before, only
        those naming a program `loaded` anew (a reload's new version of it)."""
        for slot in spec.slots:
            if not (created or (slot.is_program and slot.target in loaded)):
                continue
            target = (prog_fds if slot.is_program else map_fds).get(slot.target)
            if target is None:
                raise LoaderError(
                    f"map '{spec.name}': element {slot.index} names '{slot.target}', which is "
                    "not loaded here",
                    section=self.obj.maps_section,
                )
            key = slot.index.to_bytes(spec.key_size, "little")
            try:
                kmaps.update(fd, key, target.to_bytes(4, "little"))
            except KernelError as e:
                raise LoaderError(
                    f"map '{spec.name}': element {slot.index} ('{slot.target}'): {e.reason}",
                    section=self.obj.maps_section,
                ) from None

    # -- programs ---------------------------------------------------------------------------

    def load_program(self, spec: ProgramSpec, map_fds: Mapping[str, int]) -> kprogs.LoadedProgram:
        attach_btf_id = (
            kbtf.vmlinux_type_id(spec.attach_target, spec.attach_target_kind)
            if spec.attach_target
            else 0
        )
        try:
            loaded = kprogs.load_program(
                name=spec.function,
                prog_type=spec.type,
                expected_attach_type=spec.expected_attach_type,
                instructions=relocate(spec, map_fds),
                license=self.obj.license,
                kern_version=self.kern_version,
                btf_fd=self.btf_fd,
                func_info=spec.func_info if self.btf_fd else (),
                line_info=spec.line_info if self.btf_fd else (),
                attach_btf_id=attach_btf_id,
                prog_flags=spec.prog_flags,
            )
        except KernelError as e:
            needs = features.prog_type_need(spec.type)
            if any(ref.offset is not None for ref in spec.map_refs):
                needs.append(("global data", features.GLOBAL_DATA))
            if _calls_subprograms(spec.instructions):
                needs.append(("bpf-to-bpf calls", features.SUBPROGRAM_CALLS))
            if spec.prog_flags & BPF_F_SLEEPABLE:
                needs.append(("sleepable programs", features.SLEEPABLE_PROGRAMS))
            if self.btf_fd and spec.func_info:
                needs.append(("BTF function and line info", features.BTF_FUNC_INFO))
            why = features.unsupported(e.errno, *needs) or self._untyped_map_in_use(e)
            if why:
                e.reason = f"{why} ({e.reason})"
            raise
        # Every program holds the object's read-only data, as with libbpf: a tool reading a
        # program's metadata (bpftool prog show: the `bpf_metadata_*` constants) finds it
        # there. Kernels before 5.10 cannot; the program works without.
        for spec_map in self.obj.maps:
            if spec_map.frozen and spec_map.name in map_fds:
                with contextlib.suppress(KernelError):
                    kprogs.bind_map(loaded.fd, map_fds[spec_map.name])
        return loaded

    def _untyped_map_in_use(self, error: KernelError) -> str:
        """The verifier's refusal of a bpf_spin_lock or bpf_timer in a map created without BTF
        types, said with the map, the cause and the fix ('' for any other refusal)."""
        if not isinstance(error, VerifierError):
            return ""
        found = _NEEDS_MAP_BTF.search(error.log.decode("utf-8", errors="replace"))
        if found is None:
            return ""
        kernel_name, needs = found.groups()
        name = next(
            (
                m.name
                for m in self.obj.maps
                if kmaps.kernel_name(m.kernel_name or m.name).decode() == kernel_name
            ),
            kernel_name,
        )
        cause = missing_types(self.obj, name, refused=not self.btf_fd)
        return f"map '{name}' holds a {needs}, which needs the map's BTF types, and {cause}"


# The verifier's words for a lock or timer in a map without BTF (kernel/bpf/verifier.c).
_NEEDS_MAP_BTF = re.compile(r"map '([^']*)' has to have BTF in order to use (bpf_\w+)")


def _calls_subprograms(code: bytes) -> bool:
    return any(
        code[i] == OPCODE_CALL and code[i + 1] >> 4 == BPF_PSEUDO_CALL
        for i in range(0, len(code), 8)
    )


def stale_data(spec: MapSpec, fd: int, path: str) -> str:
    """How a pinned read-only data map differs from the object's data ('' when it does not):
    a program of the new object would read the old constants."""
    if not spec.frozen or spec.initial_data is None:
        return ""
    if kmaps.lookup(fd, bytes(spec.key_size), spec.value_size) == spec.initial_data:
        return ""
    return f"map '{spec.name}': pinned read-only data {path} holds other values than the object's"
