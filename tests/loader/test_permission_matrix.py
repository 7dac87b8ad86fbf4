"""Pin modes, measured: who can open a pin, and how, is decided by its mode bits alone, with
Linux semantics; and no final pin path ever shows another owner or mode while the loader works.

The matrix: k_perm_matrix.c declares one map per mode the examples use (0600, 0440, 0640,
0660, 0620), two control maps (0066, 0606) and two programs (programs always pin 0440), all
owned by uid 40001 and group 40100. Forked children take on the identity of each principal
(the owner, a member of the group by primary gid, one by supplementary group only, a stranger,
and root) and try BPF_OBJ_GET read-only, write-only and read-write on every pin. Like
test_access, a child changes into the bpffs root before dropping root and opens pins by
relative path, so the test's own 0700 temporary directories stay out of the way while the pin
root (which the loader makes traversable) is still searched as that principal.

The watcher: a forked root process lstat()s every final pin path in a tight loop while the
loader (in-process) loads and unloads 50 times, then reloads 50 times with programs that
change, so they are replaced by rename-exchange. The same watcher checks that a reused map whose
declared owner and mode change on reload is never seen with a mix of the old and the new ones
(it was, when the loader changed the live pin chmod-then-chown: the new owner and mode now come
with a second pin of the same map, swapped in).
"""

from __future__ import annotations

import ctypes
import errno
import io
import json
import mmap
import os
import stat
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bpfloader.errors import KernelError
from bpfloader.journal import ConsoleReporter
from bpfloader.kernel import pins as kpins
from bpfloader.kernel.attrs import ObjAttr
from bpfloader.kernel.syscall import Cmd, bpf
from bpfloader.loader.results import Action, Status
from bpfloader.loader.run import LoadOptions, RunResult, load, reload
from bpfloader.loader.unload import unload
from tests.conftest import (
    Compile,
    child_result,
    fork_child,
    in_child,
    mounted_bpffs,
    pins_in,
)
from tests.reload_support import install

pytestmark = pytest.mark.kernel

SOURCE = "k_perm_matrix.c"
OWNER_UID, GROUP_GID = 40001, 40100  # as k_perm_matrix.c declares them
MAP_MODES = (0o600, 0o440, 0o640, 0o660, 0o620)  # the modes the examples use
# Controls: modes that grant the owner (0066) or the group (0606) less than the classes after
# them, to show that only one class of bits applies; and that "other" can reach a pin at all.
CONTROL_MODES = (0o066, 0o606)
PROGRAM_MODE = 0o440  # DEFINE_BPF_PROG declares an owner but no mode: programs pin 0440


@dataclass(frozen=True)
class Pin:
    label: str
    rel: str  # relative to the pin root
    mode: int


PINS = (
    *(Pin(f"map-{m:04o}", f"map_k_perm_matrix_pm_{m:04o}", m) for m in MAP_MODES),
    *(Pin(f"map-{m:04o}-control", f"map_k_perm_matrix_pm_{m:04o}", m) for m in CONTROL_MODES),
    Pin("prog-0440-switch", "prog_k_perm_matrix_tracepoint_sched_sched_switch", PROGRAM_MODE),
    Pin("prog-0440-wakeup", "prog_k_perm_matrix_tracepoint_sched_sched_wakeup", PROGRAM_MODE),
)


@dataclass(frozen=True)
class Principal:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


ROOT = Principal("root", 0, 0)
PRINCIPALS = (
    Principal("owner", OWNER_UID, 40200),  # owns the pins, not a member of their group
    Principal("group", 40002, GROUP_GID),  # the group as primary gid
    Principal("supplementary", 40003, 40300, (GROUP_GID,)),  # the group as supplementary only
    Principal("other", 40004, 40400),
    ROOT,  # keeps root's credentials: nothing is dropped
)

# BPF_OBJ_GET file_flags: read-only, write-only, read-write.
ACCESSES = {"ro": kpins.BPF_F_RDONLY, "wo": kpins.BPF_F_WRONLY, "rw": 0}

Matrix = dict[str, dict[str, dict[str, str]]]  # principal -> pin label -> access -> outcome


def expected_access(mode: int, who: Principal) -> dict[str, str]:
    """What Linux grants `who` on a pin OWNER_UID:GROUP_GID with `mode`.

    Exactly one class of bits applies: the owner's if the uid owns the file (even when the
    group or other bits would grant more), else the group's if the gid or a supplementary group
    is the file's group, else the other bits. Read-only needs r, write-only w, read-write both.
    """
    if who is ROOT:
        # CAP_DAC_OVERRIDE: root reads and writes any pin, whatever its mode bits say.
        return dict.fromkeys(ACCESSES, "ok")
    if who.uid == OWNER_UID:
        bits = mode >> 6 & 0o7
    elif who.gid == GROUP_GID or GROUP_GID in who.groups:
        bits = mode >> 3 & 0o7
    else:
        bits = mode & 0o7
    readable, writable = bool(bits & 0o4), bool(bits & 0o2)
    allowed = {"ro": readable, "wo": writable, "rw": readable and writable}
    return {access: "ok" if ok else "EACCES" for access, ok in allowed.items()}


