#!/usr/bin/env python3
"""Reload timings for the etc/bpf examples, as ratios to a full load measured in the same run.

    sudo .venv/bin/python bench/reload_timing.py [--runs 10]

Builds etc/bpf/*.c, mounts a private bpffs under a temporary directory (the host's /sys/fs/bpf
is not touched; it is unmounted after), keeps the state in a temporary directory, and measures
the median wall time of:

  full load          `load` into a fresh bpffs (a new mount and an empty state dir each run)
  unchanged reload   `reload` with nothing changed
  one changed        `reload` after one object (myschedtp.o) changed
  all changed        `reload` after every object changed

An object "changes" by getting a different content hash while declaring the same maps and
programs: its file alternates between the compiler's output and that output followed by a few
zero bytes (ELF is read by offsets, so they are ignored). The reload then does all a real
change costs: re-reading and planning it, loading every program anew, swapping the pins, and
checking and reusing its maps.

Each case is measured twice: as a process (`python -m bpfloader ...`, what `systemctl reload`
costs, interpreter start included) and in-process (bpfloader.loader.run called directly:
the loader's own work).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bpfloader.build import build  # noqa: E402
from bpfloader.journal import Priority, open_reporter  # noqa: E402
from bpfloader.kernel import pins as kpins  # noqa: E402
from bpfloader.loader import run as loader  # noqa: E402
from bpfloader.loader.results import Action, Status  # noqa: E402

CHANGING_ONE = "myschedtp.o"


class Bench:
    def __init__(self, work: Path, built: dict[str, bytes]):
        self.work = work
        self.built = built
        self.source = work / "etc-bpf"
        self.source.mkdir()
        self.variant = dict.fromkeys(built, 0)
        for name in built:
            self.write(name)
        self.mounts = 0
        self.reporter = open_reporter("console", Priority.ERR)

    def write(self, name: str) -> None:
        data = self.built[name] + b"\0" * (8 * self.variant[name])
        tmp = self.source / f".{name}.tmp"
        tmp.write_bytes(data)
        os.replace(tmp, self.source / name)

    def change(self, names: list[str]) -> None:
        for name in names:
            self.variant[name] ^= 1
            self.write(name)

    def fresh(self) -> tuple[Path, Path]:
        """A new bpffs mount and an empty state dir."""
        self.mounts += 1
        pin_root = self.work / f"bpffs{self.mounts}"
        pin_root.mkdir()
        kpins.mount_bpffs(str(pin_root))
        return pin_root, self.work / f"state{self.mounts}"

    def done(self, pin_root: Path) -> None:
        kpins.unmount(str(pin_root))

    def options(self, pin_root: Path, state: Path) -> loader.LoadOptions:
        return loader.LoadOptions(
            source_dir=str(self.source), pin_root=str(pin_root), state_dir=str(state)
        )

    def process(self, command: str, pin_root: Path, state: Path) -> float:
        argv = [sys.executable, "-m", "bpfloader", command, "--dir", str(self.source)]
        argv += ["--pin-root", str(pin_root), "--state-dir", str(state), "--log-target", "console"]
        argv.append("--no-cache")  # as the in-process runs (LoadOptions without a cache_dir)
        start = time.perf_counter()
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(f"{command} exited {done.returncode}:\n{done.stderr}")
        return elapsed

    def in_process(self, command: str, pin_root: Path, state: Path) -> tuple[float, list[str]]:
        start = time.perf_counter()
        if command == "load":
            result = loader.load(self.options(pin_root, state), self.reporter)
        else:
            result = loader.reload(self.options(pin_root, state), self.reporter)
        elapsed = time.perf_counter() - start
        if any(o.status is not Status.LOADED for o in result.objects):
            raise SystemExit(f"{command}: {[(o.path, o.reason) for o in result.objects]}")
        replaced = sorted(
            {
                os.path.basename(o.path)
                for o in result.objects
                for p in o.pins
                if p.action is Action.REPLACE
            }
        )
        return elapsed, replaced


def measure(bench: Bench, runs: int) -> dict[str, tuple[float, float]]:
    names = sorted(bench.built)
    cases: list[tuple[str, list[str]]] = [
        ("unchanged reload", []),
        ("one object changed", [CHANGING_ONE]),
        ("all objects changed", names),
    ]
    results: dict[str, tuple[float, float]] = {}

    outside, inside = [], []
    for _ in range(runs):
        pin_root, state = bench.fresh()
        outside.append(bench.process("load", pin_root, state))
        bench.done(pin_root)
        pin_root, state = bench.fresh()
        elapsed, _ = bench.in_process("load", pin_root, state)
        inside.append(elapsed)
        bench.done(pin_root)
    results["full load"] = (statistics.median(outside), statistics.median(inside))

    for label, changing in cases:
        outside, inside = [], []
        pin_root, state = bench.fresh()
        bench.in_process("load", pin_root, state)
        for _ in range(runs):
            bench.change(changing)
            outside.append(bench.process("reload", pin_root, state))
            bench.change(changing)
            elapsed, replaced = bench.in_process("reload", pin_root, state)
            if replaced != sorted(changing):  # make sure the case is what it says
                raise SystemExit(f"{label}: replaced programs of {replaced}, expected {changing}")
            inside.append(elapsed)
        bench.done(pin_root)
        results[label] = (statistics.median(outside), statistics.median(inside))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("reload_timing: needs root (bpf(2), mounting a bpffs)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="bpfloader-bench-"))
    try:
        sources = sorted(str(p) for p in (REPO / "etc" / "bpf").glob("*.c"))
        built = {
            Path(p).name: Path(p).read_bytes() for p in build(sources, str(work / "built"), [])
        }
        bench = Bench(work, built)
        results = measure(bench, args.runs)
    finally:
        for mount in sorted(work.glob("bpffs*")):
            if os.path.ismount(mount):
                kpins.unmount(str(mount))
        shutil.rmtree(work, ignore_errors=True)

    full_out, full_in = results["full load"]
    print(
        f"etc/bpf: {', '.join(sorted(built))}; kernel {os.uname().release}; "
        f"median of {args.runs} runs"
    )
    print(f"{'case':22} {'process ms':>10} {'ratio':>6}   {'in-process ms':>13} {'ratio':>6}")
    for label, (outside, inside) in results.items():
        print(
            f"{label:22} {outside * 1000:10.1f} {outside / full_out:6.2f}   "
            f"{inside * 1000:13.2f} {inside / full_in:6.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
