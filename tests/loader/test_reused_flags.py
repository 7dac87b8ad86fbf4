"""Pinned maps whose flags the kernel reports otherwise than they were declared are reused, not
refused: device maps (the kernel adds BPF_F_RDONLY_PROG, as Android's mapMatchesExpectations
and libbpf know) and maps declared with an fd-only flag (BPF_F_RDONLY / BPF_F_WRONLY, which the
kernel does not keep). Each case is loaded twice, reloaded after a code change, and shared.

Objects come from tests/bpf/k_reused_flags.c.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from bpfloader.client import BpfMap
from bpfloader.obj.bpftypes import (
    BPF_F_RDONLY,
    BPF_F_RDONLY_PROG,
    BPF_F_WRONLY,
    MapType,
    kernel_map_flags,
)
from tests.libbpf_support import bpftool

pytestmark = pytest.mark.kernel

MAPS = {
    "tx_ports": (MapType.DEVMAP, BPF_F_RDONLY_PROG),
    "tx_ports_h": (MapType.DEVMAP_HASH, BPF_F_RDONLY_PROG),
    "ro_fd_map": (MapType.HASH, 0),
    "wo_fd_map": (MapType.HASH, 0),
}
LOOPBACK = 1  # the ifindex of lo in every network namespace: a device map's valid value


def map_pins(name: str) -> dict[str, str]:
    pins = {m: f"map_{name}_{m}" for m in MAPS}
    pins["shared_tx"] = "map__shared_tx"
    return pins


def ids(bpffs: Path, name: str) -> dict[str, int]:
    return {
        m: bpftool("map", "show", "pinned", bpffs / pin)["id"] for m, pin in map_pins(name).items()
    }


def actions(stdout: str, bpffs: Path) -> dict[str, str]:
    """pin name -> action, from the load summary."""
    found = {}
    for line in stdout.splitlines():
        if line.startswith(f"{bpffs}/"):
            path, action, *_ = line.split()
            found[Path(path).name] = action
    return found


def fill(bpffs: Path, name: str) -> None:
    for m in ("tx_ports", "tx_ports_h", "ro_fd_map", "wo_fd_map"):
        with BpfMap.open(str(bpffs / f"map_{name}_{m}"), key="I", value="I") as bm:
            bm[2] = LOOPBACK
    with BpfMap.open(str(bpffs / "map__shared_tx"), key="I", value="I") as bm:
        bm[3] = LOOPBACK


def contents(bpffs: Path, name: str) -> dict[str, dict[int, int]]:
    found = {}
    for m, pin in map_pins(name).items():
        with BpfMap.open(str(bpffs / pin), key="I", value="I") as bm:
            found[m] = {k: v for k, v in bm.items() if v}  # a DEVMAP shows every slot, 0 if unset
    return found


def test_the_kernel_reports_these_flags_otherwise_than_declared():
    """What the comparison accounts for, checked against the kernel in the tests below."""
    assert kernel_map_flags(MapType.DEVMAP, 0) == BPF_F_RDONLY_PROG
    assert kernel_map_flags(MapType.DEVMAP_HASH, 0) == BPF_F_RDONLY_PROG
    assert kernel_map_flags(MapType.HASH, BPF_F_RDONLY) == 0
    assert kernel_map_flags(MapType.HASH, BPF_F_WRONLY | 1) == 1
    assert kernel_map_flags(MapType.ARRAY, BPF_F_RDONLY_PROG) == BPF_F_RDONLY_PROG


def test_loaded_twice_every_map_is_reused(compile_bpf, source_dir, bpffs, bpfloader_cli):
    shutil.copy(compile_bpf("k_reused_flags.c", "flags.o"), source_dir)
    first = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert first.returncode == 0, first.stderr
    for m, (kind, flags) in MAPS.items():  # what the kernel made of each declaration
        shown = bpftool("map", "show", "pinned", bpffs / f"map_flags_{m}")
        assert (shown["type"], shown["flags"]) == (kind.name.lower(), flags), m
    before = ids(bpffs, "flags")
    fill(bpffs, "flags")
    second = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert second.returncode == 0, second.stderr
    assert "objects: 1 loaded, 0 skipped, 0 failed" in second.stdout.splitlines()
    assert {pin: actions(second.stdout, bpffs)[pin] for pin in map_pins("flags").values()} == {
        pin: "reuse" for pin in map_pins("flags").values()
    }
    assert ids(bpffs, "flags") == before
    assert contents(bpffs, "flags")["tx_ports"] == {2: LOOPBACK}


def test_a_reload_after_a_code_change_keeps_every_map(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    shutil.copy(compile_bpf("k_reused_flags.c", "flags.o"), source_dir)
    assert bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs).returncode == 0
    before = ids(bpffs, "flags")
    prog_before = bpftool("prog", "show", "pinned", bpffs / "prog_flags_xdp_redirect")["id"]
    fill(bpffs, "flags")
    filled = contents(bpffs, "flags")
    shutil.copy(compile_bpf("k_reused_flags.c", "flags.o", "-DVERSION=2"), source_dir)
    run = bpfloader_cli("reload", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    assert actions(run.stdout, bpffs)["prog_flags_xdp_redirect"] == "replace"
    assert bpftool("prog", "show", "pinned", bpffs / "prog_flags_xdp_redirect")["id"] != prog_before
    assert ids(bpffs, "flags") == before
    assert (
        contents(bpffs, "flags")
        == filled
        == {
            "tx_ports": {2: LOOPBACK},
            "tx_ports_h": {2: LOOPBACK},
            "ro_fd_map": {2: LOOPBACK},
            "wo_fd_map": {2: LOOPBACK},
            "shared_tx": {3: LOOPBACK},
        }
    )
    status = json.loads(
        bpfloader_cli("status", "--dir", source_dir, "--pin-root", bpffs, "--json").stdout
    )
    assert [o["status"] for o in status["objects"]] == ["loaded"]


def test_a_shared_device_map_is_reused_by_a_second_object(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    shutil.copy(compile_bpf("k_reused_flags.c", "flags_a.o"), source_dir)
    shutil.copy(compile_bpf("k_reused_flags.c", "flags_b.o"), source_dir)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    assert "objects: 2 loaded, 0 skipped, 0 failed" in run.stdout.splitlines()
    rows = [line.split() for line in run.stdout.splitlines() if "map__shared_tx" in line]
    assert [row[1] for row in rows] == ["create", "reuse"]
    # Both objects' programs hold the one map.
    shared = bpftool("map", "show", "pinned", bpffs / "map__shared_tx")["id"]
    for name in ("flags_a", "flags_b"):
        prog = bpftool("prog", "show", "pinned", bpffs / f"prog_{name}_xdp_redirect")
        assert shared in prog["map_ids"]
    # And a second run over both reuses it again.
    again = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert again.returncode == 0, again.stderr
    assert bpftool("map", "show", "pinned", bpffs / "map__shared_tx")["id"] == shared


LIBBPF_DEVMAPS = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u32);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} ports SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
    __uint(max_entries, 4);
    __type(key, __u32);
    __type(value, __u32);
    __uint(pinning, LIBBPF_PIN_BY_NAME);
} ports_h SEC(".maps");

SEC("xdp")
int redirect(struct xdp_md *ctx)
{
    if (ctx->ingress_ifindex & 1)
        return bpf_redirect_map(&ports_h, 0, XDP_PASS);
    return bpf_redirect_map(&ports, 0, XDP_PASS);
}

char LICENSE[] SEC("license") = "GPL";
"""


