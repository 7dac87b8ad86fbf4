"""`bpfloader load --dry-run` prints the whole plan, touches nothing, and needs no root."""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import bpfloader.loader.report
import bpfloader.loader.run
from bpfloader import cli
from bpfloader.version import LOADER_VERSION

NOBODY = 65534


def running_kernel() -> str:
    """The running kernel as the loader's messages print it (major.minor.patch)."""
    match = re.match(r"(\d+)(?:\.(\d+))?(?:\.(\d+))?", os.uname().release)
    assert match is not None
    return ".".join(g or "0" for g in match.groups())


def kernel_at_least(major: int, minor: int) -> bool:
    got = tuple(int(x) for x in running_kernel().split(".")[:2])
    return got >= (major, minor)


@pytest.fixture
def world(compile_bpf) -> Iterator[Path]:
    """A source directory anyone can read (pytest's tmp_path is private to root)."""
    top = Path(tempfile.mkdtemp(prefix="bpfloader-dry-run-"))
    try:
        top.chmod(0o755)
        src = top / "etc-bpf"
        (src / "net_shared").mkdir(parents=True)
        src.chmod(0o755)
        (src / "net_shared").chmod(0o755)
        shutil.copyfile(compile_bpf("pure_plan.c"), src / "plan.o")
        shutil.copyfile(compile_bpf("pure_prefixes.c"), src / "net_shared" / "prefixes@v1.o")
        (src / "broken.o").write_text("not an object\n")
        for path in (src / "plan.o", src / "net_shared" / "prefixes@v1.o", src / "broken.o"):
            path.chmod(0o644)
        yield top
    finally:
        shutil.rmtree(top)


def expected_plan(src: Path, pins: Path) -> str:
    """The dry run of `world` on this machine, written out."""
    kernel, arch = running_kernel(), platform.machine()
    assert kernel_at_least(6, 1), "the expectations below assume a kernel >= 6.1"
    new_map_reason = f"needs kernel >= 5.10.0 and < 6.1.0, running {kernel}"
    not_x86 = (
        f"  skip   map  {pins}/map_plan_not_x86_map: ignored on this platform ({arch})"
        if arch == "x86_64"
        else f"  create map  {pins}/map_plan_not_x86_map  0:0 0600"
    )
    lines = [
        f"{src}/broken.o: FAIL: not an ELF file",  # the path once
        f"{src}/plan.o:",
        f"  skip   map  {pins}/map_plan_new_map: {new_map_reason}",
        f"  create map  {pins}/map_plan_always_map  0:1234 0640",
        f"  create map  {pins}/map__common_map  0:1235 0660",
        f"  create map  {pins}/elsewhere/map_plan_subdir_map  0:0 0600",
        not_x86,
        f"  create map  {pins}/map_plan_not_user_map  0:0 0600",
        f"  skip   map  {pins}/map_plan_new_loader_map: needs loader version >= 49 and < 65536, "
        f"this loader is {LOADER_VERSION}",
        f"  skip   prog {pins}/prog_plan_tracepoint_opt_uses_new: uses map 'new_map', "
        f"skipped here ({new_map_reason})",
        f"  load   prog {pins}/prog_plan_tracepoint_always_uses_always  0:1234 0440",
        f"  skip   prog {pins}/prog_plan_schedcls_clat: variant 'schedcls/clat$4_14': needs "
        "kernel >= 4.14.0 and < 5.10.0, "
        f"running {kernel}",
        f"  load   prog {pins}/prog_plan_schedcls_clat  0:0 0440  variant 'schedcls/clat$5_10'",
        f"  skip   prog {pins}/prog_plan_xdp_old_loader: needs loader version >= 0 and < 48, "
        f"this loader is {LOADER_VERSION}",
        f"  load   prog {pins}/prog_dir/prog_plan_xdp_pinned  7:8 0440",
        f"  load   prog {pins}/prog_plan_skfilter_not_userdebug  0:0 0440",
        f"{src}/net_shared/prefixes@v1.o:",
    ]
    sections = [
        "kprobe/do_unlinkat", "kretprobe/do_unlinkat", "uprobe/usr/bin/true",
        "uretprobe/usr/bin/true", "tracepoint/sched/sched_switch", "perf_event/cpu_clock",
        "skfilter/allow", "schedcls/ingress/tether", "schedact/act", "xdp/pass",
        "cgroupskb/count", "ingress/count", "egress/count", "cgroupsock/inet",
        "cgroupsockcreate/inet", "cgroupsockrelease/inet", "postbind4/p", "postbind6/p",
        "bind4/b", "bind6/b", "connect4/c", "connect6/c", "recvmsg4/r", "recvmsg6/r",
        "sendmsg4/s", "sendmsg6/s", "getsockopt/g", "setsockopt/s", "sockops/update", "sysctl",
    ]  # fmt: skip
    lines += [
        f"  load   prog {pins}/net_shared/prog_prefixes_{s.replace('/', '_')}  0:0 0440"
        for s in sections
    ]
    assert LOADER_VERSION == 48  # the loader gates of pure_plan.c sit around 48
    return "\n".join(lines) + "\n"


