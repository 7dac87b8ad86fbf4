"""Reload under traffic: two network namespaces joined by a veth pair, XDP and tcx programs on
the receiving end declared attached (a policy file), a sender of UDP datagrams, and reloads that
swap both programs while the datagrams flow. Each program counts each datagram once, old
version or new: the counts must equal the datagrams sent, none lost, none counted twice, none
uncounted (BPF_LINK_UPDATE: one link, its program swapped between two packets). The same with
a tracepoint (a perf link: overlap, the new link made before the old one goes): its events
never stop being counted across a swap."""

from __future__ import annotations

import itertools
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bpfloader.client import BpfMap
from tests.client.test_attach_netdev import Veth, inside
from tests.conftest import REPO
from tests.libbpf_support import bpftool

pytestmark = pytest.mark.kernel

RELOADS = 100
PORT = 7790
COUNTERS = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 3);
    __type(key, __u32);
    __type(value, __u64);
} seen SEC(".maps");
static __always_inline void count(__u32 key)
{
    __u64 *value = bpf_map_lookup_elem(&seen, &key);
    if (value)
        __sync_fetch_and_add(value, 1);
}
/* A UDP datagram over IPv4 to port 7790 (the test's, not ARP or IPv6's neighbour talk). */
static __always_inline int ours(void *data, void *end)
{
    unsigned char *p = data;
    if (p + 14 + 20 + 8 > (unsigned char *)end)
        return 0;
    return p[12] == 0x08 && p[13] == 0x00 && p[14] == 0x45 && p[23] == 17
        && p[36] == (7790 >> 8) && p[37] == (7790 & 0xff);
}
/* VERSION changes the code (a new program each reload), not what is counted. */
SEC("xdp") int xdp_count(struct xdp_md *ctx)
{
    if (ours((void *)(long)ctx->data, (void *)(long)ctx->data_end))
        count(0);
    return XDP_PASS + VERSION * 0;
}
SEC("tc") int tc_count(struct __sk_buff *skb)
{
    if (ours((void *)(long)skb->data, (void *)(long)skb->data_end))
        count(1);
    return VERSION - VERSION;
}
SEC("tp/sched/sched_switch") int switch_count(void *ctx) { count(2); return VERSION & 0; }
char LICENSE[] SEC("license") = "GPL";
"""
POLICY = """
[program.xdp_count]
attach = ["xdp:vb"]
[program.tc_count]
attach = ["tc:vb:ingress"]
[program.switch_count]
attach = "auto"
"""


def run_in(namespace: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    """bpfloader in the receiver's network namespace (its interfaces are looked up there)."""
    command = ["ip", "netns", "exec", namespace, sys.executable, "-m", "bpfloader"]
    return subprocess.run(
        [*command, *map(str, args)], capture_output=True, text=True, cwd=REPO, timeout=120
    )


def seen(bpffs: Path) -> list[int]:
    with BpfMap.open(str(bpffs / "map_counters_seen"), key="I", value="Q") as m:
        return [m[i] for i in range(3)]


class Sender(threading.Thread):
    """UDP datagrams from the sender's namespace to the receiver's, a few thousand a second,
    until stopped; counts what it sent."""

    def __init__(self, pair: Veth):
        super().__init__(daemon=True)
        self.pair = pair
        self.sent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with inside(self.pair.sender):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock:
            while not self.stop.is_set():
                sock.sendto(b"x", (self.pair.receiver_address, PORT))
                self.sent += 1
                time.sleep(0.0003)


def test_no_packet_and_no_event_goes_uncounted_across_reloads(
    compile_bpf,
    source_dir,
    bpffs,
    state_dir,
    cache_dir,
    veth,
):
    versions = [compile_bpf(COUNTERS, "counters.o", "-g", f"-DVERSION={v}") for v in (1, 2)]
    shutil.copy(versions[0], source_dir / "counters.o")
    (source_dir / "counters.policy").write_text(POLICY)
    where = ("--dir", source_dir, "--pin-root", bpffs, "--state-dir", state_dir)
    where += ("--cache-dir", cache_dir)
    first = run_in(veth.receiver, "load", *where, "--log-target", "console")
    assert first.returncode == 0, first.stderr
    links = {
        name: bpftool("link", "show", "pinned", bpffs / f"link_counters_{name}")
        for name in ("xdp_count", "tc_count", "switch_count")
    }
    assert links["xdp_count"]["type"] == "xdp"
    assert links["tc_count"]["type"] in ("tcx", 11)  # bpftool 7.1 has no name for tcx links
    sender = Sender(veth)
    sender.start()
    switches: list[int] = []  # the tracepoint's count after each reload: it never stalls
    try:
        for i in range(RELOADS):
            shutil.copy(versions[(i + 1) % 2], source_dir / "counters.o")
            run = run_in(veth.receiver, "reload", *where, "--log-target", "console")
            assert run.returncode == 0, run.stderr
            switches.append(seen(bpffs)[2])
    finally:
        sender.stop.set()
        sender.join()
    time.sleep(0.2)  # the last datagrams through both hooks
    xdp, tc, _ = seen(bpffs)
    print(f"{RELOADS} reloads: {sender.sent} datagrams sent, XDP counted {xdp}, tcx {tc}")
    assert xdp == tc == sender.sent > RELOADS
    # Updated in place: the same links all along, running the last version.
    for name in ("xdp_count", "tc_count"):
        now = bpftool("link", "show", "pinned", bpffs / f"link_counters_{name}")
        assert now["id"] == links[name]["id"], name
    # The tracepoint's link was made anew each time (a perf link), before the old one went:
    # its count only ever grew, between every two reloads.
    assert all(a < b for a, b in itertools.pairwise(switches)), switches
    now = bpftool("link", "show", "pinned", bpffs / "link_counters_switch_count")
    assert now["id"] != links["switch_count"]["id"]
    unload = run_in(veth.receiver, "unload", "--pin-root", bpffs, "--state-dir", state_dir)
    assert unload.returncode == 0, unload.stderr
