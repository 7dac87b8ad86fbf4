"""The etc/bpf examples load into a private bpffs with the pins the contract promises."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import pins_in

pytestmark = pytest.mark.kernel


def test_examples_pin_as_named(compile_bpf, source_dir, bpffs, bpfloader_cli):
    for example in ("myschedtp.c", "execsnoop.c"):
        shutil.copy(compile_bpf(example), source_dir)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    assert pins_in(bpffs) == {
        "map_myschedtp_cpu_pid_map",
        "prog_myschedtp_tracepoint_sched_sched_switch",
        "prog_execsnoop_tracepoint_syscalls_sys_enter_execve",
    }
    assert "2 loaded, 0 skipped, 0 failed" in run.stdout
