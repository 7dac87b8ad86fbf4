"""Program.test_run against the kernel: programs loaded by the real loader run with
BPF_PROG_TEST_RUN on Ethernet + IPv4 + UDP frames built here; their return values and the
packets they leave are checked byte for byte, as are repeated runs, contexts, an output larger
than the first buffer, and the errors for a program type without test runs and bad input."""

from __future__ import annotations

import dataclasses
import errno
import shutil
import socket
import struct
from pathlib import Path

import pytest

from bpfloader.client import BpfMap, Program, TestRun
from bpfloader.errors import KernelError
from bpfloader.kernel import programs as kprogs

pytestmark = pytest.mark.kernel

PREFIX = "prog_client_test_run_"
XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX = range(4)
ECHO_PORT = 7  # client_test_run.c bounces UDP datagrams to this port
ETH_HLEN = 14
ENOTSUPP = 524

MAC_A = bytes.fromhex("02000000000a")
MAC_B = bytes.fromhex("02000000000b")


def ipv4_checksum(header: bytes) -> int:
    """The one's complement of the one's complement sum of the header's 16-bit words."""
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def frame(
    dport: int,
    *,
    payload: bytes = b"ping",
    ttl: int = 64,
    protocol: int = socket.IPPROTO_UDP,
    ethertype: int = 0x0800,
    src_mac: bytes = MAC_A,
    dst_mac: bytes = MAC_B,
) -> bytes:
    """An Ethernet frame holding an IPv4 datagram (UDP unless `protocol` says otherwise) from
    10.0.0.1:40000 to 10.0.0.2:`dport`, with a correct IPv4 header checksum."""
    udp = struct.pack("!HHHH", 40000, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,  # version 4, 5 words of header
        0,
        20 + len(udp),
        0x1234,  # identification
        0x4000,  # don't fragment
        ttl,
        protocol,
        0,  # checksum, filled in below
        socket.inet_aton("10.0.0.1"),
        socket.inet_aton("10.0.0.2"),
    )
    ip = ip[:10] + struct.pack("!H", ipv4_checksum(ip)) + ip[12:]
    return dst_mac + src_mac + struct.pack("!H", ethertype) + ip + udp


@pytest.fixture
def pins(compile_bpf, source_dir, bpffs, bpfloader_cli) -> Path:
    shutil.copy(compile_bpf("client_test_run.c"), source_dir)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    return bpffs


def open_prog(pins: Path, name: str) -> Program:
    return Program.open(str(pins / (PREFIX + name)))


def test_socket_filter_returns_the_udp_destination_port(pins):
    with open_prog(pins, "skfilter_udp_dport") as prog:
        for port in (ECHO_PORT, 53, 40000, 65535):
            packet = frame(port)
            run = prog.test_run(packet)
            assert isinstance(run, TestRun)
            assert run.retval == port
            # A socket filter runs on the packet from its IP header on; the kernel gives the
            # Ethernet header back zeroed.
            assert run.data == bytes(ETH_HLEN) + packet[ETH_HLEN:]
            assert run.ctx is None
        assert prog.test_run(frame(53, protocol=socket.IPPROTO_TCP)).retval == 0


def test_socket_filter_sees_the_packet_from_its_ip_header(pins):
    with open_prog(pins, "skfilter_length") as prog:
        for payload in (b"", b"x", bytes(range(256)) * 4):
            packet = frame(53, payload=payload)
            assert prog.test_run(packet).retval == len(packet) - ETH_HLEN == 28 + len(payload)


def test_xdp_bounces_echo_datagrams_back(pins):
    packet = frame(ECHO_PORT, payload=b"hello")
    with open_prog(pins, "xdp_bounce_echo") as prog:
        run = prog.test_run(packet)
    assert run.retval == XDP_TX
    # The MACs swapped, the TTL one less and the checksum updated for it: the very frame
    # built with those values from the start.
    bounced = frame(ECHO_PORT, payload=b"hello", ttl=63, src_mac=MAC_B, dst_mac=MAC_A)
    assert run.data == bounced and run.data != packet
    assert ipv4_checksum(run.data[ETH_HLEN : ETH_HLEN + 20]) == 0


