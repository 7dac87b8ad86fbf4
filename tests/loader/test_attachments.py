"""Declared attachments (a policy file's `attach`), against the kernel: programs attached after
their object's pins are published, each link pinned beside its program with the program's
owner and mode, recorded, shown by status, swapped for a new one by a reload, detached by
unload; `auto` for sections that name their target; optional attachments that fail; one that
is not optional failing its object with nothing left behind; the policy errors."""

from __future__ import annotations

import json
import shutil
import stat
import time
from pathlib import Path

import pytest

import bpfloader.loader.status as status_module
from bpfloader.client import BpfMap
from tests.client.test_attach_cgroup import in_child, udp_traffic
from tests.conftest import pins_in
from tests.json_support import documented, keys
from tests.libbpf_support import bpftool, libbpf_object
from tests.loader.test_status_unload import check_schema

pytestmark = pytest.mark.kernel

SWITCHES = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#ifndef STEP
#define STEP 1
#endif
#ifndef ENTRIES
#define ENTRIES 2
#endif
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, ENTRIES);
    __type(key, __u32);
    __type(value, __u64);
} switches SEC(".maps");
static __always_inline int add(__u32 key)
{
    __u64 *value = bpf_map_lookup_elem(&switches, &key);
    if (value)
        __sync_fetch_and_add(value, STEP);
    return 0;
}
SEC("tp/sched/sched_switch") int count_switches(void *ctx) { return add(0); }
SEC("cgroup_skb/egress") int count_egress(struct __sk_buff *skb) { add(1); return 1; }
SEC("xdp") int pass(struct xdp_md *ctx) { return XDP_PASS; }
char LICENSE[] SEC("license") = "GPL";
"""


def counts(bpffs: Path, name: str = "switches") -> list[int]:
    with BpfMap.open(str(bpffs / f"map_{name}_switches")) as m:  # typed by its BTF
        return [m[i] for i in range(2)]


def wait_for_switches(bpffs: Path, name: str = "switches") -> int:
    before = counts(bpffs, name)[0]
    deadline = time.monotonic() + 10
    while counts(bpffs, name)[0] == before and time.monotonic() < deadline:
        time.sleep(0.01)
    return counts(bpffs, name)[0] - before


def install(compile_bpf, source_dir: Path, policy: str, *flags: str) -> Path:
    obj = compile_bpf(SWITCHES, "switches.o", "-g", *flags)
    shutil.copy(obj, source_dir / "switches.o")
    (source_dir / "switches.policy").write_text(policy)
    return obj


AUTO = '[program.count_switches]\nattach = "auto"\ngroup = 4\nmode = "0440"\n'


def test_an_auto_attachment_counts_events_and_its_link_is_pinned_beside_the_program(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    install(compile_bpf, source_dir, AUTO)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    link = bpffs / "link_switches_count_switches"
    info = link.lstat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 4, 0o440)
    shown = bpftool("link", "show", "pinned", link)
    program = bpftool("prog", "show", "pinned", bpffs / "prog_switches_tp_sched_sched_switch")
    assert shown["prog_id"] == program["id"] and shown["type"] == "perf_event"
    assert wait_for_switches(bpffs) > 0  # no process but the kernel's scheduler involved
    assert "attached program count_switches to tracepoint:sched:sched_switch" in run.stderr
    status = json.loads(bpfloader_cli("status", "--pin-root", bpffs, "--json").stdout)
    check_schema(status)
    # Nothing skipped here: only a skip's `kind` goes unproduced.
    assert keys(status) == documented(status_module) - {"kind"}
    (links,) = [o["links"] for o in status["objects"]]
    assert links == [
        {
            "name": "count_switches",
            "pin": str(link),
            "present": True,
            "id": shown["id"],
            "uid": 0,
            "gid": 4,
            "mode": "0440",
            "target": "tracepoint:sched:sched_switch",
            "program_id": program["id"],
            "map_id": None,
            "stale": False,
            "declared": True,
        }
    ]


def test_a_reload_puts_the_new_program_in_place_and_unload_detaches(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    install(compile_bpf, source_dir, AUTO)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    link = bpffs / "link_switches_count_switches"
    old = bpftool("link", "show", "pinned", link)
    install(compile_bpf, source_dir, AUTO, "-DSTEP=1000000")
    run = bpfloader_cli("reload", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    new = bpftool("link", "show", "pinned", link)
    program = bpftool("prog", "show", "pinned", bpffs / "prog_switches_tp_sched_sched_switch")
    assert new["prog_id"] == program["id"] != old["prog_id"]
    assert old["id"] not in {entry["id"] for entry in bpftool("link", "list")}  # let go
    assert wait_for_switches(bpffs) >= 1_000_000  # the new program counts
    bpfloader_cli("unload", "--pin-root", bpffs, check=True)
    assert not link.exists()
    assert new["id"] not in {entry["id"] for entry in bpftool("link", "list")}


def test_several_targets_a_cgroup_and_an_optional_one_that_fails(
    compile_bpf, source_dir, bpffs, bpfloader_cli, cgroup
):
    policy = (
        "[program.count_switches]\n"
        'attach = ["tracepoint:sched:sched_switch", "tracepoint:sched:sched_wakeup"]\n'
        "[program.count_egress]\n"
        f'attach = ["cgroup:{cgroup}:egress"]\n'
        "[program.pass]\n"
        'attach = [{target = "xdp:bpfloader-none0", optional = true}]\n'
    )
    install(compile_bpf, source_dir, policy)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    assert {p for p in pins_in(bpffs) if p.startswith("link_")} == {
        "link_switches_count_switches",
        "link_switches_count_switches_2",
        "link_switches_count_egress",
    }
    assert "program pass not attached to xdp:bpfloader-none0 (optional)" in run.stderr
    in_child(lambda: udp_traffic(5), cgroup)
    assert counts(bpffs)[1] >= 5  # the cgroup's datagrams, through the declared link
    bpfloader_cli("unload", "--pin-root", bpffs, check=True)


def test_an_attachment_that_fails_fails_its_object_and_leaves_nothing(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    install(compile_bpf, source_dir, '[program.pass]\nattach = ["xdp:bpfloader-none0"]\n')
    shutil.copy(libbpf_object(compile_bpf, "libbpf_maps.c"), source_dir)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    failed = [line for line in run.stdout.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1, run.stdout
    assert failed[0].startswith(
        f"failed: {source_dir / 'switches.o'}: xdp: program pass: cannot attach to "
        "xdp:bpfloader-none0: "
    ), failed
    assert "objects: 1 loaded, 0 skipped, 1 failed" in run.stdout
    assert not any("switches" in p for p in pins_in(bpffs))  # rolled back: maps, programs too


@pytest.mark.parametrize(
    ("policy", "reason"),
    [
        (
            '[program.pass]\nattach = "auto"\n',
            "program pass: attach = \"auto\": section 'xdp' names no target",
        ),
        (
            '[program.pass]\nattach = ["nowhere:x"]\n',
            "[program.pass]: attach: 'nowhere:x' is not a target (kinds: tracepoint,",
        ),
        ("[program.pass]\nattach = 3\n", '[program.pass]: attach must be "auto" or a list'),
        (
            '[program.nosuch]\nattach = ["xdp:lo"]\n',
            "[program.nosuch]: the object has no program 'nosuch'",
        ),
    ],
)
def test_policy_errors(compile_bpf, source_dir, bpffs, bpfloader_cli, policy, reason):
    install(compile_bpf, source_dir, policy)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    failed = [line for line in run.stdout.splitlines() if line.startswith("failed: ")]
    assert len(failed) == 1 and reason in failed[0], run.stdout
    assert pins_in(bpffs) == set()


def test_the_policy_knows_every_kind_of_target_the_client_attaches():
    from bpfloader.client import targets
    from bpfloader.loader.attachments import KINDS

    assert sorted(KINDS) == sorted(kind for row in targets.TARGETS for kind in row.kinds)


def test_a_reload_updates_a_cgroup_link_in_place(
    compile_bpf, source_dir, bpffs, bpfloader_cli, cgroup
):
    policy = f'[program.count_egress]\nattach = ["cgroup:{cgroup}:egress"]\n'
    install(compile_bpf, source_dir, policy)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    link = bpffs / "link_switches_count_egress"
    before = bpftool("link", "show", "pinned", link)
    install(compile_bpf, source_dir, policy, "-DSTEP=1000")
    run = bpfloader_cli("reload", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    after = bpftool("link", "show", "pinned", link)
    program = bpftool(
        "prog", "show", "pinned", bpffs / "prog_switches_cgroup_skb_egress_count_egress"
    )
    assert after["id"] == before["id"]  # the same link ...
    assert after["prog_id"] == program["id"] != before["prog_id"]  # ... runs the new program
    assert f"updated link {before['id']} at cgroup:{cgroup}:egress in place" in run.stderr
    sent = counts(bpffs)[1]
    in_child(lambda: udp_traffic(5), cgroup)
    assert counts(bpffs)[1] - sent >= 5000
    bpfloader_cli("unload", "--pin-root", bpffs, check=True)


def test_a_reload_that_fails_after_an_update_puts_the_old_program_back(
    compile_bpf, source_dir, bpffs, bpfloader_cli, cgroup
):
    policy = f'[program.count_egress]\nattach = ["cgroup:{cgroup}:egress"]\n'
    install(compile_bpf, source_dir, policy)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    link = bpffs / "link_switches_count_egress"
    before = bpftool("link", "show", "pinned", link)
    failing = policy + '[program.pass]\nattach = ["xdp:bpfloader-none0"]\n'
    install(compile_bpf, source_dir, failing, "-DSTEP=1000")
    run = bpfloader_cli("reload", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 3, run.stderr  # the object failed; its old version stays
    assert f"updated link {before['id']}" not in run.stderr  # never said: rolled back
    after = bpftool("link", "show", "pinned", link)
    assert (after["id"], after["prog_id"]) == (before["id"], before["prog_id"])
    sent = counts(bpffs)[1]
    in_child(lambda: udp_traffic(5), cgroup)
    assert 5 <= counts(bpffs)[1] - sent < 5000  # the old program counts, one by one
    bpfloader_cli("unload", "--pin-root", bpffs, check=True)


def test_links_made_by_hand_are_recorded_and_kept_on_the_new_program(
    compile_bpf, source_dir, bpffs, bpfloader_cli, cgroup
):
    """Links pinned by `bpfloader attach --pin` are recorded with the object whose program
    they run (not declared): a reload puts the new program into the cgroup link (in place)
    and attaches it anew to the tracepoint, swapping the pin (a perf link cannot be updated);
    unload detaches both. A link pinned by someone else (the client library, no state) is
    listed with the object too, and a reload warns that it still runs the old program, which
    status then calls stale."""
    install(compile_bpf, source_dir, "")
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    egress = bpffs / "prog_switches_cgroup_skb_egress_count_egress"
    switches = bpffs / "prog_switches_tp_sched_sched_switch"
    by_hand = {"cgroup": bpffs / "hand_cgroup", "tp": bpffs / "hand_tp"}
    targets = {"cgroup": f"cgroup:{cgroup}:egress", "tp": "tracepoint:sched:sched_switch"}
    for kind, prog in (("cgroup", egress), ("tp", switches)):
        run = bpfloader_cli("attach", prog, targets[kind], "--pin", by_hand[kind], check=True)
        assert f"{by_hand[kind]}: recorded with {source_dir}/switches.o" in run.stderr
    before = {k: bpftool("link", "show", "pinned", p) for k, p in by_hand.items()}
    status = json.loads(bpfloader_cli("status", "--pin-root", bpffs, "--json").stdout)
    (obj,) = status["objects"]
    assert {(x["pin"], x["target"], x["declared"], x["stale"]) for x in obj["links"]} == {
        (str(by_hand[k]), targets[k], False, False) for k in by_hand
    }
    assert status["foreign_pins"] == []

    install(compile_bpf, source_dir, "", "-DSTEP=1000")
    run = bpfloader_cli("reload", "--dir", source_dir, "--pin-root", bpffs, check=True)
    new = {
        "cgroup": bpftool("prog", "show", "pinned", egress)["id"],
        "tp": bpftool("prog", "show", "pinned", switches)["id"],
    }
    after = {k: bpftool("link", "show", "pinned", p) for k, p in by_hand.items()}
    assert after["cgroup"]["id"] == before["cgroup"]["id"]  # the same link, updated
    assert after["cgroup"]["prog_id"] == new["cgroup"]
    assert after["tp"]["id"] != before["tp"]["id"]  # a new link in its place
    assert after["tp"]["prog_id"] == new["tp"]
    assert f"updated link {before['cgroup']['id']} at {targets['cgroup']} in place" in run.stderr
    assert (
        f"attached the new count_switches to {targets['tp']} (link {after['tp']['id']}), then "
        "let the old link go"
    ) in run.stderr
    assert "not the loader's" not in run.stderr
    assert wait_for_switches(bpffs) >= 1000  # the new program counts through the new link

    # A link of someone else's, pinned without the state knowing it (another tracepoint: a
    # program attaches to one tracepoint once).
    from bpfloader.client import Program

    other = bpffs / "other_tp"
    with (
        Program.open(str(switches)) as prog,
        prog.attach("tracepoint:sched:sched_wakeup") as attached,
    ):
        attached.pin(str(other))
    other_link = bpftool("link", "show", "pinned", other)
    install(compile_bpf, source_dir, "", "-DSTEP=2000")
    run = bpfloader_cli("reload", "--dir", source_dir, "--pin-root", bpffs, check=True)
    newest = bpftool("prog", "show", "pinned", switches)["id"]
    assert (
        f"link {other_link['id']} (perf_event), not the loader's, still runs program "
        f"count_switches {other_link['prog_id']}; the pin holds {newest} now"
    ) in run.stderr
    text = bpfloader_cli("status", "--pin-root", bpffs).stdout
    assert (
        f"  link    {other}  id {other_link['id']}  (not declared)  program "
        f"{other_link['prog_id']}  stale: runs program {other_link['prog_id']}, the pin "
        f"holds {newest}"
    ) in text.splitlines(), text
    assert bpftool("link", "show", "pinned", by_hand["tp"])["prog_id"] == newest

    bpfloader_cli("unload", "--pin-root", bpffs, check=True)
    assert not by_hand["cgroup"].exists() and not by_hand["tp"].exists()  # detached
    bpfloader_cli("detach", other, check=True)


def test_a_link_detached_by_hand_is_forgotten_and_its_object_left_alone(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    """`bpfloader detach` of a recorded link: the next reload forgets it and leaves the
    unchanged object as it is (its programs are not loaded again)."""
    install(compile_bpf, source_dir, "")
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    switches = bpffs / "prog_switches_tp_sched_sched_switch"
    link = bpffs / "hand_tp"
    bpfloader_cli("attach", switches, "tracepoint:sched:sched_switch", "--pin", link, check=True)
    program = bpftool("prog", "show", "pinned", switches)["id"]
    bpfloader_cli("detach", link, check=True)
    run = bpfloader_cli("reload", "--dir", source_dir, "--pin-root", bpffs, check=True)
    assert "unchanged" in run.stderr, run.stderr
    assert bpftool("prog", "show", "pinned", switches)["id"] == program
    (obj,) = json.loads(bpfloader_cli("status", "--pin-root", bpffs, "--json").stdout)["objects"]
    assert obj["links"] == []


def test_a_recreated_map_leaves_no_program_attached_that_writes_the_old_one(
    compile_bpf, source_dir, bpffs, bpfloader_cli, cgroup
):
    """--recreate-incompatible-maps: the map made anew, every declared link (updated in place,
    or made anew) runs the program that writes the new map."""
    policy = (
        '[program.count_switches]\nattach = "auto"\n'
        f'[program.count_egress]\nattach = ["cgroup:{cgroup}:egress"]\n'
    )
    install(compile_bpf, source_dir, policy)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    old_map = bpftool("map", "show", "pinned", bpffs / "map_switches_switches")["id"]
    install(compile_bpf, source_dir, policy, "-DENTRIES=4")  # incompatible: max_entries
    run = bpfloader_cli(
        "reload", "--recreate-incompatible-maps", "--dir", source_dir, "--pin-root", bpffs
    )
    assert run.returncode == 0, run.stderr
    new_map = bpftool("map", "show", "pinned", bpffs / "map_switches_switches")["id"]
    assert new_map != old_map
    for link, program in (
        ("link_switches_count_switches", "prog_switches_tp_sched_sched_switch"),
        ("link_switches_count_egress", "prog_switches_cgroup_skb_egress_count_egress"),
    ):
        runs = bpftool("link", "show", "pinned", bpffs / link)["prog_id"]
        assert bpftool("prog", "show", "id", runs)["map_ids"] == [new_map], link
        assert runs == bpftool("prog", "show", "pinned", bpffs / program)["id"], link
    in_child(lambda: udp_traffic(5), cgroup)
    assert counts(bpffs)[1] >= 5  # into the new map
    bpfloader_cli("unload", "--pin-root", bpffs, check=True)


def test_check_names_the_declared_attachments(compile_bpf, source_dir, bpfloader_cli):
    policy = (
        '[program.count_switches]\nattach = "auto"\n'
        '[program.pass]\nattach = [{target = "xdp:eth0", optional = true}]\n'
    )
    install(compile_bpf, source_dir, policy)
    run = bpfloader_cli("check", source_dir / "switches.o")
    assert run.returncode == 0, run.stdout
    lines = run.stdout.splitlines()
    assert "  attach count_switches to tracepoint:sched:sched_switch" in lines
    assert "  attach pass to xdp:eth0 (optional)" in lines
