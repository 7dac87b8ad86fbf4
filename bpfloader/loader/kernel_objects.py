"""An object's plan made real: its BTF, maps and programs in the kernel (no pins).

One load sequence, used by `load`/`reload` (apply.py pins what it makes) and by `check
--kernel` (which only wants to know that the kernel takes it all): the BTF; each map created,
or the pinned one reused where the plan found a pin; each program loaded (or a pinned one
kept), the `$` variants and optional programs decided as they load; the initial slots of prog
arrays and maps of maps. Every refusal the kernel explains only by an errno is checked against
kernel/features.py, so that "map type RINGBUF needs Linux 5.8; this kernel is 4.19" is said
where it is the reason (a NotSupportedError).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bpfloader.errors import KernelError, LoaderError, PlanError, VerifierError
from bpfloader.kernel import btf as kbtf
from bpfloader.kernel import features, system
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import programs as kprogs
from bpfloader.kernel.fd import Fd
from bpfloader.loader.plan import (
    MapPlan,
    ObjectPlan,
    ProgramPlan,
    missing_types,
    planned_skips,
    variant_label,
    variant_outcome,
)
from bpfloader.loader.results import Action, Skipped
from bpfloader.obj.bpftypes import (
    BPF_F_LINK,
    BPF_F_MMAPABLE,
    BPF_F_SLEEPABLE,
    MapType,
    PinKind,
    ProgType,
    kernel_map_flags,
    map_facts,
)
from bpfloader.obj.insn import calls_subprograms
from bpfloader.obj.relocate import relocate
from bpfloader.obj.spec import MapSpec, ObjectSpec, ProgramSpec

if TYPE_CHECKING:
    from bpfloader.obj.core import Resolution
    from bpfloader.obj.ksyms import KsymPatch, Ksyms
    from bpfloader.obj.struct_ops import KernelStructOps

U32_MAX = 0xFFFFFFFF
OPTIONAL_FAILED = "optional program failed to load: "

# The object pinned at a path, if there is one there of that kind (apply.py: under the pin
# root, never through a link; check: nothing is pinned).
Pinned = Callable[[str, PinKind], Fd | None]


def nothing_pinned(path: str, kind: PinKind) -> Fd | None:
    return None


@dataclass
class LiveMap:
    """A map of the object in the kernel: made by this load, or the pinned one reused."""

    plan: MapPlan
    fd: Fd
    info: kmaps.MapInfo
    created: bool
    replaces: bool = False  # made in place of an incompatible pinned map (a reload recreating)
    note: str = ""  # why it was recreated
    # A struct_ops map made now: what the kernel takes for it, and its value (the programs'
    # fds in place), written by `register` where no link registers it.
    struct_ops: KernelStructOps | None = None
    struct_ops_value: bytes = b""

    @property
    def registered_by_link(self) -> bool:
        return bool(self.plan.spec.flags & BPF_F_LINK)


@dataclass
class LiveProgram:
    """A program of the object in the kernel: loaded by this load, or the pinned one kept."""

    plan: ProgramPlan
    fd: Fd
    info: kprogs.ProgramInfo
    loaded: bool
    replaces: bool = False  # loaded to be swapped in for the pinned one (a reload)
    load_seconds: float | None = None


@dataclass
class LoadedObject:
    """What one load made or found in the kernel for an object, and what it left out and why.
    It owns every fd in it: `close()` (or a `with` block) drops them; what has been pinned
    meanwhile stays in the kernel."""

    maps: list[LiveMap] = field(default_factory=list)
    programs: list[LiveProgram] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def close(self) -> None:
        for live_map in self.maps:
            live_map.fd.close()
        for program in self.programs:
            program.fd.close()

    def __enter__(self) -> LoadedObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class LoadMode:
    """`replace`: reload's mode, where a pinned program is loaded anew (to be swapped in) and
    an incompatible pinned map fails the object unless `recreate` lets it be made anew (its
    contents lost); otherwise a program already pinned is kept as it is."""

    replace: bool = False
    recreate: bool = False


BOOT = LoadMode()  # `load`: what is pinned is kept


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
    """Loads one object's plan into the kernel (`load`). `warn` hears what is worth a warning
    but no failure (the kernel refusing the object's BTF); `rejected` hears each optional
    program the kernel refused, with its error, which carries the verifier's log."""

    def __init__(
        self,
        obj: ObjectSpec,
        kern_version: int,
        warn: Callable[[str], None],
        rejected: Callable[[ProgramSpec, KernelError], None],
    ):
        self.obj = obj
        self.kern_version = kern_version
        self.warn = warn
        self.rejected = rejected
        self.btf: Fd | None = None
        self._core: Mapping[int, Resolution] | None = None  # CO-RE, resolved at the first use
        self._externs: ResolvedExterns | None = None  # `__ksym`, resolved at the first use
        self._struct_ops: dict[str, KernelStructOps] = {}  # by map: as this kernel takes them
        self._struct_ops_attach: dict[str, tuple[int, int]] = {}  # program -> its btf id, member

    def load(
        self, plan: ObjectPlan, pinned: Pinned = nothing_pinned, mode: LoadMode = BOOT
    ) -> LoadedObject:
        """Every map and program the plan does not skip, in the kernel; on any failure what
        was made is dropped and the error raised."""
        loaded = LoadedObject(skipped=[s for s in planned_skips(plan) if s.kind is PinKind.MAP])
        try:
            self._load_btf()
            self._resolve_struct_ops(plan)
            map_fds: dict[str, int] = {}
            for map_plan in plan.maps:
                if map_plan.action is not Action.SKIP:
                    live_map = self._map(map_plan, pinned, mode)
                    loaded.maps.append(live_map)
                    map_fds[map_plan.spec.name] = live_map.fd.number
            winners: dict[str, str] = {}  # pin path -> the section pinned there (`$` variants)
            for program_plan in plan.programs:
                why = variant_outcome(program_plan, winners) or self._left_out(program_plan)
                live = self._program(program_plan, map_fds, pinned, mode) if why is None else why
                if isinstance(live, LiveProgram):
                    loaded.programs.append(live)
                    winners[program_plan.pin_path] = program_plan.spec.section
                else:
                    skip = Skipped(
                        PinKind.PROGRAM,
                        program_plan.spec.name,
                        variant_label(program_plan) + live,
                    )
                    loaded.skipped.append(skip)
            self._fill_slots(loaded, map_fds)
            self._fill_struct_ops(loaded)
        except BaseException:
            loaded.close()
            raise
        finally:
            if self.btf is not None:
                self.btf.close()  # the maps and programs hold what they need of it
            if self._externs is not None:
                self._externs.close()
        return loaded

    def _load_btf(self) -> None:
        """Load the object's BTF, if it has any. A kernel that refuses it is worth a warning,
        not a failure: maps and programs load without it (untyped, without source lines)."""
        if self.obj.btf is None:
            return
        try:
            self.btf = Fd(kbtf.load_btf(self.obj.btf))
        except KernelError as e:
            lacking = features.unsupported(e, ("BTF", features.BTF))
            why = lacking.need if lacking else e.reason
            self.warn(
                f"{self.obj.path}: the kernel refused the object's BTF ({why}); loading without it"
            )

    @property
    def _btf_fd(self) -> int:
        return self.btf.number if self.btf is not None and not self.btf.closed else 0

    # -- maps -------------------------------------------------------------------------------

    def _map(self, plan: MapPlan, pinned: Pinned, mode: LoadMode) -> LiveMap:
        """The pinned map where the plan found one that still fits the declaration; else a
        new one (where a reload may recreate an incompatible one). A struct_ops map holds no
        data, only its programs: a reload's new programs always get a new one."""
        kernel = self._struct_ops.get(plan.spec.name)  # a struct_ops map as this kernel takes it
        if kernel is None:
            spec = self._filled(plan.spec)
        else:
            spec = dataclasses.replace(plan.spec, value_size=kernel.value_size)
        existing = None if plan.action is Action.CREATE else pinned(plan.pin_path, PinKind.MAP)
        note = ""
        if existing is not None:
            try:
                info = kmaps.map_info(existing.number)
                note = incompatibility(plan.pin_path, spec, info) or stale_data(
                    spec, existing.number, plan.pin_path
                )
            except BaseException:
                existing.close()
                raise
            renewed = kernel is not None and mode.replace
            if not note and not renewed:
                return LiveMap(plan, existing, info, created=False)
            existing.close()
            if renewed:
                note = note or "made anew with the new programs"
            # Read-only data holds nothing of the map's users: a new version simply replaces it.
            elif not (mode.replace and (mode.recreate or spec.frozen)):
                hint = " (--recreate-incompatible-maps replaces it, losing its contents)"
                raise PlanError(
                    note + (hint if mode.replace else ""), section=self.obj.maps_section
                )
        fd = self.create_map(spec) if kernel is None else self._create_struct_ops(spec, kernel)
        try:
            info = kmaps.map_info(fd.number)
        except BaseException:
            fd.close()
            raise
        return LiveMap(
            plan,
            fd,
            info,
            created=True,
            replaces=existing is not None,
            note=note,
            struct_ops=kernel,
        )

    def _filled(self, spec: MapSpec) -> MapSpec:
        """The `.kconfig` map with its value for this kernel (the config read only for an
        object that has `CONFIG_*` externs); any other map as it is."""
        layout = self.obj.kconfig
        if layout is None or spec.initial_data is not None:
            return spec
        from bpfloader.obj import kconfig
        from bpfloader.obj.global_data import KCONFIG_MAP

        if spec.name != KCONFIG_MAP:
            return spec
        config = None
        if layout.needs_config:
            try:
                config = kconfig.parse_config(system.kernel_config())
            except (OSError, ValueError) as e:
                first = next(x.name for x in layout.externs if x.name.startswith("CONFIG_"))
                raise PlanError(
                    f"extern '{first}' ({kconfig.KCONFIG_SECTION}): cannot read the kernel's "
                    f"config: {e}",
                    section=".BTF",
                ) from e
        uses = {e.name for e in layout.externs}
        facts = kconfig.KernelFacts(
            version=self.kern_version,
            bpf_cookie=features.running_kernel()[:2] >= features.BPF_COOKIE,
            syscall_wrapper="LINUX_HAS_SYSCALL_WRAPPER" in uses and system.has_syscall_wrapper(),
        )
        return dataclasses.replace(spec, initial_data=kconfig.values(layout, config, facts))

    def create_map(self, spec: MapSpec) -> Fd:
        """A new map, with its BTF types, its initial data, and frozen if it is read-only."""
        with contextlib.ExitStack() as inner:
            inner_fd = 0
            if spec.inner:
                inner_fd = inner.enter_context(
                    self._create(spec.inner, 0, f"{spec.name} (inner map)")
                ).number
            fd = self._create(spec, inner_fd, spec.name)
        try:
            if spec.initial_data is not None:
                kmaps.update(fd.number, bytes(spec.key_size), spec.initial_data)
            if spec.frozen:
                kmaps.freeze(fd.number)
        except KernelError as e:
            fd.close()
            lacking = features.unsupported(e, ("global data", features.GLOBAL_DATA))
            why = lacking.need if lacking else e.reason
            raise (lacking or e).explained(
                f"map '{spec.name}': {why}", section=self.obj.maps_section
            ) from e
        return fd

    def _create(self, spec: MapSpec, inner_fd: int, what: str) -> Fd:
        typed = bool(self._btf_fd and spec.btf_value_type_id) and map_facts(spec.type).takes_btf
        try:
            return Fd(self._create_map(spec, inner_fd, typed))
        except KernelError as e:
            if typed:
                # As libbpf does: types the kernel will not take for this map are no reason
                # not to have the map.
                with contextlib.suppress(KernelError):
                    fd = Fd(self._create_map(spec, inner_fd, typed=False))
                    self.warn(f"map '{what}': created without its BTF types ({e.reason})")
                    return fd
            needs = features.map_type_need(spec.type)
            if spec.flags & BPF_F_MMAPABLE:
                needs.append(("BPF_F_MMAPABLE (global data maps)", features.MMAPABLE_MAPS))
            lacking = features.unsupported(e, *needs)
            why = lacking.need if lacking else ""
            if not why and not typed and map_facts(spec.type).needs_btf:  # the plan saw types
                why = (
                    f"a {MapType(spec.type).name} map needs BTF types, and "
                    f"{missing_types(self.obj, spec.name, refused=True)}: {e.reason}"
                )
            raise (lacking or e).explained(
                f"map '{what}': {why or e.reason}", section=self.obj.maps_section
            ) from e

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
            btf_fd=self._btf_fd if typed else 0,
            btf_key_type_id=spec.btf_key_type_id if typed else 0,
            btf_value_type_id=spec.btf_value_type_id if typed else 0,
            map_extra=spec.map_extra,
        )

    def _fill_slots(self, loaded: LoadedObject, map_fds: Mapping[str, int]) -> None:
        """Put the programs (prog array) or maps (map of maps) the object declares in `values`
        into their slots: all of them in a map created now; in a map kept from before, only
        those naming a program loaded anew (a reload's new version of it)."""
        prog_fds = {p.plan.spec.name: p.fd.number for p in loaded.programs}
        loaded_now = {p.plan.spec.name for p in loaded.programs if p.loaded}
        for live in loaded.maps:
            spec = live.plan.spec
            for slot in spec.slots:
                if not (live.created or (slot.is_program and slot.target in loaded_now)):
                    continue
                target = (prog_fds if slot.is_program else map_fds).get(slot.target)
                if target is None:
                    raise LoaderError(
                        f"map '{spec.name}': element {slot.index} names '{slot.target}', which "
                        "is not loaded here",
                        section=self.obj.maps_section,
                    )
                key = slot.index.to_bytes(spec.key_size, "little")
                try:
                    kmaps.update(live.fd.number, key, target.to_bytes(4, "little"))
                except KernelError as e:
                    raise e.explained(
                        f"map '{spec.name}': element {slot.index} ('{slot.target}'): {e.reason}",
                        section=self.obj.maps_section,
                    ) from e

    # -- struct_ops maps ---------------------------------------------------------------------

    def _resolve_struct_ops(self, plan: ObjectPlan) -> None:
        """The object's struct_ops maps laid out for this kernel (its BTF read once per run),
        and from them each struct_ops program's attach_btf_id and member."""
        specs = {
            m.spec.name: m.spec
            for m in plan.maps
            if m.spec.struct_ops is not None and m.action is not Action.SKIP
        }
        if not specs:
            return
        from bpfloader.obj import struct_ops

        try:
            kernel = kbtf.kernel_target().vmlinux
            for name, spec in specs.items():
                assert spec.struct_ops is not None
                self._struct_ops[name] = struct_ops.resolve(name, spec.struct_ops, kernel)
            self._struct_ops_attach = struct_ops.program_attach(self._struct_ops, specs)
        except LoaderError as e:
            e.where(file=self.obj.path)
            raise

    def _left_out(self, plan: ProgramPlan) -> str | None:
        """Why a struct_ops program is not loaded: every map it is in sets it in a member this
        kernel's struct lacks (libbpf's rule: allowed while the member is otherwise zero)."""
        spec = plan.spec
        if spec.type != ProgType.STRUCT_OPS or spec.name in self._struct_ops_attach:
            return None
        for kernel in self._struct_ops.values():
            member = kernel.dropped.get(spec.name)
            if member is not None:
                return f"fills member '{member}', which this kernel's struct lacks"
        return None

    def _create_struct_ops(self, spec: MapSpec, kernel: KernelStructOps) -> Fd:
        from bpfloader.obj import struct_ops

        where = struct_ops.section_of(spec)
        if not self._btf_fd:
            raise LoaderError(
                f"struct_ops map '{spec.name}' needs the object's BTF, which the kernel refused "
                "(see the warning before this)",
                section=where,
            )
        try:
            return Fd(
                kmaps.create_map(
                    spec.kernel_name or spec.name,
                    spec.type,
                    spec.key_size,
                    spec.value_size,
                    spec.max_entries,
                    spec.flags,
                    btf_fd=self._btf_fd,
                    btf_vmlinux_value_type_id=kernel.value_type_id,
                )
            )
        except KernelError as e:
            needs = features.map_type_need(spec.type)
            if spec.flags & BPF_F_LINK:
                needs.append(("struct_ops maps registered by a link", features.STRUCT_OPS_LINKS))
            lacking = features.unsupported(e, *needs)
            why = lacking.need if lacking else e.reason
            raise (lacking or e).explained(
                f"struct_ops map '{spec.name}': {why}", section=where
            ) from e

    def _fill_struct_ops(self, loaded: LoadedObject) -> None:
        """Each struct_ops map made now gets its value, its programs' fds in place. One that
        a link registers is written now, and the kernel checks it as its struct's (a callback
        it requires missing, a name it knows); another is registered when written: `register`,
        once its pins are published."""
        prog_fds = {p.plan.spec.name: p.fd.number for p in loaded.programs}
        for live in loaded.maps:
            kernel = live.struct_ops
            if kernel is None:
                continue
            name = live.plan.spec.name
            missing = sorted({p for _, p in kernel.slots} - set(prog_fds))
            if missing:
                from bpfloader.obj.struct_ops import section_of

                raise LoaderError(
                    f"struct_ops map '{name}': program '{missing[0]}' is not loaded here",
                    section=section_of(live.plan.spec),
                )
            live.struct_ops_value = kernel.value(prog_fds)
            if live.registered_by_link:
                write_struct_ops(live)

    # -- programs ---------------------------------------------------------------------------

    def _program(
        self, plan: ProgramPlan, map_fds: Mapping[str, int], pinned: Pinned, mode: LoadMode
    ) -> LiveProgram | str:
        """The program loaded (or, outside a reload, the pinned one kept); or why an optional
        one the kernel refused is left out."""
        spec = plan.spec
        existing = None if plan.action is Action.LOAD else pinned(plan.pin_path, PinKind.PROGRAM)
        if existing is not None and not mode.replace:
            try:
                info = kprogs.program_info(existing.number)
            except BaseException:
                existing.close()
                raise
            if info.type != spec.type:
                existing.close()
                raise PlanError(
                    f"pinned program {plan.pin_path} is of type {info.type}, "
                    f"the object declares {spec.type.name} ({int(spec.type)})",
                    section=spec.section,
                )
            return LiveProgram(plan, existing, info, loaded=False)
        if existing is not None:
            existing.close()  # a reload: the one pinned is swapped out when this one is in
        try:
            program = self.load_program(spec, map_fds)
        except KernelError as e:
            e.where(file=self.obj.path, section=spec.section, program=spec.name)
            if not spec.optional:
                raise  # reported once, as the object's failure, which carries the verifier log
            self.rejected(spec, e)
            return OPTIONAL_FAILED + e.reason
        fd = Fd(program.fd)
        try:
            info = kprogs.program_info(fd.number)
        except BaseException:
            fd.close()
            raise
        return LiveProgram(
            plan,
            fd,
            info,
            loaded=True,
            replaces=existing is not None,
            load_seconds=program.load_seconds,
        )

    def core_relocated(self, spec: ProgramSpec) -> bytes | None:
        """The program's instructions with its CO-RE relocations applied against the running
        kernel's BTF (read, and the object's relocations resolved, the first time a program
        has any); None where it has none."""
        if not spec.core_relos or self.obj.core is None:
            return None
        from bpfloader.obj import core

        try:
            if self._core is None:
                self._core = core.resolve(self.obj.core, kbtf.kernel_target())
            return core.apply(spec.instructions, spec.core_relos, self._core)
        except LoaderError as e:
            e.where(file=self.obj.path, section=spec.section)
            raise

    def externs(self, spec: ProgramSpec) -> ResolvedExterns:
        """The object's `__ksym` externs resolved against the running kernel (its BTF and
        /proc/kallsyms read, the BTF of the modules they live in opened, the first time a
        program uses one); errors name the extern."""
        if self.obj.ksyms is None or not spec.extern_refs:
            return NO_EXTERNS
        if self._externs is None:
            try:
                self._externs = resolve_externs(self.obj.ksyms)
            except LoaderError as e:
                e.where(file=self.obj.path, section=spec.section)
                raise
        return self._externs

    def load_program(self, spec: ProgramSpec, map_fds: Mapping[str, int]) -> kprogs.LoadedProgram:
        expected_attach_type = spec.expected_attach_type
        if spec.type == ProgType.STRUCT_OPS:
            attach_btf_id, expected_attach_type = self._struct_ops_attach[spec.name]
        elif spec.attach_target:
            attach_btf_id = kbtf.vmlinux_type_id(spec.attach_target, spec.attach_target_kind)
        else:
            attach_btf_id = 0
        btf_fd = self._btf_fd
        externs = self.externs(spec)
        code = relocate(spec, map_fds, self.core_relocated(spec), externs.patches)
        try:
            loaded = kprogs.load_program(
                name=spec.kernel_name or spec.name,
                prog_type=spec.type,
                expected_attach_type=expected_attach_type,
                instructions=code,
                license=self.obj.license,
                kern_version=self.kern_version,
                btf_fd=btf_fd,
                func_info=spec.func_info if btf_fd else (),
                line_info=spec.line_info if btf_fd else (),
                attach_btf_id=attach_btf_id,
                prog_flags=spec.prog_flags,
                fd_array=externs.fd_array,
            )
        except KernelError as e:
            explained = (
                self._poisoned(spec, e) or self._unresolved_call(spec, externs, e) or _no_address(e)
            )
            if explained:
                raise e.explained(explained) from e
            needs = features.prog_type_need(spec.type)
            if any(ref.offset is not None for ref in spec.map_refs):
                needs.append(("global data", features.GLOBAL_DATA))
            if calls_subprograms(spec.instructions):
                needs.append(("bpf-to-bpf calls", features.SUBPROGRAM_CALLS))
            if spec.prog_flags & BPF_F_SLEEPABLE:
                needs.append(("sleepable programs", features.SLEEPABLE_PROGRAMS))
            if btf_fd and spec.func_info:
                needs.append(("BTF function and line info", features.BTF_FUNC_INFO))
            lacking = features.unsupported(e, *needs)
            if lacking is not None:
                raise lacking from e
            why = self._untyped_map_in_use(e)
            if why:
                raise e.explained(f"{why} ({e.reason})") from e
            if not self.obj.license and isinstance(e, VerifierError) and _GPL_ONLY.search(e.log):
                raise e.explained(f"{e.reason} (the object has no license section)") from e
            raise
        # Every program holds the object's read-only data, as with libbpf: a tool reading a
        # program's metadata (bpftool prog show: the `bpf_metadata_*` constants) finds it
        # there. Kernels before 5.10 cannot; the program works without.
        for spec_map in self.obj.maps:
            if spec_map.frozen and spec_map.name in map_fds:
                with contextlib.suppress(KernelError):
                    kprogs.bind_map(loaded.fd, map_fds[spec_map.name])
        return loaded

    def _poisoned(self, spec: ProgramSpec, error: KernelError) -> str:
        """The verifier's refusal of an instruction CO-RE poisoned, said as the relocation
        this kernel lacks ('' for any other refusal)."""
        if not isinstance(error, VerifierError) or self.obj.core is None:
            return ""
        from bpfloader.obj import core

        # The verifier at an instruction CO-RE poisoned (`call 0xbad2310`): `N: (85) call
        # unknown#...` (re keeps the compiled pattern).
        poisoned = re.compile(rb"^(\d+): \(85\) call unknown#%d\b" % core.POISON_HELPER, re.M)
        found = poisoned.findall(error.log)
        if not found:
            return ""
        return core.poisoned_relocation(self.obj.core, spec.core_relos, int(found[-1]))

    def _unresolved_call(
        self, spec: ProgramSpec, externs: ResolvedExterns, error: KernelError
    ) -> str:
        """The verifier's refusal of a call of a __weak kfunc this kernel lacks, said so ('' for
        any other refusal)."""
        if not isinstance(error, VerifierError) or not spec.extern_refs:
            return ""
        found = _UNRESOLVED_CALL.findall(error.log)
        if not found:
            return ""
        from bpfloader.obj import ksyms

        return ksyms.unresolved_call(spec.extern_refs, externs.patches, int(found[-1]))

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
        cause = missing_types(self.obj, name, refused=not self._btf_fd)
        return f"map '{name}' holds a {needs}, which needs the map's BTF types, and {cause}"


