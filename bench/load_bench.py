#!/usr/bin/env python3
"""bpfloader against a one-process libbpf loader and a loop of `bpftool prog loadall`.

    sudo .venv/bin/python bench/load_bench.py [--rounds 7] [--no-floor] [--json PATH] [--profile]
    make bench [BENCH_ARGS="--rounds 11 --json build/bench/result.json"]

Builds the corpus (bench/corpus.py: libbpf-style objects, half tiny and half verifier-heavy,
plus the etc/bpf examples), checks that bpftool and bpfloader load every object, then for
--rounds rounds, rotating which runner goes first, measures in fresh private bpffs mounts
(under a temporary directory, unmounted after; the host's /sys/fs/bpf, /etc/bpf and
/run/bpfloader are never touched):

  bpfloader   one new `bpfloader load --dir SET` process, the way boot runs it (a private
              --state-dir, --log-target console, output captured to files), with the set's
              object cache warmed before the rounds (and, for `all`, once more with an empty
              one: the first boot after a change)
  libbpf      one process of bench/libbpf_loader.c (built into build/bench/) over all the
              set's objects, with as many threads as bpfloader loads objects at once
  bpftool     one `bpftool prog loadall OBJ PINDIR pinmaps MAPDIR` process per object, in turn

for the whole corpus (`all`) and each half alone, the etc/bpf examples (bpfloader only: libbpf
1.1 refuses Android's legacy `maps` section), unchanged `bpfloader reload`s after the `all`
load (three, the median kept), and `python -c pass` (the interpreter's own start, in every
round: the targets set the loader against it round by round). The loader is the tree
installed with pip into a venv of its own (--editable: the development venv's editable
install). Every process is started through a small C launcher (bench/rusage_exec.c) that
times it from fork to reaping and reports its rusage from wait4: user+sys CPU and peak RSS
(the bpftool loop sums wall and CPU over its processes and takes the largest RSS). The
kernel floor is the time the loader spent inside BPF_MAP_CREATE/BPF_PROG_LOAD/BPF_BTF_LOAD,
from `bpfloader load --stats-json`; --no-floor measures a loader without that option.

Then, outside the timed rounds: --trace-runs runs under `strace -f --seccomp-bpf -ttt -T -e
trace=execve,bpf` (only those two syscalls stop the tracee, so the rest runs at full speed)
of each runner give the time from the process's execve to its first bpf() call, the bpf()
calls by command, an outside measure of the same floor, and any child process the loader
spawns; one `python -X importtime -m bpfloader load` gives the import breakdown; --profile
adds a cProfile of one load. Python children run with a bytecode cache of their own
(build/bench/pycache), as an installed package has its .pyc files. Last, the issue's targets,
measured.
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import platform
import pstats
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from corpus import (
    BPFLOADER,
    DEFAULT_OUT,
    REPO,
    CheckResult,
    Corpus,
    bpfloader_load,
    bpftool_load,
    check,
    format_check,
    generate,
)

PYTHON = REPO / ".venv" / "bin" / "python"
FLOOR_COMMANDS = ("BPF_MAP_CREATE", "BPF_PROG_LOAD", "BPF_BTF_LOAD")

# ---- processes ------------------------------------------------------------------------------


@dataclass
class Sample:
    """One measured run (a process, or the bpftool loop as a whole)."""

    wall: float  # seconds
    cpu: float  # user + sys seconds
    rss_mb: float  # peak resident set (the largest child's, for the loop)
    floor: float | None = None  # seconds inside MAP_CREATE/PROG_LOAD/BTF_LOAD (--stats-json)
    inner_wall: float | None = None  # the loader's own wall_seconds (--stats-json)
    parse: float | None = None  # its parse_seconds (--stats-json)
    jobs: int | None = None  # objects loaded at once, if the stats say (--stats-json)
    prog_load: float | None = None  # seconds in BPF_PROG_LOAD per the load summary


@dataclass
class Child:
    wall: float
    cpu: float
    rss_mb: float
    status: int


LAUNCHER_SOURCE = Path(__file__).resolve().with_name("rusage_exec.c")
PEER_SOURCE = Path(__file__).resolve().with_name("libbpf_loader.c")
PEER_LIBRARIES = ("-lbpf", "-lpthread")


def build_c(source: Path, binary: Path, libraries: Sequence[str] = ()) -> Path:
    """BINARY compiled from SOURCE, again only when the source is newer."""
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    cc = shutil.which("cc") or shutil.which("clang") or "cc"
    subprocess.run([cc, "-O2", "-Wall", "-o", str(binary), str(source), *libraries], check=True)
    return binary


class Launcher:
    """Runs commands through bench/rusage_exec (see there why): output in files, and the
    command's own wall time (fork to reaping), CPU and peak RSS."""

    def __init__(self, binary: Path, work: Path) -> None:
        self.binary = build_c(LAUNCHER_SOURCE, binary)
        self.result = work / "rusage.txt"

    def run(
        self,
        argv: Sequence[str],
        stdout: Path,
        stderr: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> Child:
        """Run ARGV (PATH searched) to completion: stdin /dev/null, stdout to a file, stderr
        to another or the same."""
        actions: list[tuple[int | str, ...]] = [
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, str(stdout), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
        ]
        if stderr is None:
            actions.append((os.POSIX_SPAWN_DUP2, 1, 2))
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            actions.append((os.POSIX_SPAWN_OPEN, 2, str(stderr), flags, 0o600))
        launcher = [str(self.binary), str(self.result), *argv]
        pid = os.posix_spawn(launcher[0], launcher, env or os.environ, file_actions=actions)
        _, status, _ = os.wait4(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"bench: the launcher failed on {' '.join(argv)}")
        code, wall, user, system, maxrss_kb = self.result.read_text().split()
        return Child(float(wall), float(user) + float(system), int(maxrss_kb) / 1024, int(code))


class Mounts:
    """Fresh private bpffs instances under WORK; every one is unmounted by close()."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.count = 0
        self.mounted: list[Path] = []

    def fresh(self, label: str) -> Path:
        self.count += 1
        point = self.work / f"bpffs_{self.count}_{label}"
        point.mkdir()
        subprocess.run(["mount", "-t", "bpf", "bpf", str(point)], check=True)
        self.mounted.append(point)
        return point

    def release(self, point: Path) -> None:
        subprocess.run(["umount", str(point)], check=True)
        self.mounted.remove(point)
        point.rmdir()

    def close(self) -> None:
        for point in list(self.mounted):
            self.release(point)

    @contextmanager
    def one(self, label: str) -> Iterator[Path]:
        point = self.fresh(label)
        try:
            yield point
        finally:
            self.release(point)


def count_pins(pin_root: Path, runner: str) -> int:
    """Programs pinned: the files in bpftool's `p_*` dirs, or the `prog_*` pins of bpfloader
    (in any subdirectory but its staging one) and of the libbpf peer (all at the top)."""
    if runner == "bpftool":
        return sum(len(os.listdir(d)) for d in pin_root.glob("p_*"))
    found = 0
    for _, dirs, files in os.walk(pin_root):
        dirs[:] = [d for d in dirs if d != "bpfloader_staging"]
        found += sum(1 for f in files if f.startswith("prog_"))
    return found


# ---- the runs -------------------------------------------------------------------------------

SUMMARY_OBJECTS = re.compile(r"^objects: (\d+) loaded, (\d+) skipped, (\d+) failed", re.M)
SUMMARY_PROGRAMS = re.compile(
    r"^programs loaded: (\d+), (\d+) instructions verified, ([\d.]+) ms", re.M
)


@dataclass
class Set:
    """A directory loaded as a whole, and what a good load of it pins."""

    name: str
    directory: Path
    objects: list[Path]
    programs: int
    libbpf: bool = True  # libbpf 1.1 loads it: the bpftool loop and the C peer run on it too


@dataclass(frozen=True)
class Loader:
    """The bpfloader measured: its command, and the interpreter that runs it."""

    command: Path
    python: Path
    kind: str  # "installed" or "editable"


EDITABLE = Loader(BPFLOADER, PYTHON, "editable")


def install_loader(tree: Path, venv: Path) -> Loader:
    """TREE's package installed the way users install it (`pip install`, not editable) into a
    virtual environment of its own, with its dependencies, the package itself reinstalled every
    run. The development venv's editable install adds an import finder to every start (about
    15 ms here) that no installed loader pays."""
    if not (venv / "bin" / "pip").exists():
        _quiet(["/usr/bin/python3", "-m", "venv", str(venv)])
    with tempfile.TemporaryDirectory(prefix="bpfloader-bench-src-") as copy:
        # From a copy: a build in the tree would leave build/ and *.egg-info behind. What the
        # build reads: setup.py and LICENSE where the tree has them (setup.py gives the license
        # since the package has one; an older tree has neither).
        for name in ("pyproject.toml", "README.md", "setup.py", "LICENSE"):
            if name in ("pyproject.toml", "README.md") or (tree / name).exists():
                shutil.copy(tree / name, copy)
        shutil.copytree(
            tree / "bpfloader",
            Path(copy) / "bpfloader",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check"]
        _quiet([*pip, copy])  # and what it depends on, where missing
        _quiet(
            [*pip, "--no-deps", "--force-reinstall", copy]
        )  # this tree's code, whatever was there
    return Loader(venv / "bin" / "bpfloader", venv / "bin" / "python", "installed")


def _quiet(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv)} exited {done.returncode}\n{done.stderr}")


class Harness:
    def __init__(
        self,
        work: Path,
        mounts: Mounts,
        launcher: Launcher,
        floor: bool,
        loader: Loader,
        peer: Path,
        load_args: Sequence[str] = (),
    ) -> None:
        self.work = work
        self.peer = peer  # bench/libbpf_loader, built
        self.peer_threads: dict[str, int] = {}  # set -> its -j (choose_peer_threads)
        self.loader = loader
        self.mounts = mounts
        self.spawn = launcher.run
        self.floor = floor
        self.load_args = list(load_args)  # --load-arg: added to every `bpfloader load`
        self.runs = 0
        # State directories on a tmpfs where there is one, as /run/bpfloader is at boot (the
        # loaded marker and the state are written with fsync, which costs nothing there).
        shm = Path("/dev/shm")
        where = shm if shm.is_dir() else work
        self.state_root = Path(tempfile.mkdtemp(prefix="bpfloader-bench-state-", dir=where))
        # The object cache (a loader that has one): a directory per set, warmed before the
        # rounds (warm_caches), as a boot finds it when the objects have not changed since the
        # last one; a cold run is given a new, empty one. Root's and 0700, as the loader wants.
        self.cache_root: Path | None = None
        if "--cache-dir" in load_help(loader.command):
            self.cache_root = work / "cache"
            self.cache_root.mkdir(mode=0o700)

    def load_argv(
        self, s: Set, pin_root: Path, state: Path, command: str = "load", *, cold: bool = False
    ) -> list[str]:
        argv = bpfloader_load(s.directory, pin_root, state, command, self.loader.command)
        if self.cache_root is not None:
            cache = self.cache_root / (f"cold_{self.runs}" if cold else s.name)
            argv += ["--cache-dir", str(cache)]
        return argv + self.load_args if command == "load" else argv

    def warm_caches(self, sets: Sequence[Set]) -> None:
        """One untimed load of each set, which fills its object cache (nothing without one)."""
        if self.cache_root is None:
            return
        for s in sets:
            with self.mounts.one(f"warm_{s.name}") as pin_root:
                self.bpfloader(s, pin_root, self.state_dir())

    def _fail(self, what: str, out: Path, err: Path | None = None) -> None:
        text = out.read_text(errors="replace")
        if err is not None:
            text += err.read_text(errors="replace")
        raise SystemExit(f"bench: {what}\n{text[-4000:]}")

    def state_dir(self) -> Path:
        """A new, empty --state-dir (a reload takes the one of its load)."""
        self.runs += 1
        return self.state_root / f"state_{self.runs}"

    def bpfloader(
        self, s: Set, pin_root: Path, state: Path, command: str = "load", *, cold: bool = False
    ) -> Sample:
        """One new bpfloader process over the set's directory, checked to have loaded it all;
        `cold`: with an empty object cache (a first boot, or one after every object changed)."""
        argv = self.load_argv(s, pin_root, state, command, cold=cold)
        stats = self.work / f"stats_{self.runs}.json"
        floor = self.floor and command == "load"
        if floor:
            argv += ["--stats-json", str(stats)]
        out, err = self.work / "bpfloader.out", self.work / "bpfloader.err"
        child = self.spawn(argv, out, err)
        if child.status != 0:
            self._fail(f"bpfloader {command} {s.directory} exited {child.status}", out, err)
        sample = Sample(child.wall, child.cpu, child.rss_mb)
        summary = out.read_text()
        self._check_summary(s, summary, out, err)
        if command == "load":
            sample.prog_load = _prog_load_seconds(summary)
            if count_pins(pin_root, "bpfloader") != s.programs:
                self._fail(f"bpfloader: {s.name}: not {s.programs} programs pinned", out, err)
        if floor:
            read_stats(stats, sample)
        return sample

    def _check_summary(self, s: Set, summary: str, out: Path, err: Path) -> None:
        match = SUMMARY_OBJECTS.search(summary)
        if match is None:  # the summary's wording changed: the pin count still checks the load
            return
        loaded, _, failed = map(int, match.groups())
        if failed or loaded != len(s.objects):
            self._fail(f"bpfloader: {s.name}: {loaded} loaded, {failed} failed", out, err)

    def bpftool_loop(self, s: Set, pin_root: Path) -> Sample:
        """One bpftool process per object, in turn. Wall and CPU: the sums over the processes
        (what we spend between them is not counted); RSS: the largest."""
        out = self.work / "bpftool.out"
        children = []
        for obj in s.objects:
            child = self.spawn(bpftool_load(obj, pin_root), out)
            if child.status != 0:
                self._fail(f"bpftool {obj} exited {child.status}", out)
            children.append(child)
        if count_pins(pin_root, "bpftool") != s.programs:
            self._fail(f"bpftool: {s.name}: not {s.programs} programs pinned", out)
        return Sample(
            sum(c.wall for c in children),
            sum(c.cpu for c in children),
            max(c.rss_mb for c in children),
        )

    def peer_argv(self, s: Set, pin_root: Path) -> list[str]:
        return [str(self.peer), "-j", str(self.peer_threads[s.name]), str(pin_root)] + [
            str(o) for o in s.objects
        ]

    def libbpf(self, s: Set, pin_root: Path) -> Sample:
        """One libbpf peer process over all the set's objects, checked as bpfloader is: exit 0
        and every program pinned."""
        out, err = self.work / "libbpf.out", self.work / "libbpf.err"
        child = self.spawn(self.peer_argv(s, pin_root), out, err)
        if child.status != 0:
            self._fail(f"libbpf peer: {s.name}: exited {child.status}", out, err)
        if count_pins(pin_root, "libbpf") != s.programs:
            self._fail(f"libbpf peer: {s.name}: not {s.programs} programs pinned", out, err)
        return Sample(child.wall, child.cpu, child.rss_mb)

    def choose_peer_threads(self, sets: Sequence[Set]) -> str:
        """The peer's threads per set: as many as bpfloader loads objects at once, from the
        `total.jobs` of an untimed bpfloader load of the set with --stats-json (the rounds'
        runs come in any order, so it is learnt before them); without it, os.cpu_count().
        Returns how they were chosen, for the header."""
        learnt: dict[str, int | None] = {}
        for s in sets if self.floor else ():
            with self.mounts.one(f"jobs_{s.name}") as pin_root:
                learnt[s.name] = self.bpfloader(s, pin_root, self.state_dir()).jobs
        jobs = {name: n for name, n in learnt.items() if n is not None}
        if len(jobs) == len(sets):
            how = "bpfloader's jobs (total.jobs of an untimed load with --stats-json)"
        else:
            jobs = {s.name: os.cpu_count() or 1 for s in sets}
            why = "its --stats-json has no total.jobs" if self.floor else "--no-floor"
            how = f"os.cpu_count() ({why})"
        self.peer_threads = jobs
        return ", ".join(f"{name} -j {n}" for name, n in jobs.items()) + f": {how}"

    def python_start(self) -> Sample:
        child = self.spawn([str(self.loader.python), "-c", "pass"], self.work / "python.out")
        return Sample(child.wall, child.cpu, child.rss_mb)


def _prog_load_seconds(summary: str) -> float | None:
    match = SUMMARY_PROGRAMS.search(summary)
    return None if match is None else float(match.group(3)) / 1000


def read_stats(path: Path, sample: Sample) -> None:
    """The run's totals from `--stats-json` (format 1) into SAMPLE."""
    if not path.exists():
        raise SystemExit(f"bench: bpfloader wrote no {path} (--stats-json); --no-floor skips it")
    data = json.loads(path.read_text())
    if data.get("format") != 1:
        raise SystemExit(f"bench: {path}: stats format {data.get('format')!r}, expected 1")
    total = data["total"]
    sample.floor = float(total["kernel_seconds"])
    sample.inner_wall = float(total["wall_seconds"])
    sample.parse = float(total["parse_seconds"])
    sample.jobs = int(total["jobs"]) if "jobs" in total else None


