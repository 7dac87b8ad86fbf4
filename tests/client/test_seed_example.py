"""The seed's examples end to end: build, load, attach the pinned program, see it work.

myschedtp: sched_switch writes the next pid per CPU into cpu_pid_map, read back through the
client with BPF_F_RDONLY. execsnoop: every execve prints "Hello, BPF World!" into the trace
buffer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfloader.client import BpfMap, Program
from bpfloader.kernel import perf

pytestmark = pytest.mark.kernel

SCHED_PROG = "prog_myschedtp_tracepoint_sched_sched_switch"
SCHED_MAP = "map_myschedtp_cpu_pid_map"
EXEC_PROG = "prog_execsnoop_tracepoint_syscalls_sys_enter_execve"
HELLO = "Hello, BPF World!"


def perf_attachments(prog_id: int) -> list[dict[str, object]]:
    """bpftool's view of this process's perf events that carry program `prog_id`."""
    done = subprocess.run(["bpftool", "-j", "perf"], capture_output=True, text=True, check=True)
    return [
        a
        for a in json.loads(done.stdout or "[]")
        if a.get("pid") == os.getpid() and a.get("prog_id") == prog_id
    ]


@pytest.fixture
def examples_loaded(compile_bpf, source_dir, bpffs, bpfloader_cli) -> Path:
    for example in ("myschedtp.c", "execsnoop.c"):
        shutil.copy(compile_bpf(example), source_dir)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    return bpffs


@pytest.fixture
def one_cpu() -> Iterator[int]:
    """Run this process on one CPU for the test, so it knows which map slot is its own."""
    before = os.sched_getaffinity(0)
    cpu = min(before)
    os.sched_setaffinity(0, {cpu})
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def test_sched_switch_fills_cpu_pid_map(examples_loaded, one_cpu):
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    cpus = sorted(os.sched_getaffinity(0) | set(range(os.cpu_count() or 1)))
    with BpfMap.open(str(examples_loaded / SCHED_MAP), key="i", value="I", readonly=True) as m:
        assert m.info.max_entries == 1024
        assert {m[cpu] for cpu in cpus} == {0}  # nothing ran the program yet
        with Program.open(str(examples_loaded / SCHED_PROG)) as prog:
            attachment = prog.attach_tracepoint("sched", "sched_switch")
            assert len(perf_attachments(prog.info.id)) == 1
            try:
                deadline = time.monotonic() + 1.0
                seen: set[int] = set()
                mine = False
                while time.monotonic() < deadline:
                    subprocess.run(["/bin/true"], check=True)
                    time.sleep(0.005)  # switch away, and back in as next_pid on one_cpu
                    values = {m[cpu] for cpu in cpus}
                    seen |= values
                    if m[one_cpu] == os.getpid():
                        mine = True
                        break
            finally:
                attachment.close()
            assert perf_attachments(prog.info.id) == []
    assert mine, f"this process never showed up as next_pid on CPU {one_cpu}: saw {seen}"
    nonzero = seen - {0}
    assert nonzero
    assert all(0 < v <= pid_max for v in nonzero), seen


def trace_lines(root: str) -> list[str]:
    return Path(root, "trace").read_text(errors="replace").splitlines()


def test_execsnoop_says_hello_on_execve(examples_loaded):
    root = perf.tracefs_root()
    tracing_on = Path(root, "tracing_on")
    was_on = tracing_on.read_text().strip()
    tracing_on.write_text("1")
    Path(root, "trace").write_text("")  # O_TRUNC clears the buffer
    hello = re.compile(r"-(\d+)\s+\[\d+\].*bpf_trace_printk: " + re.escape(HELLO))
    try:
        with Program.open(str(examples_loaded / EXEC_PROG)) as prog:
            assert prog.info.name == "bpf_prog"
            with prog.attach_tracepoint("syscalls", "sys_enter_execve"):
                (attached,) = perf_attachments(prog.info.id)
                assert attached["tracepoint"] == "sys_enter_execve"
                child = subprocess.Popen(["/bin/true"])
                child.wait()
                deadline = time.monotonic() + 1.0
                pids: set[int] = set()
                while time.monotonic() < deadline and child.pid not in pids:
                    pids = {int(m.group(1)) for m in map(hello.search, trace_lines(root)) if m}
                    time.sleep(0.01)
            assert perf_attachments(prog.info.id) == []
    finally:
        tracing_on.write_text(was_on)
    assert child.pid in pids, f"no '{HELLO}' from pid {child.pid} in {root}/trace"
