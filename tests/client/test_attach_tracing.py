"""Tracing attachments fire: a tracepoint, a uprobe and a uretprobe on a function of a binary
built here with gcc, the cpu clock of every CPU; a pinned link keeps its program attached
after the process that made it is gone; kprobes, absent from this kernel, say so."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfloader.client import BpfMap, Program, detach_pinned
from bpfloader.client.symbols import function_offset
from bpfloader.errors import AttachError, KernelError, PinError
from bpfloader.kernel import links as klinks
from bpfloader.kernel import system
from tests.binary_support import PROBED_C

pytestmark = pytest.mark.kernel

TRACEPOINT, UPROBE, URETPROBE, PERF_EVENT, KPROBE = range(5)  # client_tracing.c's slots
PROG = "prog_client_tracing_"


@pytest.fixture(scope="session")
def probed_binary(build_dir: Path) -> Path:
    source, binary = build_dir / "probed.c", build_dir / "probed"
    source.write_text(PROBED_C)
    subprocess.run(["gcc", "-O1", "-o", binary, source], check=True)
    return binary


@pytest.fixture
def pins(compile_bpf, source_dir, bpffs, bpfloader_cli) -> Path:
    shutil.copy(compile_bpf("client_tracing.c"), source_dir)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    with BpfMap.open(str(bpffs / "map_client_tracing_watched_tgid"), key="I", value="I") as m:
        m[0] = os.getpid()
    return bpffs


@pytest.fixture
def hits(pins) -> Iterator[BpfMap]:
    with BpfMap.open(str(pins / "map_client_tracing_hits"), key="I", value="Q") as m:
        yield m


def program(pins: Path, section: str) -> Program:
    return Program.open(str(pins / (PROG + section)))


def getppid_calls(count: int) -> None:
    for _ in range(count):
        os.getppid()


def test_tracepoint_fires_through_a_perf_link(pins, hits):
    with program(pins, "tracepoint_syscalls_sys_enter_getppid") as prog:
        assert prog.type_name == "TRACEPOINT" and prog.info.verified_insns > 0
        assert prog.info.name == "on_getppid" and len(bytes.fromhex(prog.info.tag)) == 8
        with prog.attach_tracepoint("syscalls", "sys_enter_getppid") as attachment:
            ((_, link),) = attachment.links
            info = klinks.link_info(link)
            assert (info.type_name, info.prog_id) == ("perf_event", prog.info.id)
            getppid_calls(25)
            assert hits[TRACEPOINT] == 25
            taken = pins / "map_client_tracing_hits"
            with pytest.raises(PinError) as e:
                attachment.pin(str(taken))
            assert str(e.value) == (
                f"{taken}: cannot pin tracepoint:syscalls:sys_enter_getppid here:"
                " BPF_OBJ_PIN failed: EEXIST (File exists)"
            )
        getppid_calls(5)
        assert hits[TRACEPOINT] == 25


def test_uprobe_and_uretprobe_fire_on_a_function_of_a_built_binary(pins, hits, probed_binary):
    symbol = "bpfloader_probed"
    with (
        program(pins, "uprobe_probed") as on_call,
        program(pins, "uretprobe_probed") as on_return,
    ):
        with (
            on_call.attach_uprobe(str(probed_binary), symbol) as entry,
            on_return.attach_uprobe(str(probed_binary), symbol, retprobe=True) as exit_,
        ):
            assert entry.target == f"uprobe:{probed_binary}:{symbol}"
            assert exit_.target.startswith("uretprobe:")
            subprocess.run([probed_binary, "7"], check=True)
            assert (hits[UPROBE], hits[URETPROBE]) == (7, 7)
        offset = function_offset(str(probed_binary), symbol)
        with on_call.attach_uprobe(str(probed_binary), offset=offset):
            subprocess.run([probed_binary, "3"], check=True)
        with on_call.attach_uprobe(str(probed_binary), symbol, pid=os.getpid()):
            subprocess.run([probed_binary, "3"], check=True)  # another process: not counted
        subprocess.run([probed_binary, "3"], check=True)  # detached
    assert (hits[UPROBE], hits[URETPROBE]) == (10, 7)


def test_perf_event_fires_on_the_cpu_clock_of_every_cpu(pins, hits, tmp_path):
    with program(pins, "perf_event_cpu_clock") as prog:
        with prog.attach_perf_event(frequency=1000) as attachment:
            assert [name for name, _ in attachment.links] == [
                f"cpu{cpu}" for cpu in system.online_cpus()
            ]
            deadline = time.monotonic() + 2
            while hits[PERF_EVENT] < 20 and time.monotonic() < deadline:
                sum(range(10000))
            assert hits[PERF_EVENT] >= 20
            attachment.pin(str(pins / "clock_links"))
        assert sorted(os.listdir(pins / "clock_links")) == [n for n, _ in attachment.links]
        detached = detach_pinned(str(pins / "clock_links"))
        assert {link.prog_id for link in detached} == {prog.info.id}
        assert not (pins / "clock_links").exists()
        count = hits[PERF_EVENT]
        time.sleep(0.05)
        assert hits[PERF_EVENT] == count


def test_kprobes_are_not_supported_by_this_kernel(pins):
    assert not os.path.exists("/sys/bus/event_source/devices/kprobe")  # CONFIG_KPROBES unset
    with program(pins, "kprobe_do_nanosleep") as prog:
        for retprobe in (False, True):
            with pytest.raises(AttachError, match=r"^kprobes not supported by this kernel"):
                prog.attach_kprobe("do_nanosleep", retprobe=retprobe)


def test_pinned_link_keeps_the_program_attached_after_its_process_exits(pins, hits):
    link_pin = str(pins / "getppid_link")
    child = os.fork()
    if child == 0:
        status = 1
        try:
            with program(pins, "tracepoint_syscalls_sys_enter_getppid") as prog:
                prog.attach_tracepoint("syscalls", "sys_enter_getppid").pin(link_pin)
            status = 0
        finally:
            os._exit(status)
    assert os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) == 0
    getppid_calls(10)
    assert hits[TRACEPOINT] == 10
    (detached,) = detach_pinned(link_pin)
    assert detached.type_name == "perf_event"
    assert not os.path.lexists(link_pin)
    getppid_calls(10)
    assert hits[TRACEPOINT] == 10


def test_without_perf_links_the_ioctl_attaches_but_cannot_pin(pins, hits, monkeypatch):
    def no_links(*args: object) -> int:
        raise KernelError("BPF_LINK_CREATE", errno.EINVAL)

    monkeypatch.setattr(klinks, "create_link", no_links)
    with program(pins, "tracepoint_syscalls_sys_enter_getppid") as prog:
        with prog.attach_tracepoint("syscalls", "sys_enter_getppid") as attachment:
            assert attachment.links == []
            getppid_calls(4)
            with pytest.raises(AttachError, match="cannot be pinned: this kernel has no BPF"):
                attachment.pin(str(pins / "nope"))
        getppid_calls(4)
    assert hits[TRACEPOINT] == 4


def test_wrong_targets_are_named(pins, probed_binary, tmp_path):
    with program(pins, "tracepoint_syscalls_sys_enter_getppid") as tracepoint:
        with pytest.raises(AttachError, match="a TRACEPOINT program cannot attach to a uprobe"):
            tracepoint.attach_uprobe(str(probed_binary), "bpfloader_probed")
        with pytest.raises(AttachError, match="cannot attach to an interface's XDP hook"):
            tracepoint.attach_xdp("lo")
        with pytest.raises(AttachError, match=r"^no tracepoint syscalls:no_such_event"):
            tracepoint.attach_tracepoint("syscalls", "no_such_event")
        with pytest.raises(AttachError, match=r"^invalid tracepoint '\.\.', 'x/y': expected a CAT"):
            tracepoint.attach_tracepoint("..", "x/y")
    with program(pins, "uprobe_probed") as uprobe:
        with pytest.raises(AttachError, match="which takes TRACEPOINT programs"):
            uprobe.attach_tracepoint("syscalls", "sys_enter_getppid")
        with pytest.raises(AttachError, match="no function 'no_such_function'"):
            uprobe.attach_uprobe(str(probed_binary), "no_such_function")
        text = tmp_path / "text"
        text.write_text("not elf")
        with pytest.raises(AttachError, match="not an ELF file"):
            uprobe.attach_uprobe(str(text), "main")
        with pytest.raises(AttachError, match="cannot read it"):
            uprobe.attach_uprobe(str(tmp_path / "missing"), "main")
    with pytest.raises(PinError, match="a map pin, not a program pin"):
        Program.open(str(pins / "map_client_tracing_hits"))