@functools.cache
def load_help(loader: Path) -> str:
    """`bpfloader load --help`: which options the loader measured has."""
    done = subprocess.run([str(loader), "load", "--help"], capture_output=True, text=True)
    return done.stdout


# ---- rounds ---------------------------------------------------------------------------------

Samples = dict[str, list[Sample]]  # "set/runner" -> one sample per round


@dataclass
class Results:
    rounds: int
    samples: Samples = field(default_factory=dict)
    peer_threads: dict[str, int] = field(default_factory=dict)  # set -> the libbpf peer's -j

    def add(self, key: str, sample: Sample) -> None:
        self.samples.setdefault(key, []).append(sample)


RUNNERS = ("bpfloader", "libbpf", "bpftool")
PYTHON_KEY = "python -c pass/python"  # the samples of `python -c pass`, one per round
COLD_KEY = "all, cold cache/bpfloader"  # `all` with an empty object cache, one per round


def runner_order(s: Set, shift: int) -> list[str]:
    """The set's runners, the list rotated by SHIFT. With shift = round + set index, the three
    sets libbpf loads (consecutive) take the three rotations in every round: each runner goes
    first (and second, and last) once a round, and on each set in turn from round to round."""
    runners = list(RUNNERS) if s.libbpf else ["bpfloader"]
    k = shift % len(runners)
    return runners[k:] + runners[:k]