# The verifier at a call of a __weak kfunc this kernel lacks (imm 0), which it reached.
_UNRESOLVED_CALL = re.compile(rb"^(\d+): \(85\) call #0\b", re.MULTILINE)
# ... at a typed `__ksym` variable whose address the kernel's kallsyms lacks.
_NO_ADDRESS = re.compile(rb"ldimm64 failed to find the address for kernel symbol '([^']*)'")
# The verifier's words for a lock or timer in a map without BTF (kernel/bpf/verifier.c).
_NEEDS_MAP_BTF = re.compile(r"map '([^']*)' has to have BTF in order to use (bpf_\w+)")
# ... and for a GPL-only helper called by a program loaded with a license that is not GPL's:
# a libbpf-style object without a license section is loaded with an empty one, as by libbpf.
_GPL_ONLY = re.compile(rb"cannot call GPL-restricted function")


@dataclass(frozen=True)
class ResolvedExterns:
    """An object's `__ksym` externs on the running kernel: each one's instruction patch, the
    programs' `fd_array` (index 0 unused, then the BTF fd of each module a kfunc lives in),
    and the module BTF fds this holds open while the object loads."""

    patches: Mapping[str, KsymPatch]
    fd_array: tuple[int, ...]
    fds: tuple[Fd, ...]

    def close(self) -> None:
        for fd in self.fds:
            fd.close()