def obj_get(path: str, file_flags: int) -> str:
    """BPF_OBJ_GET of `path` with `file_flags`: "ok", or the name of the errno it failed with.

    kpins.open_pinned knows read-only and read-write only; write-only needs the attr here."""
    path_buf = ctypes.create_string_buffer(os.fsencode(path))
    attr = ObjAttr(pathname=ctypes.addressof(path_buf), file_flags=file_flags)
    try:
        fd = bpf(Cmd.OBJ_GET, attr, operation="BPF_OBJ_GET")
    except KernelError as e:
        return errno.errorcode[e.errno]
    os.close(fd)
    return "ok"


def as_principal(cwd: Path, who: Principal, work: Callable[[], Any]) -> Any:
    """Run `work` in a forked child in `cwd` with the identity of `who`; its JSON result.

    The same idea as test_access.as_user, with root as one more principal (it keeps its
    credentials) and the identity checked inside the child."""

    def switched() -> Any:
        os.chdir(cwd)
        if who is not ROOT:
            os.setgroups(list(who.groups))
            os.setgid(who.gid)
            os.setuid(who.uid)
            ids = (os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups())
            if ids != (who.uid, who.uid, who.gid, who.gid, list(who.groups)):
                raise AssertionError(f"child runs as {ids}, not as {who}")
        return work()

    return in_child(switched)


# -- running the loader in-process ------------------------------------------------------------


def options(source_dir: Path, pin_root: Path, state_dir: Path) -> LoadOptions:
    return LoadOptions(source_dir=str(source_dir), pin_root=str(pin_root), state_dir=str(state_dir))


def succeeded(result: RunResult, log: io.StringIO) -> RunResult:
    """`result`, after checking that no object failed (the run's log names why if one did)."""
    assert result.count(Status.FAILED) == 0, log.getvalue()
    return result


# -- the matrix ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pin_root(compile_bpf: Compile, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """k_perm_matrix.o loaded once for the module into a private bpffs (the conftest `bpffs`
    fixture is per test; this one is the same mount, kept for every cell of the matrix)."""
    base = tmp_path_factory.mktemp("perm-matrix")
    source_dir = base / "etc-bpf"
    install(compile_bpf(SOURCE), source_dir)
    with mounted_bpffs(base / "bpffs") as root:
        log = io.StringIO()
        result = succeeded(
            load(options(source_dir, root, base / "run-bpfloader"), ConsoleReporter(log)), log
        )
        assert result.count(Status.LOADED) == 1, log.getvalue()
        assert pins_in(root) == {pin.rel for pin in PINS}
        yield root


@pytest.fixture(scope="module")
def measured(pin_root: Path) -> Matrix:
    """Every principal's outcome of every access on every pin: one forked child each."""

    def work() -> dict[str, dict[str, str]]:
        return {
            pin.label: {access: obj_get(pin.rel, flags) for access, flags in ACCESSES.items()}
            for pin in PINS
        }

    return {who.name: as_principal(pin_root, who, work) for who in PRINCIPALS}


def expected_matrix() -> Matrix:
    return {
        who.name: {pin.label: expected_access(pin.mode, who) for pin in PINS} for who in PRINCIPALS
    }


def format_matrix(matrix: Matrix) -> str:
    """One row per pin, one column per principal; a cell lists the accesses granted."""

    def cell(outcomes: dict[str, str]) -> str:
        return " ".join(
            access if outcome == "ok" else "--" if outcome == "EACCES" else outcome
            for access, outcome in outcomes.items()
        )

    names = [who.name for who in PRINCIPALS]
    width = max(len(name) for name in [*names, "ro wo rw"])
    lines = [
        f"owner uid {OWNER_UID}, group {GROUP_GID}; each cell: BPF_OBJ_GET with BPF_F_RDONLY (ro), "
        "BPF_F_WRONLY (wo), 0 (rw) succeeded, or -- for EACCES",
        f"{'pin':<18}" + "".join(f"{name:<{width + 2}}" for name in names),
    ]
    for pin in PINS:
        row = "".join(f"{cell(matrix[name][pin.label]):<{width + 2}}" for name in names)
        lines.append(f"{pin.label:<18}{row}")
    return "\n".join(line.rstrip() for line in lines)


