"""Cgroup attachments on a cgroup v2 directory made for the test: every hook counts what a
process placed in the cgroup does, and nothing of what this process (outside it) does. Links
are pinnable; kernels without cgroup links get BPF_PROG_ATTACH."""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import socket
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bpfloader.client import Attachment, BpfMap, Program, detach_pinned
from bpfloader.errors import AttachError, KernelError
from bpfloader.kernel import links as klinks

pytestmark = pytest.mark.kernel

SLOTS = [  # client_cgroup.c's counters, in order
    *("ingress", "egress", "sockcreate", "bind4", "postbind4", "connect4"),
    *("sendmsg4", "recvmsg4", "getsockopt", "setsockopt", "sysctl", "sockops"),
]
PROGRAMS = {  # pin suffix -> attach type given (None: found by the client)
    "ingress_count": "ingress",
    "cgroupskb_count": "egress",
    "cgroupsockcreate_count": None,
    "bind4_count": None,
    "postbind4_count": None,
    "connect4_count": None,
    "sendmsg4_count": None,
    "recvmsg4_count": None,
    "getsockopt_count": None,
    "setsockopt_count": None,
    "sysctl_count": None,
    "sockops_count": None,
}
_names = itertools.count()


def cgroup2_root() -> str:
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            _, mount_point, fstype, *_ = line.split()
            if fstype == "cgroup2":
                return mount_point
    raise AssertionError("no cgroup2 filesystem mounted")


@pytest.fixture
def cgroup() -> Iterator[str]:
    path = os.path.join(cgroup2_root(), f"bpfloader-test-{os.getpid()}-{next(_names)}")
    os.mkdir(path)
    try:
        yield path
    finally:
        os.rmdir(path)  # its processes have exited; links on it do not keep it


@pytest.fixture
def pins(compile_bpf, source_dir, bpffs, bpfloader_cli) -> Path:
    shutil.copy(compile_bpf("client_cgroup.c"), source_dir)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    return bpffs


@pytest.fixture
def hits(pins) -> Iterator[Callable[[], dict[str, int]]]:
    with BpfMap.open(str(pins / "map_client_cgroup_hits"), key="I", value="Q") as m:
        yield lambda: {name: m[slot] for slot, name in enumerate(SLOTS) if m[slot]}


def program(pins: Path, suffix: str) -> Program:
    return Program.open(str(pins / f"prog_client_cgroup_{suffix}"))


def in_child(work: Callable[[], None], cgroup: str | None = None) -> None:
    """Run `work` in a forked child, placed in `cgroup` first when given."""
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            if cgroup is not None:
                Path(cgroup, "cgroup.procs").write_text(str(os.getpid()))
            work()
            status = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(status)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def udp_traffic(datagrams: int = 5) -> None:
    """Two UDP sockets bound on loopback; `datagrams` sent from one and received by the other."""
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
    ):
        receiver.bind(("127.0.0.1", 0))
        sender.bind(("127.0.0.1", 0))
        for _ in range(datagrams):
            sender.sendto(b"x", receiver.getsockname())
        for _ in range(datagrams):
            receiver.recvfrom(16)


def tcp_and_the_rest(listener: tuple[str, int]) -> Callable[[], None]:
    def work() -> None:
        with socket.create_connection(listener) as tcp:
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            assert tcp.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        Path("/proc/sys/net/ipv4/ip_forward").read_text()

    return work


@pytest.fixture
def listener() -> Iterator[tuple[str, int]]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()


def test_every_cgroup_hook_counts_its_members_only(pins, hits, cgroup, listener):
    attachments: list[Attachment] = []
    try:
        for suffix, attach_type in PROGRAMS.items():
            with program(pins, suffix) as prog:
                attachments.append(prog.attach_cgroup(cgroup, attach_type))
        assert [a.target.rpartition(":")[2] for a in attachments] == SLOTS
        udp_traffic()
        in_child(tcp_and_the_rest(listener))
        assert hits() == {}  # outside the cgroup: nothing counted

        in_child(udp_traffic, cgroup)
        udp_counts = {"sockcreate": 2, "bind4": 2, "postbind4": 2}
        udp_counts |= {"ingress": 5, "egress": 5, "sendmsg4": 5, "recvmsg4": 5}
        assert hits() == udp_counts

        in_child(tcp_and_the_rest(listener), cgroup)
        counts = hits()
        assert counts["connect4"] == 1 and counts["sockcreate"] == 3
        assert counts["egress"] > 5 and counts["ingress"] > 5  # the TCP handshake
        assert all(counts[hook] >= 1 for hook in ("getsockopt", "setsockopt", "sysctl"))
        assert counts["sockops"] >= 1
    finally:
        for attachment in attachments:
            attachment.close()
    before = hits()
    in_child(udp_traffic, cgroup)
    in_child(tcp_and_the_rest(listener), cgroup)
    assert hits() == before  # detached


def test_pinned_cgroup_link_stays_until_detached(pins, hits, cgroup):
    with (
        program(pins, "cgroupskb_count") as prog,
        prog.attach_cgroup(cgroup, "egress") as attachment,
    ):
        attachment.pin(str(pins / "egress_link"))
    in_child(udp_traffic, cgroup)
    assert hits() == {"egress": 5}
    (link,) = detach_pinned(str(pins / "egress_link"))
    assert link.type_name == "cgroup"
    in_child(udp_traffic, cgroup)
    assert hits() == {"egress": 5}


def test_without_cgroup_links_prog_attach_is_used(pins, hits, cgroup, monkeypatch):
    def no_links(*args: object) -> int:
        raise KernelError("BPF_LINK_CREATE", errno.EINVAL)

    monkeypatch.setattr(klinks, "create_link", no_links)
    monkeypatch.setattr(klinks, "links_supported", lambda: False)
    with program(pins, "sendmsg4_count") as prog:
        attachment = prog.attach_cgroup(cgroup)
    assert attachment.target == f"cgroup:{cgroup}:sendmsg4"
    with attachment:
        in_child(udp_traffic, cgroup)
        with pytest.raises(AttachError, match="cannot be pinned: this kernel has no cgroup"):
            attachment.pin(str(pins / "nope"))
    in_child(udp_traffic, cgroup)
    assert hits() == {"sendmsg4": 5}


def test_wrong_cgroup_targets_are_named(pins, cgroup, tmp_path):
    with program(pins, "cgroupskb_count") as skb:
        with pytest.raises(AttachError, match="as ingress or egress: say which"):
            skb.attach_cgroup(cgroup)
        with pytest.raises(AttachError, match="as ingress or egress, not as 'connect4'"):
            skb.attach_cgroup(cgroup, "connect4")
        with pytest.raises(AttachError) as not_cgroup:
            skb.attach_cgroup(str(tmp_path), "egress")
        assert str(not_cgroup.value) == (
            f"{tmp_path}: not a cgroup v2 directory: not on a cgroup2 filesystem"
        )
        with pytest.raises(AttachError, match="not a cgroup v2 directory: No such file"):
            skb.attach_cgroup(cgroup + "-missing", "egress")
    with program(pins, "connect4_count") as connect:
        with pytest.raises(AttachError, match=r"the kernel refused it on .* as bind4"):
            connect.attach_cgroup(cgroup, "bind4")
        with pytest.raises(AttachError, match="cannot attach to a tracepoint"):
            connect.attach_tracepoint("syscalls", "sys_enter_getppid")
