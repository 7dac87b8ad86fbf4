"""The operator's commands: `bpfloader attach` (pinned as a link that outlives the command, or
held until interrupted), `bpfloader detach`, `bpfloader map dump`; errors as one line, exit 2;
and the target syntax, parsed into the client's calls."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_attach_cgroup import cgroup, in_child, udp_traffic  # noqa: F401 (a fixture)

from bpfloader.client import BpfMap, targets
from bpfloader.errors import AttachError
from bpfloader.kernel import system
from tests.conftest import REPO

TRACEPOINT = "tracepoint:syscalls:sys_enter_getppid"
GETPPID_PROG = "prog_client_tracing_tracepoint_syscalls_sys_enter_getppid"


@pytest.fixture
def pins(compile_bpf, source_dir, bpffs, bpfloader_cli) -> Path:
    for source in ("client_tracing.c", "client_maps.c", "client_cgroup.c"):
        shutil.copy(compile_bpf(source), source_dir)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    with BpfMap.open(str(bpffs / "map_client_tracing_watched_tgid"), key="I", value="I") as m:
        m[0] = os.getpid()
    return bpffs


@pytest.fixture
def hits(pins) -> Iterator[BpfMap]:
    with BpfMap.open(str(pins / "map_client_tracing_hits"), key="I", value="Q") as m:
        yield m


def getppid_hits(hits: BpfMap, calls: int) -> int:
    for _ in range(calls):
        os.getppid()
    return int(hits[0])


@pytest.mark.kernel
def test_pinned_attachment_outlives_the_command_until_detached(pins, hits, bpfloader_cli):
    link = pins / "getppid_link"
    done = bpfloader_cli("attach", pins / GETPPID_PROG, TRACEPOINT, "--pin", link, check=True)
    assert done.stdout.startswith(f"{TRACEPOINT}: pinned at {link} (link ")
    assert getppid_hits(hits, 5) == 5  # the command is gone; its link is not
    done = bpfloader_cli("detach", link, check=True)
    assert done.stdout.startswith(f"{link}: detached perf_event link ")
    assert getppid_hits(hits, 5) == 5
    assert not link.exists()


@pytest.mark.kernel
def test_unpinned_attachment_is_held_until_interrupted(pins, hits):
    command = [sys.executable, "-m", "bpfloader", "attach", str(pins / GETPPID_PROG), TRACEPOINT]
    with subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, text=True) as holder:
        assert holder.stdout is not None
        line = holder.stdout.readline()
        assert line.startswith(f"{TRACEPOINT}: attached (link ") and "until interrupted" in line
        assert getppid_hits(hits, 3) == 3
        holder.send_signal(signal.SIGTERM)
        assert holder.wait(timeout=10) == 0
    assert getppid_hits(hits, 3) == 3


@pytest.mark.kernel
def test_cgroup_and_per_cpu_links_through_the_cli(pins, bpfloader_cli, cgroup):  # noqa: F811
    egress = pins / "egress_link"
    skb = pins / "prog_client_cgroup_cgroupskb_count"
    bpfloader_cli("attach", skb, f"cgroup:{cgroup}:egress", "--pin", egress, check=True)
    clock = pins / "clock_links"
    cpu_clock = pins / "prog_client_tracing_perf_event_cpu_clock"
    bpfloader_cli("attach", cpu_clock, "perf_event:50", "--pin", clock, check=True)
    with BpfMap.open(str(pins / "map_client_cgroup_hits"), key="I", value="Q") as counts:
        in_child(udp_traffic, cgroup)
        assert counts[1] == 5  # client_cgroup.c's EGRESS slot
    assert sorted(os.listdir(clock)) == [f"cpu{cpu}" for cpu in system.online_cpus()]
    done = bpfloader_cli("detach", egress, clock, check=True)
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"{egress}: detached cgroup link ")
    assert all(line.startswith(f"{clock}: detached perf_event link ") for line in lines[1:])
    assert not egress.exists() and not clock.exists()


@pytest.mark.kernel
def test_map_dump_plain_json_and_per_cpu(pins, bpfloader_cli):
    hash_pin = pins / "map_client_maps_hash"
    with BpfMap.open(str(hash_pin), key="I", value="Q") as m:
        m.update({1: 10, 2: 20})
    plain = bpfloader_cli("map", "dump", hash_pin, "--key-type", "u32", "--value-type", "u64")
    assert sorted(plain.stdout.splitlines()) == ["1: 10", "2: 20"]
    raw = bpfloader_cli(
        "map", "dump", hash_pin, "--json", "--key-type", "hex", "--value-type", "hex"
    )
    assert sorted(json.loads(raw.stdout), key=lambda e: e["key"]) == [
        {"key": "01000000", "value": "0a00000000000000"},
        {"key": "02000000", "value": "1400000000000000"},
    ]
    typed = bpfloader_cli("map", "dump", hash_pin, "--json", check=True)  # by the map's BTF
    assert sorted(json.loads(typed.stdout), key=lambda e: e["key"]) == [
        {"key": 1, "value": 10},
        {"key": 2, "value": 20},
    ]
    per_cpu = pins / "map_client_maps_percpu_calls"
    done = bpfloader_cli("map", "dump", per_cpu, "--key-type", "u32", "--value-type", "u64")
    assert done.stdout == "0: [" + ", ".join(["0"] * len(system.possible_cpus())) + "]\n"


@pytest.mark.kernel
def test_cli_errors_are_one_line_with_exit_2(pins, bpfloader_cli):
    prog, hash_pin = pins / GETPPID_PROG, pins / "map_client_maps_hash"
    skb = pins / "prog_client_cgroup_cgroupskb_count"
    cases: list[tuple[tuple[Any, ...], str]] = [
        (("attach", hash_pin, TRACEPOINT), f"{hash_pin}: a map pin, not a program pin"),
        (("attach", prog, "xdp:lo"), "a TRACEPOINT program cannot attach to an interface's XDP"),
        (("attach", skb, "cgroup:/proc:egress"), "/proc: not a cgroup v2 directory"),
        (("attach", prog, "bogus:x"), "'bogus:x': unknown kind of target"),
        (("attach", prog, "socket:3"), "a socket filter attaches to a socket of its own"),
        (("detach", prog), f"{prog}: a program pin, not a link pin"),
        (("map", "dump", hash_pin, "--value-type", "u32"), "the map's value is 8 bytes"),
        (("map", "dump", hash_pin, "--key-type", "word"), "'word' is not a type"),
    ]
    for args, message in cases:
        done = bpfloader_cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("bpfloader: ") and message in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1


def test_client_imports_without_root_or_pyroute2():
    """A service imports the client as its own unprivileged user, maybe without pyroute2: it
    is needed only to attach to a network interface."""
    code = (
        "import sys; sys.modules['pyroute2'] = None\n"  # importing it would raise
        "import bpfloader.client, bpfloader.client.netdev\n"
        "from bpfloader.client import *\n"
        "print(sorted(m for m in sys.modules if m.startswith('pyroute2.')))"
    )
    nobody = {"user": 65534, "group": 65534, "extra_groups": []}
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, **nobody)
    assert (done.returncode, done.stdout) == (0, "[]\n"), done.stderr


def test_target_syntax(monkeypatch):
    calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []

    def recorder(name: str) -> Any:
        return lambda prog, *args, **kwargs: calls.append((name, args, kwargs))

    for module in (targets.tracing, targets.cgroups, targets.netdev):
        for name in dir(module):
            if name.startswith("attach_"):
                monkeypatch.setattr(module, name, recorder(name))
    for target in (
        "tracepoint:sched:sched_switch",
        "kprobe:do_sys_open",
        "kretprobe:do_sys_open+0x8",
        "uprobe:/bin/bash:readline",
        "uretprobe:/bin/bash:readline+4",
        "uprobe:/usr/lib/x.so:0x1f0",
        "perf_event",
        "perf_event:1000",
        "cgroup:/sys/fs/cgroup/a:b",
        "cgroup:/sys/fs/cgroup/x:egress",
        "xdp:eth0",
        "xdp:eth0:driver",
        "tc:eth0:egress",
        "tc:eth0:ingress:7",
        "raw_tracepoint:sched_switch",
        "fentry",
        "lsm",
    ):
        targets.attach(None, target)  # type: ignore[arg-type]
    assert calls == [
        ("attach_tracepoint", ("sched", "sched_switch"), {}),
        ("attach_kprobe", ("do_sys_open", 0), {"retprobe": False}),
        ("attach_kprobe", ("do_sys_open", 8), {"retprobe": True}),
        ("attach_uprobe", ("/bin/bash", "readline", 0), {"retprobe": False}),
        ("attach_uprobe", ("/bin/bash", "readline", 4), {"retprobe": True}),
        ("attach_uprobe", ("/usr/lib/x.so", None, 0x1F0), {"retprobe": False}),
        ("attach_perf_event", (99,), {}),
        ("attach_perf_event", (1000,), {}),
        ("attach_cgroup", ("/sys/fs/cgroup/a:b", None), {}),
        ("attach_cgroup", ("/sys/fs/cgroup/x", "egress"), {}),
        ("attach_xdp", ("eth0", "generic"), {}),
        ("attach_xdp", ("eth0", "driver"), {}),
        ("attach_tcx", ("eth0", "egress"), {}),  # None here: then a clsact filter
        ("attach_tc", ("eth0", "egress", None), {}),
        ("attach_tc", ("eth0", "ingress", 7), {}),
        ("attach_raw_tracepoint", ("sched_switch",), {}),
        ("attach_tracing", ("fentry",), {}),
        ("attach_tracing", ("lsm",), {}),
    ]
    for bad, message in (
        ("uprobe:/bin/bash", "expected uprobe:BINARY:SYMBOL"),
        ("kprobe:", "nothing to attach to"),
        ("perf_event:fast", "'fast' is not a number"),
        ("raw_tracepoint:", "expected raw_tracepoint:NAME"),
        ("fentry:do_unlinkat", "attaches where it was loaded for: write 'fentry'"),
    ):
        with pytest.raises(AttachError, match=message):
            targets.attach(None, bad)  # type: ignore[arg-type]