def test_dry_run_prints_every_map_and_program(world, bpfloader_cli):
    src, pins = world / "etc-bpf", world / "no" / "such" / "pins"
    run = bpfloader_cli("load", "--dry-run", "--dir", src, "--pin-root", pins)
    assert run.returncode == 3, run.stderr  # broken.o, not critical, would fail
    assert run.stdout == expected_plan(src, pins)
    assert not (world / "no").exists()


def test_dry_run_with_a_build_type(world, bpfloader_cli):
    src, pins = world / "etc-bpf", world / "pins"
    run = bpfloader_cli(
        "load", "--dry-run", "--dir", src, "--pin-root", pins, "--build-type", "userdebug"
    )
    assert run.returncode == 3, run.stderr  # broken.o
    arch = platform.machine()
    assert (
        f"  skip   prog {pins}/prog_plan_skfilter_not_userdebug: "
        f"ignored on this platform ({arch}/userdebug)"
    ) in run.stdout.splitlines()
    assert f"  create map  {pins}/map_plan_not_user_map  0:0 0600" in run.stdout.splitlines()


def test_dry_run_reports_a_failed_critical_object_in_its_exit_status(
    world, compile_bpf, bpfloader_cli
):
    src, pins = world / "etc-bpf", world / "pins"
    bad = compile_bpf("pure_errors.c", None, "-DNO_LICENSE", "-DMAKE_CRITICAL")
    shutil.copyfile(bad, src / "crit.o")
    run = bpfloader_cli("load", "--dry-run", "--dir", src, "--pin-root", pins)
    assert run.returncode == 1
    lines = run.stdout.splitlines()
    assert lines[1] == (
        f'{src}/crit.o (critical): FAIL: no "license" section (declare one with LICENSE("GPL"))'
    )
    # The other objects are still planned.
    assert f"{src}/plan.o:" in lines and f"{src}/net_shared/prefixes@v1.o:" in lines
    assert not pins.exists()


def run_cli_as(uid: int, gid: int, argv: list[str]) -> dict[str, object]:
    """cli.main(argv) in a forked child that dropped to uid/gid first; what it printed."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with open("/proc/self/status") as f:
                capeff = next(line.split()[1] for line in f if line.startswith("CapEff:"))
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                rc = cli.main(argv)
            result = {
                "rc": rc,
                "stdout": out.getvalue(),
                "stderr": err.getvalue(),
                "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()],
                "capeff": capeff,
            }
            os.write(write_end, json.dumps(result).encode())
            status = 0
        except BaseException as e:  # report anything to the parent, then leave
            with contextlib.suppress(Exception):
                os.write(write_end, json.dumps({"exception": repr(e)}).encode())
        finally:
            os._exit(status)
    os.close(write_end)
    chunks = []
    with os.fdopen(read_end, "rb") as pipe:
        while chunk := pipe.read(65536):
            chunks.append(chunk)
    _, wait_status = os.waitpid(pid, 0)
    result: dict[str, object] = json.loads(b"".join(chunks) or b"{}")
    result["exit"] = os.waitstatus_to_exitcode(wait_status)
    return result


def test_dry_run_needs_no_root(world):
    src, pins = world / "etc-bpf", world / "no" / "such" / "pins"
    argv = ["load", "--dry-run", "--dir", str(src), "--pin-root", str(pins)]
    # Everything the run uses is imported here, before the child gives up root: the repo
    # need not be readable by nobody. (cli._load imports report and run lazily.)
    assert bpfloader.loader.report.format_plan and bpfloader.loader.run.plan_run
    as_root = io.StringIO()
    with contextlib.redirect_stdout(as_root):
        assert cli.main(argv) == 3  # broken.o would fail

    child = run_cli_as(NOBODY, NOBODY, argv)
    assert "exception" not in child, child.get("exception")
    assert child["exit"] == 0
    assert child["ids"] == [NOBODY] * 4
    assert child["capeff"] == "0000000000000000"  # no capability at all: no CAP_BPF
    assert child["rc"] == 3
    assert child["stderr"] == ""
    assert child["stdout"] == expected_plan(src, pins)
    assert child["stdout"] == as_root.getvalue()
    assert not (world / "no").exists()
