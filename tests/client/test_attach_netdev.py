"""Network attachments on a veth pair between two network namespaces made for each test (and
removed after): XDP and tc programs count the UDP datagrams sent from one namespace to the
other and drop those to their port; the tc qdisc and filter are gone after detach. A socket
filter does the same on a loopback socket."""

from __future__ import annotations

import errno
import itertools
import os
import shutil
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pyroute2 import IPRoute, netns

from bpfloader.client import BpfMap, Program, detach_pinned
from bpfloader.errors import AttachError, KernelError
from bpfloader.kernel import links as klinks

pytestmark = pytest.mark.kernel

XDP_SEEN, XDP_DROPPED, TC_SEEN, TC_DROPPED, FILTER_SEEN, FILTER_DROPPED = range(6)
XDP_PORT, TC_PORT, OPEN_PORT = 7777, 7778, 7779
_names = itertools.count()


@contextmanager
def inside(namespace: str) -> Iterator[None]:
    """Run the block in `namespace` (this thread only): sockets made there stay there."""
    netns.pushns(namespace)
    try:
        yield
    finally:
        netns.popns()


@dataclass
class Veth:
    """`sender`'s va (10.199.0.1) is wired to `receiver`'s vb (10.199.0.2)."""

    sender: str
    receiver: str
    sender_address: str = "10.199.0.1"
    receiver_address: str = "10.199.0.2"

    def send(self, ports: list[int], count: int = 3) -> dict[int, int]:
        """`count` datagrams to each port, in order; how many arrived at each."""
        with inside(self.receiver):
            sockets = {port: socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for port in ports}
        with inside(self.sender):
            sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for port, sock in sockets.items():
                sock.bind((self.receiver_address, port))
            for port in ports:
                for _ in range(count):
                    sender.sendto(b"x", (self.receiver_address, port))
            # Whatever was not dropped came in order: the last port's datagrams come last.
            arrived = {port: 0 for port in ports}
            sockets[ports[-1]].settimeout(2)
            for _ in range(count):
                sockets[ports[-1]].recv(16)
                arrived[ports[-1]] += 1
            for port in ports[:-1]:
                sockets[port].setblocking(False)
                while True:
                    try:
                        sockets[port].recv(16)
                    except BlockingIOError:
                        break
                    arrived[port] += 1
            return arrived
        finally:
            sender.close()
            for sock in sockets.values():
                sock.close()

    def qdiscs(self, namespace: str, interface: str) -> list[str]:
        with inside(namespace), IPRoute() as ipr:
            index = ipr.link_lookup(ifname=interface)[0]
            return [q.get_attr("TCA_KIND") for q in ipr.get_qdiscs(index=index)]


@pytest.fixture
def veth() -> Iterator[Veth]:
    pair = Veth(f"bpfl-{os.getpid()}-{next(_names)}-a", f"bpfl-{os.getpid()}-{next(_names)}-b")
    netns.create(pair.sender)
    try:
        netns.create(pair.receiver)
        try:
            with inside(pair.sender), IPRoute() as ipr:
                ipr.link(
                    "add",
                    ifname="va",
                    kind="veth",
                    peer={"ifname": "vb", "net_ns_fd": pair.receiver},
                )
            for namespace, interface, address in (
                (pair.sender, "va", pair.sender_address),
                (pair.receiver, "vb", pair.receiver_address),
            ):
                with inside(namespace), IPRoute() as ipr:
                    index = ipr.link_lookup(ifname=interface)[0]
                    ipr.addr("add", index=index, address=address, prefixlen=24)
                    ipr.link("set", index=index, state="up")
            yield pair
        finally:
            netns.remove(pair.receiver)
    finally:
        netns.remove(pair.sender)


@pytest.fixture
def pins(compile_bpf, source_dir, bpffs, bpfloader_cli) -> Path:
    shutil.copy(compile_bpf("client_net.c"), source_dir)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    return bpffs


@pytest.fixture
def hits(pins) -> Iterator[Callable[[int], int]]:
    with BpfMap.open(str(pins / "map_client_net_hits"), key="I", value="Q") as m:
        yield m.__getitem__


def program(pins: Path, suffix: str) -> Program:
    return Program.open(str(pins / f"prog_client_net_{suffix}"))


@pytest.mark.parametrize("mode", ["generic", "driver"])
def test_xdp_counts_drops_and_passes(pins, hits, veth, mode):
    with program(pins, "xdp_drop_7777") as prog, inside(veth.receiver):
        attachment = prog.attach_xdp("vb", mode)
    with attachment:
        ((_, link),) = attachment.links
        assert klinks.link_info(link).type_name == "xdp"
        assert veth.send([XDP_PORT, OPEN_PORT]) == {XDP_PORT: 0, OPEN_PORT: 3}
        assert (hits(XDP_SEEN), hits(XDP_DROPPED)) == (6, 3)
    assert veth.send([XDP_PORT, OPEN_PORT]) == {XDP_PORT: 3, OPEN_PORT: 3}
    assert hits(XDP_SEEN) == 6


def test_pinned_xdp_link_stays_until_detached(pins, hits, veth):
    with (
        program(pins, "xdp_drop_7777") as prog,
        inside(veth.receiver),
        prog.attach_xdp("vb") as attachment,
    ):
        attachment.pin(str(pins / "xdp_link"))
    assert veth.send([XDP_PORT, OPEN_PORT]) == {XDP_PORT: 0, OPEN_PORT: 3}
    (link,) = detach_pinned(str(pins / "xdp_link"))
    assert link.type_name == "xdp"
    assert veth.send([XDP_PORT, OPEN_PORT]) == {XDP_PORT: 3, OPEN_PORT: 3}