def one_round(h: Harness, sets: list[Set], r: int, results: Results) -> None:
    """Every set with each of its runners in the order of runner_order, then `python -c pass`
    (its per-round sample is what the interpreter's start costs in that round)."""
    for i, s in enumerate(sets):
        for runner in runner_order(s, r + i):
            with h.mounts.one(f"{s.name}_{runner}") as pin_root:
                if runner == "bpftool":
                    results.add(f"{s.name}/bpftool", h.bpftool_loop(s, pin_root))
                    continue
                if runner == "libbpf":
                    results.add(f"{s.name}/libbpf", h.libbpf(s, pin_root))
                    continue
                state = h.state_dir()
                results.add(f"{s.name}/bpfloader", h.bpfloader(s, pin_root, state))
                if s.name == "all":
                    reloads = [h.bpfloader(s, pin_root, state, "reload") for _ in range(RELOADS)]
                    results.add("reload/bpfloader", median_sample(reloads))
            if s.name == "all" and runner == "bpfloader" and h.cache_root is not None:
                with h.mounts.one("all_cold") as pin_root:
                    results.add(COLD_KEY, h.bpfloader(s, pin_root, h.state_dir(), cold=True))
    results.add(PYTHON_KEY, h.python_start())


# An unchanged reload is a tenth of a full load: a busy spell of the machine shows in a tenth of
# the time, so each round takes the median of several, as rounds do for everything else.
RELOADS = 3