NO_EXTERNS = ResolvedExterns({}, (), ())


def resolve_externs(ksyms_: Ksyms) -> ResolvedExterns:
    """Resolve `ksyms_` against the running kernel: typed variables and kfuncs in its BTF
    (vmlinux's, then the modules'), typeless symbols in /proc/kallsyms."""
    from bpfloader.obj import ksyms

    target = kbtf.kernel_target() if ksyms_.needs_btf else None
    addresses = None
    if ksyms_.needs_kallsyms:
        wanted = {k.name for k in ksyms_.externs if k.kind is ksyms.KsymKind.TYPELESS}
        try:
            text = system.kallsyms()
        except OSError as e:
            raise LoaderError(
                f"extern '{min(wanted)}' ({ksyms.KSYMS_SECTION}): cannot read "
                f"{system.KALLSYMS}: {e.strerror}",
                section=".BTF",
            ) from e
        addresses = ksyms.kallsyms_addresses(text, wanted)
    values = ksyms.resolve(ksyms_, target, addresses)
    modules = {v.module for v in values.values() if v.found and v.module}
    fds = kbtf.kernel_btf_fds(modules) if modules else {}
    numbers = {name: fd.number for name, fd in fds.items()}
    in_array = ksyms.fd_array_modules(ksyms_, values)
    fd_array = (0, *(numbers[m] for m in in_array)) if in_array else ()
    return ResolvedExterns(ksyms.patches(ksyms_, values, numbers), fd_array, tuple(fds.values()))