def test_the_expected_matrix_is_not_trivial() -> None:
    """The control for the expectation itself: every principal but root is granted something
    and refused something, each of the three classes differently."""
    expected = expected_matrix()
    for who in PRINCIPALS:
        outcomes = {o for row in expected[who.name].values() for o in row.values()}
        assert outcomes == ({"ok"} if who is ROOT else {"ok", "EACCES"}), who
    assert expected["group"] == expected["supplementary"]
    rows = {json.dumps(expected[name], sort_keys=True) for name in ("owner", "group", "other")}
    assert len(rows) == 3


@pytest.mark.parametrize("pin", PINS, ids=lambda pin: pin.label)
def test_pin_has_the_declared_owner_and_mode(pin_root: Path, pin: Pin) -> None:
    st = os.lstat(pin_root / pin.rel)
    assert stat.S_ISREG(st.st_mode)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (OWNER_UID, GROUP_GID, pin.mode)


@pytest.mark.parametrize("who", PRINCIPALS, ids=lambda who: who.name)
@pytest.mark.parametrize("pin", PINS, ids=lambda pin: pin.label)
def test_access_follows_the_mode_bits(measured: Matrix, pin: Pin, who: Principal) -> None:
    assert measured[who.name][pin.label] == expected_access(pin.mode, who)


def test_whole_matrix(measured: Matrix) -> None:
    """The whole table at once, printed (pytest -s) for the record."""
    print(f"\nmeasured access matrix (kernel {os.uname().release}):")
    print(format_matrix(measured))
    assert measured == expected_matrix()


# -- the watcher ------------------------------------------------------------------------------

PHASES = {1: "load+unload", 2: "reload (programs replaced)", 3: "control (a pin chmod 0666)"}
Stat = tuple[int, int, int, int]  # uid, gid, permission bits, file type bits


@dataclass
class Watcher:
    """A forked root process lstat()ing the watched paths until told to stop.

    Shared memory: [0] stop flag, [1] the phase the parent is in, [8:16] loops done."""

    pid: int
    read_end: int
    shared: mmap.mmap

    @classmethod
    def start(cls, allowed: Mapping[str, tuple[Stat, ...]]) -> Watcher:
        shared = mmap.mmap(-1, 16)
        pid, read_end = fork_child(lambda: watch(shared, allowed))
        watcher = cls(pid, read_end, shared)
        watcher.wait_loops(100)
        return watcher

    def loops(self) -> int:
        return int(struct.unpack_from("Q", self.shared, 8)[0])

    def wait_loops(self, count: int) -> None:
        target = self.loops() + count
        deadline = time.monotonic() + 10
        while self.loops() < target:
            assert time.monotonic() < deadline, "the watcher does not get going"
            time.sleep(0.0005)

    def enter(self, phase: int) -> None:
        """Start `phase`, once the watcher has seen it: each observation is in the right one."""
        self.shared[1] = phase
        self.wait_loops(2)

    def stop(self) -> dict[str, Any]:
        self.shared[0] = 1
        report: dict[str, Any] = child_result(self.pid, self.read_end)
        return report


def watch(shared: mmap.mmap, allowed: Mapping[str, tuple[Stat, ...]]) -> dict[str, Any]:
    """The watcher's loop: per phase, how often a path existed, was missing, or existed with
    an owner, group, mode or type not among the allowed ones (and each such state seen)."""
    existing = dict.fromkeys(PHASES, 0)
    missing = dict.fromkeys(PHASES, 0)
    wrong = dict.fromkeys(PHASES, 0)
    wrong_states: Counter[tuple[int, str, int, int, str]] = Counter()
    watched = list(allowed.items())
    loops = 0
    while shared[0] == 0:
        phase = shared[1]
        for path, want in watched:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                if phase:
                    missing[phase] += 1
                continue
            if not phase:
                continue
            existing[phase] += 1
            got = (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), stat.S_IFMT(st.st_mode))
            if got not in want:
                wrong[phase] += 1
                wrong_states[phase, path, st.st_uid, st.st_gid, oct(st.st_mode)] += 1
        loops += 1
        struct.pack_into("Q", shared, 8, loops)
    return {
        "loops": loops,
        "existing": existing,
        "missing": missing,
        "wrong": wrong,
        "wrong_states": [[*state, count] for state, count in wrong_states.items()],
    }