def test_xdp_through_netlink_where_the_kernel_has_no_xdp_links(pins, hits, veth, monkeypatch):
    def no_links(*args: object) -> int:
        raise KernelError("BPF_LINK_CREATE", errno.EINVAL)

    monkeypatch.setattr(klinks, "create_link", no_links)
    with program(pins, "xdp_drop_7777") as prog, inside(veth.receiver):
        attachment = prog.attach_xdp("vb")
    with attachment:
        assert veth.send([XDP_PORT, OPEN_PORT]) == {XDP_PORT: 0, OPEN_PORT: 3}
        with pytest.raises(AttachError, match="cannot be pinned: XDP by netlink is a netlink"):
            attachment.pin(str(pins / "nope"))
    assert veth.send([XDP_PORT, OPEN_PORT]) == {XDP_PORT: 3, OPEN_PORT: 3}


@pytest.mark.parametrize("direction", ["ingress", "egress"])
def test_tc_counts_drops_and_cleans_up(pins, hits, veth, direction):
    """Ingress on the receiving end, egress on the sending end; the clsact qdisc made for the
    filter goes with it."""
    namespace, interface = (veth.receiver, "vb") if direction == "ingress" else (veth.sender, "va")
    assert "clsact" not in veth.qdiscs(namespace, interface)
    with program(pins, "schedcls_drop_7778") as prog, inside(namespace):
        attachment = prog.attach_tc(interface, direction)
    with attachment:
        assert attachment.target == f"tc:{interface}:{direction}:1"
        assert "clsact" in veth.qdiscs(namespace, interface)
        assert veth.send([TC_PORT, OPEN_PORT]) == {TC_PORT: 0, OPEN_PORT: 3}
        assert (hits(TC_SEEN), hits(TC_DROPPED)) == (6, 3)
    assert "clsact" not in veth.qdiscs(namespace, interface)
    assert veth.send([TC_PORT, OPEN_PORT]) == {TC_PORT: 3, OPEN_PORT: 3}


def test_tc_keeps_a_qdisc_it_did_not_make(pins, veth):
    with inside(veth.receiver), IPRoute() as ipr:
        ipr.tc("add", "clsact", ipr.link_lookup(ifname="vb")[0])
    with program(pins, "schedcls_drop_7778") as prog, inside(veth.receiver):
        first = prog.attach_tc("vb", "ingress")
        second = prog.attach_tc("vb", "ingress")
    assert (first.target, second.target) == ("tc:vb:ingress:1", "tc:vb:ingress:2")
    first.close()
    assert veth.send([TC_PORT, OPEN_PORT]) == {TC_PORT: 0, OPEN_PORT: 3}
    second.close()
    assert veth.send([TC_PORT, OPEN_PORT]) == {TC_PORT: 3, OPEN_PORT: 3}
    assert "clsact" in veth.qdiscs(veth.receiver, "vb")


def test_tc_action_program_needs_kernel_support_missing_here(pins, veth):
    with (
        program(pins, "schedact_pass") as prog,
        inside(veth.receiver),
        pytest.raises(AttachError, match=r"cannot run a SCHED_ACT program: .*NET_ACT_BPF"),
    ):
        prog.attach_tc("vb", "ingress")
    assert "clsact" not in veth.qdiscs(veth.receiver, "vb")


def test_socket_filter_counts_and_drops(pins, hits):
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        program(pins, "skfilter_drop_d") as prog,
    ):
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(2)
        with prog.attach_socket(receiver) as attachment:
            for payload in (b"Keep 1", b"Drop 1", b"Keep 2"):
                sender.sendto(payload, receiver.getsockname())
            assert [receiver.recv(16), receiver.recv(16)] == [b"Keep 1", b"Keep 2"]
            assert (hits(FILTER_SEEN), hits(FILTER_DROPPED)) == (3, 1)
            with pytest.raises(AttachError, match="a socket filter belongs to its socket"):
                attachment.pin(str(pins / "nope"))
        sender.sendto(b"Drop 2", receiver.getsockname())
        assert receiver.recv(16) == b"Drop 2"


def test_wrong_network_targets_are_named(pins, veth):
    with program(pins, "xdp_drop_7777") as xdp, inside(veth.receiver):
        with pytest.raises(AttachError, match="no network interface 'eth9' in this network"):
            xdp.attach_xdp("eth9")
        with pytest.raises(AttachError, match="XDP mode 'offload': expected generic or driver"):
            xdp.attach_xdp("vb", "offload")
        with pytest.raises(AttachError, match="cannot attach to a tc hook"):
            xdp.attach_tc("vb")
        with socket.socket() as sock, pytest.raises(AttachError, match="attach to a socket"):
            xdp.attach_socket(sock)
    with program(pins, "schedcls_drop_7778") as tc, inside(veth.receiver):
        with pytest.raises(AttachError, match="no network interface 'eth9'"):
            tc.attach_tc("eth9")
        with pytest.raises(AttachError, match="tc direction 'sideways'"):
            tc.attach_tc("vb", "sideways")
        with pytest.raises(AttachError, match="cannot attach to an interface's XDP hook"):
            tc.attach_xdp("vb")