def test_xdp_passes_other_traffic_untouched(pins):
    with open_prog(pins, "xdp_bounce_echo") as prog:
        for packet in (
            frame(53),
            frame(ECHO_PORT, protocol=socket.IPPROTO_TCP),
            frame(ECHO_PORT, ethertype=0x86DD),
            frame(ECHO_PORT)[:40],  # too short to hold a UDP header
        ):
            run = prog.test_run(packet)
            assert (run.retval, run.data) == (XDP_PASS, packet)
        expiring = frame(ECHO_PORT, ttl=1)
        run = prog.test_run(expiring)
        assert (run.retval, run.data) == (XDP_DROP, expiring)


def test_repeated_runs_share_one_packet(pins):
    packet = frame(ECHO_PORT)
    with open_prog(pins, "xdp_bounce_echo") as prog:
        run = prog.test_run(packet, repeat=3)
    # Each run bounced the packet the run before left: the MACs swapped three times, the TTL
    # three less.
    assert run.retval == XDP_TX
    assert run.data == frame(ECHO_PORT, ttl=61, src_mac=MAC_B, dst_mac=MAC_A)
    assert type(run.duration_ns) is int and run.duration_ns >= 0

    with open_prog(pins, "skfilter_udp_dport") as prog:
        run = prog.test_run(frame(53), repeat=1000)
    assert run.retval == 53
    assert type(run.duration_ns) is int and run.duration_ns >= 0


def runs_of_push_tag(pins: Path) -> int:
    with BpfMap.open(str(pins / "map_client_test_run_runs"), key="I", value="Q") as runs:
        count: int = runs[0]
        return count


def test_output_larger_than_the_buffer_is_run_again_with_the_size_the_kernel_asks(
    pins, monkeypatch
):
    packet = frame(53)
    with open_prog(pins, "xdp_push_tag") as prog:
        run = prog.test_run(packet)
        assert (run.retval, run.data) == (XDP_PASS, b"TAG!" + packet)
        assert runs_of_push_tag(pins) == 1

        # No room to grow: the kernel answers ENOSPC with the length it needs, and the second
        # run (the program's second, as its counter says) gets a buffer that large.
        monkeypatch.setattr(kprogs, "TEST_RUN_HEADROOM", 0)
        run = prog.test_run(packet)
        assert (run.retval, run.data) == (XDP_PASS, b"TAG!" + packet)
        assert runs_of_push_tag(pins) == 3


def test_context_in_and_out(pins):
    mark = 0x1234
    # struct __sk_buff: len, pkt_type, mark, ... ; a test may set the mark.
    ctx = struct.pack("<III", 0, 0, mark)
    with open_prog(pins, "skfilter_length") as prog:
        run = prog.test_run(frame(53), ctx=ctx)
    assert run.retval == 32
    assert run.ctx is not None and len(run.ctx) >= len(ctx)
    assert struct.unpack_from("<I", run.ctx, 8) == (mark,)


def test_a_type_without_test_runs_says_so(pins):
    path = str(pins / (PREFIX + "tracepoint_syscalls_sys_enter_getppid"))
    with Program.open(path) as prog, pytest.raises(KernelError) as e:
        prog.test_run(frame(53))
    assert e.value.errno == ENOTSUPP and e.value.operation == "BPF_PROG_TEST_RUN"
    assert str(e.value) == (
        f"{path}: BPF_PROG_TEST_RUN failed: ENOTSUPP (Operation not supported):"
        " TRACEPOINT programs cannot be test-run"
    )


def test_input_the_kernel_refuses(pins):
    with open_prog(pins, "skfilter_length") as prog:
        for short in (b"", bytes(ETH_HLEN - 1)):  # less than an Ethernet header
            with pytest.raises(KernelError) as e:
                prog.test_run(short)
            assert e.value.errno == errno.EINVAL
        with pytest.raises(ValueError, match="repeat must be from 1 to 4294967295, not 0"):
            prog.test_run(frame(53), repeat=0)
        with pytest.raises(ValueError, match="repeat must be from 1"):
            prog.test_run(frame(53), repeat=2**32)
    with open_prog(pins, "xdp_bounce_echo") as prog, pytest.raises(KernelError) as e:
        prog.test_run(b"")
    assert e.value.errno == errno.EINVAL


def test_result_is_frozen(pins):
    with open_prog(pins, "skfilter_length") as prog:
        run = prog.test_run(frame(53))
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.retval = 0  # type: ignore[misc]