def median_sample(samples: list[Sample]) -> Sample:
    """The sample of median wall time (an odd number of them)."""
    return sorted(samples, key=lambda x: x.wall)[len(samples) // 2]


def run_rounds(h: Harness, sets: list[Set], rounds: int) -> Results:
    results = Results(rounds, peer_threads=dict(h.peer_threads))
    for r in range(rounds):
        started = time.perf_counter()
        one_round(h, sets, r, results)
        print(f"  round {r + 1}/{rounds}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return results


# ---- strace: start to first bpf(), the calls, an outside floor -------------------------------

STRACE_LINE = re.compile(r"^(\d+) +(\d+\.\d+) (.*)$")
BPF_CALL = re.compile(r"^bpf\((BPF_\w+)")
RESUMED = re.compile(r"^<\.\.\. bpf resumed>")
DURATION = re.compile(r"<(\d+\.\d+)>$")
EXECVE = re.compile(r'^execve\("([^"]+)"')
STRACE = ("strace", "-f", "--seccomp-bpf", "-ttt", "-T", "-e", "trace=execve,bpf")


@dataclass
class Trace:
    """What strace saw of one process tree."""

    start_to_first_bpf: float = 0.0
    bpf_phase: float = 0.0  # first bpf() call to the end of the last
    after_last_bpf: float = 0.0  # the end of the last bpf() call to the process's exit
    floor: float = 0.0  # inside MAP_CREATE/PROG_LOAD/BTF_LOAD
    in_bpf: float = 0.0  # inside any bpf() call
    calls: Counter[str] = field(default_factory=Counter)
    children: list[str] = field(default_factory=list)  # programs the process executed
    callers: int = 0  # threads (bpftool: processes) that called bpf()


def parse_strace(text: str) -> Trace:
    trace = Trace()
    main_pid = start = exit_at = None
    first = last_end = None
    pending: dict[str, tuple[str, float]] = {}
    callers: set[str] = set()
    for line in text.splitlines():
        m = STRACE_LINE.match(line)
        if m is None:
            continue
        pid, at, rest = m.group(1), float(m.group(2)), m.group(3)
        if main_pid is None:
            main_pid, start = pid, at
        if (e := EXECVE.match(rest)) and pid != main_pid:
            trace.children.append(e.group(1))
        if pid == main_pid and rest.startswith("+++ exited"):
            exit_at = at
        call = _bpf_call(pid, at, rest, pending)
        if call is None:
            continue
        command, began, took = call
        callers.add(pid)
        trace.calls[command] += 1
        trace.in_bpf += took
        if command in FLOOR_COMMANDS:
            trace.floor += took
        first = began if first is None else min(first, began)
        last_end = max(last_end or 0.0, began + took)
    if start is None or first is None or last_end is None or exit_at is None:
        raise SystemExit("bench: strace saw no bpf() call or no exit")
    trace.callers = len(callers)
    trace.start_to_first_bpf = first - start
    trace.bpf_phase = last_end - first
    trace.after_last_bpf = exit_at - last_end
    return trace


def _bpf_call(
    pid: str, at: float, rest: str, pending: dict[str, tuple[str, float]]
) -> tuple[str, float, float] | None:
    """(command, entered, seconds inside) of a complete bpf() line, or of a resumed one."""
    if (m := BPF_CALL.match(rest)) is not None:
        if rest.endswith("<unfinished ...>"):
            pending[pid] = (m.group(1), at)
            return None
        command, began = m.group(1), at
    elif RESUMED.match(rest) and pid in pending:
        command, began = pending.pop(pid)
    else:
        return None
    d = DURATION.search(rest)
    return (command, began, float(d.group(1))) if d else None


def strace_argv(output: Path, argv: Sequence[str]) -> list[str]:
    return [*STRACE, "-o", str(output), *argv]


def merge(traces: list[Trace]) -> Trace:
    """The bpftool loop as one: sums, and the median start-to-first-bpf of its processes."""
    total = Trace(start_to_first_bpf=statistics.median(t.start_to_first_bpf for t in traces))
    for t in traces:
        total.bpf_phase += t.bpf_phase
        total.after_last_bpf += t.after_last_bpf
        total.floor += t.floor
        total.in_bpf += t.in_bpf
        total.calls.update(t.calls)
        total.children += t.children
        total.callers += t.callers
    return total


def traced(h: Harness, s: Set, runner: str) -> Trace:
    log = h.work / "strace.txt"
    with h.mounts.one(f"trace_{runner}") as pin_root:
        if runner != "bpftool":
            argv = (
                h.load_argv(s, pin_root, h.state_dir())
                if runner == "bpfloader"
                else h.peer_argv(s, pin_root)
            )
            _traced_run(h, strace_argv(log, argv))
            return parse_strace(log.read_text())
        traces = []
        for obj in s.objects:
            _traced_run(h, strace_argv(log, bpftool_load(obj, pin_root)))
            traces.append(parse_strace(log.read_text()))
        return merge(traces)


def _traced_run(h: Harness, argv: Sequence[str]) -> None:
    child = h.spawn(argv, h.work / "traced.out")
    if child.status != 0:
        raise SystemExit(f"bench: {' '.join(argv)} exited {child.status}")


TRACED_SETS = ("all", "heavy")


def trace_all(h: Harness, sets: dict[str, Set], runs: int) -> dict[str, list[Trace]]:
    """RUNS traced runs of each runner on each of TRACED_SETS, in the rounds' rotating order;
    keyed "set/runner" in the table's order."""
    traces: dict[str, list[Trace]] = {f"{n}/{r}": [] for n in TRACED_SETS for r in RUNNERS}
    for r in range(runs):
        for i, name in enumerate(TRACED_SETS):
            for runner in runner_order(sets[name], r + i):
                traces[f"{name}/{runner}"].append(traced(h, sets[name], runner))
    return traces


# ---- imports and a profile ------------------------------------------------------------------

IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


@dataclass
class Imports:
    total: float  # seconds of import, summed over every module (self times)
    bpfloader: float  # the part in bpfloader's own modules
    top: list[tuple[str, float, float]]  # top-level imports: (module, cumulative s, self s)
    heaviest: list[tuple[str, float]]  # any module, by self time
    total_uncached: float = 0.0  # the same run without bytecode cache (this dev shell's way)


def parse_importtime(text: str, top: int = 12) -> Imports:
    rows = []
    for line in text.splitlines():
        m = IMPORT_LINE.match(line)
        if m:
            depth = (len(m.group(3)) - 1) // 2
            rows.append((m.group(4), int(m.group(1)) / 1e6, int(m.group(2)) / 1e6, depth))
    total = sum(r[1] for r in rows)
    own = sum(r[1] for r in rows if r[0].split(".")[0] == "bpfloader")
    first_level = sorted((r for r in rows if r[3] == 0), key=lambda r: -r[2])
    by_self = sorted(rows, key=lambda r: -r[1])
    return Imports(
        total,
        own,
        [(r[0], r[2], r[1]) for r in first_level[:top]],
        [(r[0], r[1]) for r in by_self[:top]],
    )


def _importtime_run(h: Harness, s: Set, env: dict[str, str] | None = None) -> Imports:
    with h.mounts.one("importtime") as pin_root:
        argv = h.load_argv(s, pin_root, h.state_dir())
        argv = [str(h.loader.python), "-X", "importtime", "-m", "bpfloader", *argv[1:]]
        err = h.work / "importtime.err"
        child = h.spawn(argv, h.work / "importtime.out", err, env)
        if child.status != 0:
            raise SystemExit(f"bench: importtime run exited {child.status}")
        return parse_importtime(err.read_text())


def import_times(h: Harness, s: Set, runs: int) -> Imports:
    """`python -X importtime -m bpfloader load`, RUNS times with the bytecode cache (the
    breakdown is the run of median total) and RUNS times without it (its median total)."""
    cached = sorted((_importtime_run(h, s) for _ in range(runs)), key=lambda i: i.total)
    imports = cached[len(cached) // 2]
    uncached_env = {k: v for k, v in os.environ.items() if k != "PYTHONPYCACHEPREFIX"}
    uncached_env["PYTHONDONTWRITEBYTECODE"] = "1"
    uncached = [_importtime_run(h, s, uncached_env).total for _ in range(runs)]
    imports.total_uncached = statistics.median(uncached)
    return imports


# Runs `bpfloader ARGS` under cProfile, writing the data to argv[1].
PROFILE_RUNNER = """
import cProfile, sys
out, sys.argv = sys.argv[1], ["bpfloader", *sys.argv[2:]]
def run():
    from bpfloader.cli import main
    return main()
profiler = cProfile.Profile()
profiler.enable()
try:
    status = run()
finally:
    profiler.disable()
    profiler.dump_stats(out)
sys.exit(status)
"""


def profile(h: Harness, s: Set, top: int = 25) -> str:
    """A cProfile of one load of the set in a fresh process: the top functions by own time,
    then by cumulative time. cProfile sees only the thread it runs in: a loader that loads
    objects in threads is asked for one (--jobs=1), so that the profile holds all the work."""
    data = h.work / "load.prof"
    with h.mounts.one("profile") as pin_root:
        argv = h.load_argv(s, pin_root, h.state_dir())
        if "--jobs" in load_help(h.loader.command):
            argv.append("--jobs=1")
        argv = [str(h.loader.python), "-c", PROFILE_RUNNER, str(data), *argv[1:]]
        child = h.spawn(argv, h.work / "profile.out", h.work / "profile.err")
        if child.status != 0:
            raise SystemExit(f"bench: the cProfile run exited {child.status}")
    text = io.StringIO()
    stats = pstats.Stats(str(data), stream=text)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return _short_paths(text.getvalue())


def _short_paths(text: str) -> str:
    tree = os.environ.get("PYTHONPATH", "")
    for prefix in sorted({*map(str, sys.path), str(REPO), tree}, key=len, reverse=True):
        if prefix.startswith("/"):
            text = text.replace(prefix.rstrip("/") + "/", "")
    return text


# ---- the report -----------------------------------------------------------------------------


def med(samples: list[Sample], get: Callable[[Sample], float | None]) -> float | None:
    values = [v for v in map(get, samples) if v is not None]
    return statistics.median(values) if values else None


def per_round(
    value: Callable[[tuple[Sample, ...]], float | None], *columns: list[Sample]
) -> float | None:
    """The median over rounds of VALUE of each round's samples, one from each column (the runs
    of one round are close in time, so a slow spell on the machine touches all of them)."""
    values = [v for row in zip(*columns, strict=True) if (v := value(row)) is not None]
    return statistics.median(values) if values else None


def _ratio(x: float | None, y: float | None) -> float | None:
    return x / y if x is not None and y else None


def paired(a: list[Sample], b: list[Sample], get: Callable[[Sample], float | None]) -> float | None:
    """The median over rounds of a/b within each round."""
    return per_round(lambda row: _ratio(get(row[0]), get(row[1])), a, b)


def _wall_over_floor(s: Sample) -> float | None:
    return s.wall / s.floor if s.floor else None


def _f(value: float | None, scale: float = 1.0, digits: int = 1, width: int = 9) -> str:
    return f"{'-':>{width}}" if value is None else f"{value * scale:{width}.{digits}f}"


ROW = "{:8} {:21} {:>8} {:>8} {:>6} {:>8} {:>10} {:>8} {:>8} {:>9}"
HEADINGS = (
    "set",
    "runner",
    "wall ms",
    "cpu ms",
    "rss MB",
    "floor ms",
    "wall/floor",
    "inner ms",
    "parse ms",
    "PROG_LOAD",
)
MS = 1000.0


def _row(name: str, runner: str, samples: list[Sample]) -> str:
    return ROW.format(
        name,
        runner,
        _f(med(samples, lambda x: x.wall), MS, width=8),
        _f(med(samples, lambda x: x.cpu), MS, width=8),
        _f(med(samples, lambda x: x.rss_mb), width=6),
        _f(med(samples, lambda x: x.floor), MS, width=8),
        _f(med(samples, _wall_over_floor), digits=2, width=10),
        _f(med(samples, lambda x: x.inner_wall), MS, width=8),
        _f(med(samples, lambda x: x.parse), MS, width=8),
        _f(med(samples, lambda x: x.prog_load), MS),
    )


def _ratio_row(name: str, label: str, a: list[Sample], b: list[Sample], rss: bool) -> str:
    cells = [
        _f(paired(a, b, lambda x: x.wall), digits=3, width=8),
        _f(paired(a, b, lambda x: x.cpu), digits=3, width=8),
        _f(paired(a, b, lambda x: x.rss_mb), digits=2, width=6) if rss else "",
    ]
    walls = [x.wall / y.wall for x, y in zip(a, b, strict=True)]
    spread = f"   wall, per round: {min(walls):.2f}..{max(walls):.2f}"
    return ROW.format(name, label, *cells, *[""] * 5).rstrip() + spread


def table(results: Results, sets: dict[str, Set]) -> list[str]:
    """Medians per set and runner; ratio rows are medians of the per-round ratios."""
    lines = [ROW.format(*HEADINGS)]
    for name, s in sets.items():
        loader = results.samples[f"{name}/bpfloader"]
        lines.append(_row(name, "bpfloader", loader))
        if s.libbpf:
            peer, tool = results.samples[f"{name}/libbpf"], results.samples[f"{name}/bpftool"]
            lines.append(_row(name, f"libbpf C, 1 proc, -j{results.peer_threads[name]}", peer))
            lines.append(_row(name, f"bpftool x{len(s.objects)}", tool))
            lines.append(_ratio_row(name, "bpfloader/libbpf", loader, peer, rss=True))
            lines.append(_ratio_row(name, "bpfloader/bpftool", loader, tool, rss=True))
    reload, full = results.samples["reload/bpfloader"], results.samples["all/bpfloader"]
    if COLD_KEY in results.samples:
        cold = results.samples[COLD_KEY]
        lines.append(_row("all", "bpfloader, cold cache", cold))
        lines.append(_ratio_row("all", "cold/libbpf", cold, results.samples["all/libbpf"], True))
    lines.append(_row("reload", "unchanged, after all", reload))
    lines.append(_ratio_row("reload", "reload/full load", reload, full, rss=False))
    lines.append(_row("python", "-c pass", results.samples[PYTHON_KEY]))
    lines.append(
        "libbpf C: bench/libbpf_loader.c, one process that opens, loads and pins every object "
        "of the set with libbpf, -jN threads taking the next object (N: see the header)"
    )
    jobs = {x.jobs for x in full if x.jobs is not None}
    if jobs and max(jobs) > 1:
        lines.append(
            f"note: the loader ran {max(jobs)} jobs (--stats-json): its floor sums the threads' "
            "time inside those calls, which overlap (and, with more jobs than idle CPUs, "
            "include waiting for one), so it is no lower bound of wall; wall/floor < 1 happens"
        )
    return lines


TRACE_ROW = "{:16} {:>11} {:>10} {:>10} {:>9} {:>9} {:>6} {:>7}  {}"


def trace_table(traces: dict[str, list[Trace]], runs: int) -> list[str]:
    lines = [
        f"under strace -f --seccomp-bpf -T -e trace=execve,bpf, median of {runs} runs, ms "
        "(bpftool: the median process's start, sums for the rest; calls made in parallel "
        "threads make `floor` and `in bpf()` sums larger than the `bpf phase` they fill)",
        TRACE_ROW.format(
            "set/runner",
            "start->bpf",
            "bpf phase",
            "after bpf",
            "floor",
            "in bpf()",
            "calls",
            "callers",
            "children",
        ),
    ]
    for key, ts in traces.items():
        children = sorted({c for t in ts for c in t.children})
        lines.append(
            TRACE_ROW.format(
                key,
                _f(statistics.median(t.start_to_first_bpf for t in ts), 1000, width=11),
                _f(statistics.median(t.bpf_phase for t in ts), 1000, width=10),
                _f(statistics.median(t.after_last_bpf for t in ts), 1000, width=10),
                _f(statistics.median(t.floor for t in ts), 1000),
                _f(statistics.median(t.in_bpf for t in ts), 1000),
                str(sum(ts[0].calls.values())),
                str(ts[0].callers),
                ", ".join(children) or "-",
            )
        )
    for key in (f"all/{runner}" for runner in RUNNERS):
        calls = sorted(traces[key][0].calls.items())
        lines.append(f"bpf() calls, {key}: " + ", ".join(f"{c[4:]} {n}" for c, n in calls))
    return lines


def import_table(imports: Imports) -> list[str]:
    lines = [
        f"imports (python -X importtime -m bpfloader load, all; median): "
        f"{imports.total * 1000:.1f} ms "
        f"in total, {imports.bpfloader * 1000:.1f} ms in bpfloader's own modules; "
        f"{imports.total_uncached * 1000:.1f} ms without bytecode cache",
        f"  {'top-level import':40} {'cumul ms':>9} {'self ms':>8}",
    ]
    lines += [f"  {m:40} {c * 1000:9.1f} {s * 1000:8.1f}" for m, c, s in imports.top]
    lines.append(f"  {'heaviest modules by own time':40} {'self ms':>9}")
    lines += [f"  {m:40} {s * 1000:9.1f}" for m, s in imports.heaviest]
    return lines


@dataclass(frozen=True)
class Target:
    """A target of the issue, measured."""

    name: str
    value: float | None  # None: this run could not measure it (a loader without the floor)
    limit: float  # met when value <= limit

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "?"
        return "met" if self.value <= self.limit else "NOT met"


def _wall(x: Sample) -> float:
    return x.wall


def issue_targets(samples: Samples, traces: dict[str, list[Trace]]) -> list[Target]:
    """Issue 21's targets: against the libbpf peer and the interpreter's bare start, each a
    median of per-round ratios (the start to the first bpf() call: median of the traced runs).
    On the tiny set, what bpfloader spends beyond `python -c pass` of the same round, against
    the peer's whole run: the interpreter's start is a floor no Python loader goes under."""
    python = samples[PYTHON_KEY]

    def wall_ratio(a: str, b: str) -> float | None:
        return paired(samples[a], samples[b], _wall)

    beyond_start = per_round(
        lambda row: _ratio(row[0].wall - row[1].wall, row[2].wall),
        samples["tiny/bpfloader"],
        python,
        samples["tiny/libbpf"],
    )
    first_bpf = statistics.median(t.start_to_first_bpf for t in traces["all/bpfloader"])
    return [
        Target(
            "heavy: wall bpfloader / libbpf", wall_ratio("heavy/bpfloader", "heavy/libbpf"), 1.1
        ),
        Target("all: wall bpfloader / libbpf", wall_ratio("all/bpfloader", "all/libbpf"), 1.1),
        Target("tiny: (bpfloader - python) / libbpf", beyond_start, 3.0),
        Target("etc_bpf: bpfloader / python", wall_ratio("etc_bpf/bpfloader", PYTHON_KEY), 3.0),
        Target("unchanged reload / python", wall_ratio("reload/bpfloader", PYTHON_KEY), 2.0),
        Target("start to first bpf(), all, ms", first_bpf * MS, 25.0),
    ] + (
        # Not a target of its own: the objects' first load, with nothing in the object cache.
        [Target("all, cold cache: bpfloader / libbpf", wall_ratio(COLD_KEY, "all/libbpf"), 1.1)]
        if COLD_KEY in samples
        else []
    )


def earlier_targets(samples: Samples) -> list[Target]:
    """Issue 9's targets, against the bpftool loop and the kernel floor."""
    full, heavy = samples["all/bpfloader"], samples["heavy/bpfloader"]
    return [
        Target(
            "all: wall bpfloader / bpftool loop", paired(full, samples["all/bpftool"], _wall), 1.0
        ),
        Target("heavy: wall / floor", med(heavy, _wall_over_floor), 1.3),
        Target(
            "unchanged reload / full load", paired(samples["reload/bpfloader"], full, _wall), 0.10
        ),
        Target("peak RSS MB, all", med(full, lambda x: x.rss_mb), 60.0),
    ]


def peak_rss(samples: Samples) -> dict[str, float | None]:
    """Peak RSS (MB, median over the rounds) of a load of the whole corpus, per runner."""
    return {runner: med(samples[f"all/{runner}"], lambda x: x.rss_mb) for runner in RUNNERS}


TARGET_ROW = "  {:38} {:>8}  <= {:<6} {}"


def targets(results: Results, traces: dict[str, list[Trace]]) -> list[str]:
    """The targets, measured: value, limit, met or not (`?` without the floor)."""

    def rows(measured: list[Target]) -> list[str]:
        return [
            TARGET_ROW.format(t.name, _f(t.value, digits=3, width=8), t.limit, t.verdict)
            for t in measured
        ]

    samples = results.samples
    rss = peak_rss(samples)
    lines = [
        "targets (issue 21; medians of per-round ratios of wall times; python: `python -c pass`)",
        *rows(issue_targets(samples, traces)),
        "  peak RSS MB, all (no limit): "
        + ", ".join(f"{runner} {_f(mb, width=1)}" for runner, mb in rss.items()),
        "earlier targets (issue 9: against the bpftool loop and the kernel floor)",
        *rows(earlier_targets(samples)),
    ]
    heavy = samples["heavy/bpfloader"]
    heavy_wall = med(heavy, _wall)
    if med(heavy, _wall_over_floor) is None and heavy_wall is not None:
        strace_floor = statistics.median(t.floor for t in traces["heavy/bpfloader"])
        lines.append(
            f"  (no --stats floor: heavy wall / strace floor = {heavy_wall / strace_floor:.2f}, "
            "an outside estimate)"
        )
    return lines


# ---- main -----------------------------------------------------------------------------------


def make_sets(corpus: Corpus, checked: CheckResult) -> dict[str, Set]:
    def libbpf(name: str, directory: Path) -> Set:
        return Set(name, directory, corpus.objects(directory), corpus.expected_programs(directory))

    android = corpus.objects(corpus.android)
    return {
        "all": libbpf("all", corpus.libbpf),
        "heavy": libbpf("heavy", corpus.heavy),
        "tiny": libbpf("tiny", corpus.tiny),
        "etc_bpf": Set("etc_bpf", corpus.android, android, checked.android_programs, False),
    }


def header(
    rounds: int, floor: bool, checked: CheckResult, busy: str | None, loader: str, peer: str
) -> list[str]:
    lines = [
        f"bpfloader bench: kernel {platform.release()}, {os.cpu_count()} CPUs, "
        f"bpftool {_bpftool_version()}; median of {rounds} rounds, the runner going first "
        "rotating with the round and the set",
        f"loader: {loader}",
        f"libbpf peer: {peer}",
        "floor: "
        + (
            "bpfloader --stats-json (kernel_seconds)"
            if floor
            else "not measured (--no-floor); PROG_LOAD is the load summary's time in BPF_PROG_LOAD"
        ),
    ]
    if busy:
        lines.append(f"note: {busy}")
    return lines + format_check(checked).splitlines()


def describe_peer(binary: Path, threads: str) -> str:
    done = subprocess.run(["pkg-config", "--modversion", "libbpf"], capture_output=True, text=True)
    version = done.stdout.strip() if done.returncode == 0 else "?"
    return (
        f"{binary} (bench/{PEER_SOURCE.name} on libbpf {version}), one process over all of a "
        f"set's objects; {threads}"
    )


def _bpftool_version() -> str:
    done = subprocess.run(["bpftool", "version"], capture_output=True, text=True)
    return " ".join(done.stdout.split()[1:5]) if done.returncode == 0 else "?"


def _busy() -> str | None:
    """Other CPU-heavy processes at the start (the figures are noisier with them)."""
    load1 = os.getloadavg()[0]
    return f"load average {load1:.2f} at the start" if load1 > 0.5 else None


def boot_like_environment(cache: Path, loader_tree: Path | None, editable: bool) -> None:
    """What every child process inherits: bytecode cached (a pip-installed package has its
    .pyc files; this shell may say PYTHONDONTWRITEBYTECODE) in a cache of our own, so nothing
    is written into the source tree, and stdout buffered as under systemd."""
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ.pop("PYTHONUNBUFFERED", None)
    os.environ.pop("PYTHONPATH", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(cache)
    if editable and loader_tree is not None:  # ahead of the editable install's finder
        os.environ["PYTHONPATH"] = str(loader_tree)


def describe_loader(tree: Path, loader: Loader, load_args: Sequence[str]) -> str:
    done = subprocess.run(
        ["git", "-C", str(tree), "describe", "--always", "--dirty"], capture_output=True, text=True
    )
    version = f" (git {done.stdout.strip()})" if done.returncode == 0 else ""
    how = (
        f"installed with pip into {loader.command.parent.parent}"
        if loader.kind == "installed"
        else "the development venv's editable install"
    )
    extra = f"; every load with {' '.join(load_args)}" if load_args else ""
    return f"{tree}{version}, {how}{extra}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (default 7)")
    parser.add_argument(
        "--trace-runs", type=int, default=3, help="strace and importtime runs (default 3)"
    )
    parser.add_argument("--corpus", type=Path, default=DEFAULT_OUT, help="corpus directory")
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="do not ask the loader for --stats-json (a loader without it: the before figures)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure there as JSON")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one load")
    parser.add_argument(
        "--load-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra argument for every `bpfloader load` (repeatable), e.g. --load-arg=--jobs=1",
    )
    parser.add_argument(
        "--loader-tree",
        type=Path,
        help="measure the bpfloader package of this source tree (e.g. `git archive HEAD` "
        "unpacked) instead of this one",
    )
    parser.add_argument(
        "--editable",
        action="store_true",
        help="measure the development venv's editable install (--loader-tree: through "
        "PYTHONPATH) instead of a pip-installed copy",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("bench: needs root (bpf(2), mounting bpffs)", file=sys.stderr)
        return 2
    loader_tree = args.loader_tree.resolve() if args.loader_tree else None
    corpus_dir = args.corpus.resolve()  # relative paths: to where we were started
    json_path = args.json.resolve() if args.json else None
    boot_like_environment(corpus_dir.parent / "pycache", loader_tree, args.editable)
    loader = (
        EDITABLE
        if args.editable
        else install_loader(loader_tree or REPO, corpus_dir.parent / "venv")
    )
    floor = not args.no_floor
    if floor and "--stats-json" not in load_help(loader.command):
        print(
            "bench: this bpfloader has no `load --stats-json` (the loader's stats, for the "
            "kernel floor); run with --no-floor to measure it without the floor",
            file=sys.stderr,
        )
        return 2
    busy = _busy()
    work = Path(tempfile.mkdtemp(prefix="bpfloader-bench-"))
    # `python -m` and `-c` put the working directory first on sys.path: out of the repo, so
    # that the package measured is the installed one (or --loader-tree's), never ./bpfloader.
    os.chdir(work)
    mounts = Mounts(work)
    h: Harness | None = None
    try:
        corpus = generate(corpus_dir)
        print("bench: checking that both loaders load the corpus", file=sys.stderr)
        checked = check(corpus)
        if checked.refused:
            print(format_check(checked), file=sys.stderr)
            return 1
        sets = make_sets(corpus, checked)
        launcher = Launcher(corpus_dir.parent / "rusage_exec", work)
        peer = build_c(PEER_SOURCE, corpus_dir.parent / "libbpf_loader", PEER_LIBRARIES)
        h = Harness(work, mounts, launcher, floor, loader, peer, args.load_arg)
        h.warm_caches(list(sets.values()))
        threads = h.choose_peer_threads([s for s in sets.values() if s.libbpf])
        results = run_rounds(h, list(sets.values()), args.rounds)
        print("bench: traced runs and imports", file=sys.stderr)
        traces = trace_all(h, sets, args.trace_runs)
        imports = import_times(h, sets["all"], args.trace_runs)
        profiled = profile(h, sets["all"]) if args.profile else None
    finally:
        mounts.close()
        os.chdir(REPO)
        shutil.rmtree(work, ignore_errors=True)
        if h is not None:
            shutil.rmtree(h.state_root, ignore_errors=True)
    report = [
        *header(
            args.rounds,
            floor,
            checked,
            busy,
            describe_loader(loader_tree or REPO, loader, args.load_arg),
            describe_peer(peer, threads),
        ),
        "",
        *table(results, sets),
        "",
        *trace_table(traces, args.trace_runs),
        "",
        *import_table(imports),
        "",
        *targets(results, traces),
    ]
    print("\n".join(report))
    if profiled:
        print("\ncProfile of one `bpfloader load` of all (a fresh process):\n" + profiled)
    if json_path:
        write_json(json_path, results, traces, imports, checked, floor)
    return 0


def write_json(
    path: Path,
    results: Results,
    traces: dict[str, list[Trace]],
    imports: Imports,
    checked: CheckResult,
    floor: bool,
) -> None:
    data = {
        "format": 1,
        "kernel": platform.release(),
        "rounds": results.rounds,
        "floor": floor,
        "corpus": checked.figures,
        "samples": {k: [asdict(s) for s in v] for k, v in results.samples.items()},
        "peer_threads": results.peer_threads,
        "targets": [
            {**asdict(t), "verdict": t.verdict} for t in issue_targets(results.samples, traces)
        ],
        "earlier_targets": [
            {**asdict(t), "verdict": t.verdict} for t in earlier_targets(results.samples)
        ],
        "peak_rss_mb": peak_rss(results.samples),
        "traces": {
            k: [{**asdict(t), "calls": dict(t.calls)} for t in v] for k, v in traces.items()
        },
        "imports": asdict(imports),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    sys.exit(main())