def test_no_pin_path_ever_shows_another_owner_or_mode(
    compile_bpf: Compile, source_dir: Path, bpffs: Path, state_dir: Path
) -> None:
    """50 rounds of load+unload, then 50 reloads alternating two versions of the programs (so
    both are replaced, by rename-exchange, and the maps kept) under the watcher. A last phase
    chmods one pin 0666 on purpose: the control that the watcher does see a wrong mode."""
    versions = [compile_bpf(SOURCE, None, f"-DVERSION={v}") for v in (1, 2)]
    opts = options(source_dir, bpffs, state_dir)
    log = io.StringIO()
    reporter = ConsoleReporter(log)
    declared = {
        str(bpffs / pin.rel): ((OWNER_UID, GROUP_GID, pin.mode, stat.S_IFREG),) for pin in PINS
    }
    everything = {pin.rel for pin in PINS}
    (control,) = (bpffs / pin.rel for pin in PINS if pin.label == "map-0640")

    install(versions[0], source_dir)
    watcher = Watcher.start(declared)
    try:
        watcher.enter(1)
        started = time.monotonic()
        for _ in range(50):
            succeeded(load(opts, reporter), log)
            assert pins_in(bpffs) == everything
            assert len(succeeded(unload(opts, reporter, []), log).removed) == len(PINS)
            assert pins_in(bpffs) == set()
        succeeded(load(opts, reporter), log)

        watcher.enter(2)
        for round_ in range(50):
            install(versions[(round_ + 1) % 2], source_dir)
            (obj,) = succeeded(reload(opts, reporter), log).objects
            actions = {(pin.kind, pin.action) for pin in obj.pins}
            assert actions == {("map", Action.REUSE), ("program", Action.REPLACE)}, log.getvalue()
        loader_seconds = time.monotonic() - started

        watcher.enter(3)
        os.chmod(control, 0o666)
        watcher.wait_loops(50)
        os.chmod(control, 0o640)
        watcher.wait_loops(2)
    finally:
        report = watcher.stop()

    print(
        f"\nwatcher: {report['loops']} loops over {len(PINS)} paths in "
        f"{loader_seconds:.1f}s of loader runs (50 load+unload, 50 reloads)"
    )
    for phase, name in PHASES.items():
        key = str(phase)
        print(
            f"  phase {phase} {name}: {report['existing'][key]} observations of an existing "
            f"pin, {report['missing'][key]} of a missing one, {report['wrong'][key]} wrong"
        )
    for *state, count in report["wrong_states"]:
        print(f"  wrong (phase, path, uid, gid, mode): {tuple(state)} x{count}")

    existing, missing, wrong = (report[k] for k in ("existing", "missing", "wrong"))
    assert (wrong["1"], wrong["2"]) == (0, 0), report["wrong_states"]
    # Not vacuous: pins were seen while they existed, in every phase, and seen coming and going
    # during load+unload; and the wrong mode set on purpose was seen, and only that.
    assert existing["1"] + existing["2"] > 1000
    assert existing["1"] > 100 and missing["1"] > 100
    assert existing["2"] > 1000 and missing["2"] == 0  # rename-exchange: never a gap
    assert wrong["3"] > 0
    assert [state for *state, _ in report["wrong_states"]] == [
        [3, str(control), OWNER_UID, GROUP_GID, oct(stat.S_IFREG | 0o666)]
    ]


OLD_OWNER: Stat = (0, 40100, 0o600, stat.S_IFREG)
NEW_OWNER: Stat = (0, 40200, 0o640, stat.S_IFREG)


def test_a_reused_map_whose_owner_changes_never_shows_a_mix(
    compile_bpf: Compile, source_dir: Path, bpffs: Path, state_dir: Path
) -> None:
    """A reload keeps a map whose definition is unchanged but whose declared group and mode
    changed (r_swap.c's `values`, 0:40100 0600 <-> 0:40200 0640). Its pin must show the old
    owner and mode or the new ones, never a mix: 0:40100 0640 would let group 40100 open a map
    that neither version lets it read, and an fd opened in that moment keeps its access."""
    versions = [
        compile_bpf("r_swap.c", "own.o", f"-DVALUES_GID={gid}", f"-DVALUES_MODE={mode:04o}")
        for _, gid, mode, _ in (OLD_OWNER, NEW_OWNER)
    ]
    opts = options(source_dir, bpffs, state_dir)
    log = io.StringIO()
    reporter = ConsoleReporter(log)
    path = bpffs / "map_own_values"
    install(versions[0], source_dir)
    succeeded(load(opts, reporter), log)

    watcher = Watcher.start({str(path): (OLD_OWNER, NEW_OWNER)})
    try:
        watcher.enter(2)
        for round_ in range(100):
            install(versions[(round_ + 1) % 2], source_dir)
            succeeded(reload(opts, reporter), log)
            st = os.lstat(path)
            want = (OLD_OWNER, NEW_OWNER)[(round_ + 1) % 2]
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), stat.S_IFMT(st.st_mode)) == want
    finally:
        report = watcher.stop()

    print(f"\nwatcher, reused map with a changing owner: {report['existing']['2']} observations")
    for *state, count in report["wrong_states"]:
        print(f"  mixed (phase, path, uid, gid, mode): {tuple(state)} x{count}")
    assert report["existing"]["2"] > 1000
    assert report["wrong"]["2"] == 0, report["wrong_states"]