def _no_address(error: KernelError) -> str:
    """The verifier's refusal of a typed `__ksym` variable whose address the kernel cannot
    find, said with the cause ('' for any other refusal)."""
    if not isinstance(error, VerifierError):
        return ""
    found = _NO_ADDRESS.search(error.log)
    if found is None:
        return ""
    name = found.group(1).decode(errors="replace")
    from bpfloader.obj.ksyms import KSYMS_SECTION

    return (
        f"extern '{name}' ({KSYMS_SECTION}): the kernel cannot find its address (a kernel "
        "built without CONFIG_KALLSYMS_ALL knows only the addresses of functions)"
    )


def write_struct_ops(live: LiveMap) -> None:
    """Write a struct_ops map's value: the kernel checks it as an instance of its struct, and,
    for a map no link registers, registers it."""
    spec, kernel = live.plan.spec, live.struct_ops
    assert kernel is not None
    try:
        kmaps.update(live.fd.number, bytes(spec.key_size), live.struct_ops_value)
    except KernelError as e:
        ops = spec.struct_ops
        assert ops is not None
        from bpfloader.obj.struct_ops import section_of

        raise e.explained(
            f"struct_ops map '{spec.name}': the kernel refused it as a struct {ops.type_name} "
            f"({e.reason}: a callback the kernel requires is missing, or a value it checks is "
            "wrong or taken, such as the name; the kernel's log says which)",
            section=section_of(spec),
        ) from e


def incompatibility(path: str, spec: MapSpec, info: kmaps.MapInfo) -> str:
    """How a pinned map differs from the object's declaration ('' when it does not), the
    declaration taken as the kernel reports a map made from it (flags it adds or drops)."""
    for field_name, expected, found in (
        ("type", int(spec.type), info.type),
        ("key_size", spec.key_size, info.key_size),
        ("value_size", spec.value_size, info.value_size),
        ("max_entries", effective_max_entries(spec), info.max_entries),
        ("map_flags", kernel_map_flags(spec.type, spec.flags), info.flags),
    ):
        if expected != found:
            return (
                f"map '{spec.name}': pinned map {path} has {field_name} {found}, "
                f"the object declares {expected}"
            )
    return ""


def stale_data(spec: MapSpec, fd: int, path: str) -> str:
    """How a pinned read-only data map differs from the object's data ('' when it does not):
    a program of the new object would read the old constants."""
    if not spec.frozen or spec.initial_data is None:
        return ""
    if kmaps.lookup(fd, bytes(spec.key_size), spec.value_size) == spec.initial_data:
        return ""
    return f"map '{spec.name}': pinned read-only data {path} holds other values than the object's"
