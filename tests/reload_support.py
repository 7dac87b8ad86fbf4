"""Helpers shared by the reload, fault-injection and status/unload tests: kernel ids and names
read from pins, map elements by struct format, foreign pins, and the loader under strace."""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from bpfloader.kernel import maps as kmaps
from bpfloader.kernel import pins as kpins
from bpfloader.kernel import programs as kprogs
from tests.conftest import REPO, Run, with_cache_dir

HASH = 1  # enum bpf_map_type
SWITCH = "tracepoint_sched_sched_switch"
WAKEUP = "tracepoint_sched_sched_wakeup"
MYSCHEDTP = {"map_myschedtp_cpu_pid_map", f"prog_myschedtp_{SWITCH}"}


def swap_pins(name: str, subdir: str = "") -> set[str]:
    """The pins (relative to the pin root) of an object built from r_swap.c as NAME.o."""
    prefix = f"{subdir}/" if subdir else ""
    return {
        f"{prefix}map_{name}_values",
        f"{prefix}map_{name}_counts",
        f"{prefix}prog_{name}_{SWITCH}",
        f"{prefix}prog_{name}_{WAKEUP}",
    }


def prog_info(path: Path | str) -> kprogs.ProgramInfo:
    fd = kpins.open_pinned(str(path))
    try:
        return kprogs.program_info(fd)
    finally:
        os.close(fd)


def map_info(path: Path | str) -> kmaps.MapInfo:
    fd = kpins.open_pinned(str(path))
    try:
        return kmaps.map_info(fd)
    finally:
        os.close(fd)


def kernel_id(path: Path | str) -> int:
    """The kernel id of the map or program pinned at `path`."""
    return map_info(path).id if Path(path).name.startswith("map_") else prog_info(path).id


def map_put(
    path: Path | str, key: int, value: int, key_fmt: str = "i", value_fmt: str = "Q"
) -> None:
    fd = kpins.open_pinned(str(path))
    try:
        kmaps.update(fd, struct.pack(key_fmt, key), struct.pack(value_fmt, value))
    finally:
        os.close(fd)


def map_items(path: Path | str, key_fmt: str = "i", value_fmt: str = "Q") -> dict[int, int]:
    """Every element of the map pinned at `path`, unpacked."""
    fd = kpins.open_pinned(str(path))
    try:
        info = kmaps.map_info(fd)
        assert (info.key_size, info.value_size) == (
            struct.calcsize(key_fmt),
            struct.calcsize(value_fmt),
        ), info
        items = {}
        key = kmaps.next_key(fd, None, info.key_size)
        while key is not None:
            value = kmaps.lookup(fd, key, info.value_size)
            assert value is not None
            items[struct.unpack(key_fmt, key)[0]] = struct.unpack(value_fmt, value)[0]
            key = kmaps.next_key(fd, key, info.key_size)
        return items
    finally:
        os.close(fd)


def pin_foreign_map(path: Path | str) -> int:
    """Pin a map that bpfloader did not make at `path`; its kernel id."""
    fd = kmaps.create_map("foreign", HASH, 4, 4, 8, 0)
    try:
        kpins.pin(fd, str(path))
        return kmaps.map_info(fd).id
    finally:
        os.close(fd)


def bpf_calls(trace: str) -> Counter[str]:
    """bpf(2) commands in an `strace -f -e trace=bpf` log, counted (an interrupted call that
    strace shows as `<unfinished ...>` and `<... bpf resumed>` is counted once)."""
    return Counter(re.findall(r"^\d+\s+bpf\((BPF_[A-Z_]+)", trace, re.MULTILINE))


def traced(trace_file: Path, state_dir: Path, *args: str | Path) -> tuple[Run, Counter[str]]:
    """Run `bpfloader ARGS` under `strace -f -e trace=bpf`: its result and its bpf(2) calls.

    strace exits with the status of the program it traced. Its object cache is beside the state
    directory (conftest's `cache_dir`, for the `state_dir` fixture)."""
    argv = with_cache_dir([str(a) for a in args], state_dir.parent / "cache-bpfloader")
    done = subprocess.run(
        [
            "strace",
            "-f",
            "-e",
            "trace=bpf",
            "-o",
            str(trace_file),
            sys.executable,
            "-m",
            "bpfloader",
            *argv,
            "--state-dir",
            str(state_dir),
            "--log-target",
            "console",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    trace = trace_file.read_text()
    # The trace is real: it ends with the loader's own exit, as strace saw it.
    assert re.search(
        rf"^\d+\s+\+\+\+ exited with {done.returncode} \+\+\+$", trace, re.MULTILINE
    ), f"strace exited {done.returncode}\n{done.stderr}\n{trace[-2000:]}"
    return Run(done.returncode, done.stdout, done.stderr), bpf_calls(trace)


def status_json(bpfloader_cli: Any, source_dir: Path, bpffs: Path) -> dict[str, Any]:
    run = bpfloader_cli("status", "--json", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    report: dict[str, Any] = json.loads(run.stdout)
    return report


def log_lines(stderr: str, level: str) -> list[str]:
    """The console events of one level ('info', 'warning', 'err', ...), prefix removed."""
    prefix = f"bpfloader: {level}: "
    return [line.removeprefix(prefix) for line in stderr.splitlines() if line.startswith(prefix)]


def summary(stdout: str, root: Path) -> dict[str, tuple[str, str, str, int]]:
    """pin (relative) -> (action, owner, mode, kernel id), from the summary table of a run."""
    rows = {}
    for line in stdout.splitlines():
        if line.startswith(f"{root}/"):
            path, action, owner, mode, kernel_id, *_ = line.split()
            rows[os.path.relpath(path, root)] = (action, owner, mode, int(kernel_id))
    return rows


def ids_of(root: Path, pins: set[str]) -> dict[str, int]:
    return {rel: kernel_id(root / rel) for rel in pins}


def install(obj: Path, directory: Path) -> Path:
    """Put `obj` into the source directory (atomically, as a package manager would)."""
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / obj.name
    shutil.copy(obj, directory / f".{obj.name}.tmp")
    os.replace(directory / f".{obj.name}.tmp", final)
    return final


def where(source_dir: Path, bpffs: Path) -> tuple[str, ...]:
    return ("--dir", str(source_dir), "--pin-root", str(bpffs))