def test_libbpf_style_device_maps_pinned_by_name_are_reused(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    for name in ("one.o", "two.o"):
        shutil.copy(compile_bpf(LIBBPF_DEVMAPS, name), source_dir)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    assert "objects: 2 loaded, 0 skipped, 0 failed" in run.stdout.splitlines()
    made = {
        pin: bpftool("map", "show", "pinned", bpffs / pin)["id"]
        for pin in ("map__ports", "map__ports_h")
    }
    again = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert "objects: 2 loaded, 0 skipped, 0 failed" in again.stdout.splitlines(), again.stderr
    assert {pin: actions(again.stdout, bpffs)[pin] for pin in made} == {
        pin: "reuse" for pin in made
    }
    assert {pin: bpftool("map", "show", "pinned", bpffs / pin)["id"] for pin in made} == made


SMALL_RINGBUF = """
#include <bpf_helpers.h>
const struct bpf_map_def SECTION("maps") events = {
    .type = BPF_MAP_TYPE_RINGBUF, .max_entries = 1024, .mode = 0600,
    .bpfloader_max_ver = 0x10000, .max_kver = KVER_INF,
};
DEFINE_BPF_PROG("tracepoint/sched/sched_switch", 0, 0, out)(void *ctx) {
    int x = 1;
    bpf_ringbuf_output(&events, &x, sizeof(x), 0);
    return 0;
}
LICENSE("GPL");
"""


def test_a_ring_buffer_below_a_page_is_made_a_page_and_reused(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    """As Android's loader (and libbpf) make it: the kernel takes only a power-of-two number of
    pages, which an object built for 4 KiB pages may not give where pages are larger."""
    shutil.copy(compile_bpf(SMALL_RINGBUF, "ring.o"), source_dir)
    assert bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs).returncode == 0
    shown = bpftool("map", "show", "pinned", bpffs / "map_ring_events")
    assert shown["max_entries"] == os.sysconf("SC_PAGE_SIZE")
    again = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert actions(again.stdout, bpffs)["map_ring_events"] == "reuse", again.stderr
    assert bpftool("map", "show", "pinned", bpffs / "map_ring_events")["id"] == shown["id"]
