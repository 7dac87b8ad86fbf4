"""The network examples of etc/bpf, run as the README shows: load, attach, see the numbers move.

Traffic goes only between the two network namespaces of the veth fixture, or over loopback.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from bpfloader.client import BpfMap, Program
from tests.client.test_attach_cgroup import cgroup, in_child, udp_traffic  # noqa: F401 (fixture)
from tests.client.test_attach_netdev import Veth, inside, veth  # noqa: F401 (fixture)

pytestmark = pytest.mark.kernel

EXAMPLES = ("cgroup_counter.c", "tc_counter.c", "xdp_drop_port.c", "socket_filter.c")


@pytest.fixture
def pins(compile_bpf, source_dir, bpffs, bpfloader_cli) -> Path:
    for example in EXAMPLES:
        shutil.copy(compile_bpf(example), source_dir)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    return bpffs


def counts(path: Path) -> dict[int, int]:
    with BpfMap.open(str(path), key="I", value="Q", readonly=True) as m:
        return dict(m.items())


def test_cgroup_counter_counts_its_cgroup_only(pins, cgroup):  # noqa: F811
    with (
        Program.open(str(pins / "prog_cgroup_counter_cgroupskb_ingress")) as ingress,
        Program.open(str(pins / "prog_cgroup_counter_cgroupskb_egress")) as egress,
        ingress.attach_cgroup(cgroup, "ingress"),
        egress.attach_cgroup(cgroup, "egress"),
    ):
        in_child(lambda: udp_traffic(5))  # outside the cgroup: not counted
        assert counts(pins / "map_cgroup_counter_cgroup_traffic") == {0: 0, 1: 0, 2: 0, 3: 0}
        in_child(lambda: udp_traffic(5), cgroup)
    traffic = counts(pins / "map_cgroup_counter_cgroup_traffic")
    assert (traffic[0], traffic[2]) == (5, 5)  # packets in, packets out
    assert traffic[1] == traffic[3] > 5 * 28  # bytes: at least IP + UDP headers + payload each


def test_tc_counter_counts_and_passes(pins, veth: Veth):  # noqa: F811
    with Program.open(str(pins / "prog_tc_counter_schedcls_count")) as prog, inside(veth.receiver):
        attachment = prog.attach_tc("vb", "ingress")
    with attachment:
        assert veth.send([7000], count=4) == {7000: 4}  # passed
    traffic = counts(pins / "map_tc_counter_tc_traffic")
    assert traffic[0] >= 4  # the datagrams, and whatever ARP or IPv6 chatter came along
    assert traffic[1] >= 4 * (14 + 20 + 8 + 1)


def test_xdp_drop_port_drops_port_9_only(pins, veth: Veth):  # noqa: F811
    with (
        Program.open(str(pins / "prog_xdp_drop_port_xdp_drop_udp_port")) as prog,
        inside(veth.receiver),
    ):
        attachment = prog.attach_xdp("vb")
    with attachment:
        assert veth.send([9, 7000], count=3) == {9: 0, 7000: 3}
    assert counts(pins / "map_xdp_drop_port_xdp_verdicts") == {0: 3, 1: 3}


def test_socket_filter_counts_by_protocol(pins):
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender,
        Program.open(str(pins / "prog_socket_filter_skfilter_count_protocols")) as prog,
    ):
        receiver.bind(("127.0.0.1", 0))
        with prog.attach_socket(receiver):
            for _ in range(3):
                sender.sendto(b"hello", receiver.getsockname())
            for _ in range(3):
                assert receiver.recv(16) == b"hello"  # kept whole
    assert counts(pins / "map_socket_filter_packets_by_protocol") == {17: 3}
