"""bpftool's verbs on pins (issue 20, item 5): `bpfloader map lookup`, `update`, `delete` (keys
and values in map dump's types), `prog show` and `link show` (bpftool is the oracle), their
JSON against the forms documented in client/elements.py, client/dump.py and client/show.py."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from test_attach_cgroup import cgroup  # noqa: F401 (a fixture)
from test_cli_client import GETPPID_PROG, TRACEPOINT, pins  # noqa: F401 (a fixture)

import bpfloader.client.dump as dump_module
import bpfloader.client.elements as elements_module
import bpfloader.client.show as show_module
from bpfloader.client import BpfMap
from bpfloader.kernel import system
from tests.json_support import documented, keys
from tests.kernel.test_bpftool import bpftool as bpftool_json

pytestmark = pytest.mark.kernel

U32_U64 = ("--key-type", "u32", "--value-type", "u64")


def test_update_lookup_delete_round_trip(pins, bpfloader_cli):  # noqa: F811
    hash_pin = pins / "map_client_maps_hash"
    done = bpfloader_cli("map", "update", hash_pin, "7", "0x10", *U32_U64)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    with BpfMap.open(str(hash_pin), key="I", value="Q") as m:
        assert dict(m.items()) == {7: 16}  # what the kernel holds, read another way
    looked = bpfloader_cli("map", "lookup", hash_pin, "7", *U32_U64, check=True)
    assert looked.stdout == "7: 16\n"
    as_json = bpfloader_cli("map", "lookup", hash_pin, "7", *U32_U64, "--json", check=True)
    assert json.loads(as_json.stdout) == {"key": 7, "value": 16}
    # Raw bytes by default, as map dump prints them; spaces allowed, as bpftool writes them.
    raw = bpfloader_cli("map", "lookup", hash_pin, "07 00 00 00", "--json", check=True)
    assert json.loads(raw.stdout) == {"key": "07000000", "value": "1000000000000000"}
    assert keys(json.loads(raw.stdout)) == documented(elements_module) == {"key", "value"}
    # --flag: noexist refuses an element that is there, exist one that is not.
    there = bpfloader_cli("map", "update", hash_pin, "7", "1", *U32_U64, "--flag", "noexist")
    assert there.returncode == 2 and "EEXIST" in there.stderr, there.stderr
    missing = bpfloader_cli("map", "update", hash_pin, "8", "1", *U32_U64, "--flag", "exist")
    assert missing.returncode == 2 and "ENOENT" in missing.stderr, missing.stderr
    bpfloader_cli("map", "update", hash_pin, "8", "1", *U32_U64, "--flag", "noexist", check=True)
    deleted = bpfloader_cli("map", "delete", hash_pin, "7", "--key-type", "u32")
    assert (deleted.returncode, deleted.stdout) == (0, "")
    with BpfMap.open(str(hash_pin), key="I", value="Q") as m:
        assert dict(m.items()) == {8: 1}
    gone = bpfloader_cli("map", "lookup", hash_pin, "7", *U32_U64)
    assert (gone.returncode, gone.stderr) == (2, f"bpfloader: {hash_pin}: no element with key 7\n")
    again = bpfloader_cli("map", "delete", hash_pin, "7", "--key-type", "u32")
    assert (again.returncode, again.stderr) == (
        2,
        f"bpfloader: {hash_pin}: no element with key 7\n",
    )


def test_per_cpu_and_struct_values(pins, bpfloader_cli):  # noqa: F811
    cpus = len(system.possible_cpus())
    per_cpu = pins / "map_client_maps_percpu_hash"
    types = ("--key-type", "u32", "--value-type", "u32")
    bpfloader_cli("map", "update", per_cpu, "1", "5", *types, check=True)  # every CPU: 5
    each = json.dumps(list(range(cpus)))
    bpfloader_cli("map", "update", per_cpu, "2", each, *types, check=True)  # one per CPU
    with BpfMap.open(str(per_cpu), key="I", value="I") as m:
        assert dict(m.items()) == {1: [5] * cpus, 2: list(range(cpus))}
    looked = bpfloader_cli("map", "lookup", per_cpu, "2", *types, "--json", check=True)
    assert json.loads(looked.stdout) == {"key": 2, "value": list(range(cpus))}
    wrong = bpfloader_cli("map", "update", per_cpu, "3", json.dumps([1] * (cpus + 1)), *types)
    assert wrong.returncode == 2
    assert f"{cpus + 1} values for a per-CPU map of {cpus} possible CPUs" in wrong.stderr
    # A struct format: fields separated by commas, or as map dump --json prints them.
    array = pins / "map_client_maps_array"
    fields = ("--key-type", "u32", "--value-type", "=II")
    bpfloader_cli("map", "update", array, "3", "1,2", *fields, check=True)
    assert bpfloader_cli("map", "lookup", array, "3", *fields, check=True).stdout == "3: [1, 2]\n"
    bpfloader_cli("map", "update", array, "4", "[3, 4]", *fields, check=True)
    dumped = bpfloader_cli("map", "dump", array, *fields, "--json", check=True)
    entries = {e["key"]: e["value"] for e in json.loads(dumped.stdout)}
    assert (entries[3], entries[4], entries[5]) == ([1, 2], [3, 4], [0, 0])
    assert keys(json.loads(dumped.stdout)) == documented(dump_module) == {"key", "value"}


def test_map_element_errors_say_what_was_expected(pins, bpfloader_cli):  # noqa: F811
    hash_pin, array = pins / "map_client_maps_hash", pins / "map_client_maps_array"
    cases = [
        (("update", hash_pin, "1", "x", *U32_U64), "value 'x' is not a u64 value: expected a "
         "number (7, -1, 0x10)"),
        (("update", hash_pin, "-1", "1", *U32_U64), "key '-1' does not fit a u32 key"),
        (("lookup", hash_pin, "0a0"), "key '0a0' is not a hex key: expected hex digits"),
        (("lookup", hash_pin, "0a00"), "2 bytes given where the map's key is 4"),
        (("update", array, "1", "1,2,3", "--key-type", "u32", "--value-type", "=II"),
         "value '1,2,3' is not a =II value: expected 2 fields separated by commas"),
        (("delete", array, "1", "--key-type", "u32"), "elements of a ARRAY map cannot be deleted"),
    ]  # fmt: skip
    for args, message in cases:
        done = bpfloader_cli("map", *args)
        assert done.returncode == 2, (args, done.stdout)
        assert done.stderr.startswith("bpfloader: ") and message in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1


def check_program(shown: dict[str, Any]) -> None:
    """The form of `prog show --json` (client/show.py)."""
    assert set(shown) == {
        "pin", "id", "type", "name", "tag", "verified_insns", "jited_size", "xlated_size",
        "maps", "links",
    }  # fmt: skip
    for key in ("id", "verified_insns", "xlated_size"):
        assert type(shown[key]) is int
    assert shown["jited_size"] is None or type(shown["jited_size"]) is int
    assert re.fullmatch(r"[0-9a-f]{16}", shown["tag"])
    for m in shown["maps"]:
        assert set(m) == {"id", "name", "type"} and type(m["id"]) is int
    assert shown["links"] is None or all(set(k) == {"id", "type"} for k in shown["links"])


def check_link(shown: dict[str, Any]) -> None:
    assert set(shown) == {"pin", "id", "type", "prog_id", "prog_name", "details"}
    assert type(shown["id"]) is int and type(shown["prog_id"]) is int
    assert isinstance(shown["details"], dict)


def test_prog_and_link_show_agree_with_bpftool(pins, bpfloader_cli, cgroup):  # noqa: F811
    prog = pins / GETPPID_PROG
    link = pins / "getppid_link"
    bpfloader_cli("attach", prog, TRACEPOINT, "--pin", link, check=True)
    shown = json.loads(bpfloader_cli("prog", "show", prog, "--json", check=True).stdout)
    check_program(shown)
    oracle = bpftool_json("prog", "show", "pinned", str(prog))
    assert (shown["id"], shown["type"], shown["name"], shown["tag"]) == (
        oracle["id"], oracle["type"], oracle["name"], oracle["tag"],
    )  # fmt: skip
    assert (shown["xlated_size"], shown["jited_size"]) == (
        oracle["bytes_xlated"],
        oracle["bytes_jited"],
    )
    assert [m["id"] for m in shown["maps"]] == oracle["map_ids"]
    assert {m["name"] for m in shown["maps"]} == {"hits", "watched_tgid"}
    linked = json.loads(bpfloader_cli("link", "show", link, "--json", check=True).stdout)
    check_link(linked)
    link_oracle = bpftool_json("link", "show", "pinned", str(link))
    assert (linked["id"], linked["type"], linked["prog_id"]) == (
        link_oracle["id"], link_oracle["type"], link_oracle["prog_id"],
    )  # fmt: skip
    assert linked["prog_name"] == shown["name"]
    assert linked["details"] == {"perf_event_type": "tracepoint"}
    assert shown["links"] == [{"id": linked["id"], "type": "perf_event"}]

    # A cgroup link: where it is attached, as bpftool says it.
    skb, egress = pins / "prog_client_cgroup_cgroupskb_count", pins / "egress_link"
    bpfloader_cli("attach", skb, f"cgroup:{cgroup}:egress", "--pin", egress, check=True)
    on_cgroup = json.loads(bpfloader_cli("link", "show", egress, "--json", check=True).stdout)
    cgroup_oracle = bpftool_json("link", "show", "pinned", str(egress))
    assert on_cgroup["details"] == {
        "cgroup_id": cgroup_oracle["cgroup_id"],
        "attach_type": cgroup_oracle["attach_type"],
    }
    assert on_cgroup["details"]["cgroup_id"] == Path(cgroup).stat().st_ino
    produced = keys(shown) | keys(linked) | keys(on_cgroup)
    assert produced - {"perf_event_type", "cgroup_id", "attach_type"} <= documented(show_module)
    assert {"perf_event_type", "cgroup_id", "attach_type"} <= set(
        re.findall(r"`(\w+)`", show_module.__doc__ or "")
    )

    text = bpfloader_cli("prog", "show", prog, check=True).stdout.splitlines()
    assert text[0] == f"{shown['id']}: tracepoint  name {shown['name']}  tag {shown['tag']}"
    assert text[-1] == f"    links {linked['id']} (perf_event)"
    plain = bpfloader_cli("link", "show", egress, check=True).stdout.splitlines()
    assert plain[0] == (
        f"{on_cgroup['id']}: cgroup  prog {on_cgroup['prog_id']} ({on_cgroup['prog_name']})"
    )
    assert plain[2] == (
        f"    cgroup_id {cgroup_oracle['cgroup_id']}  attach_type cgroup_inet_egress"
    )
    bpfloader_cli("detach", link, egress, check=True)


def test_show_refuses_the_wrong_kind_of_pin(pins, bpfloader_cli):  # noqa: F811
    hash_pin, prog = pins / "map_client_maps_hash", pins / GETPPID_PROG
    done = bpfloader_cli("prog", "show", hash_pin)
    assert (done.returncode, done.stderr) == (
        2,
        f"bpfloader: {hash_pin}: a map pin, not a program pin\n",
    )
    done = bpfloader_cli("link", "show", prog)
    assert (done.returncode, done.stderr) == (
        2,
        f"bpfloader: {prog}: a program pin, not a link pin\n",
    )


def test_a_tracepoint_target_without_its_name_shows_the_form(pins, bpfloader_cli):  # noqa: F811
    """Issue 20: `invalid tracepoint name sched:`."""
    done = bpfloader_cli("attach", pins / GETPPID_PROG, "tracepoint:sched:")
    assert done.returncode == 2
    assert done.stderr == (
        "bpfloader: 'tracepoint:sched:': expected tracepoint:CATEGORY:NAME, such as "
        "tracepoint:sched:sched_switch (the tracepoints are the directories CATEGORY/NAME of "
        "/sys/kernel/tracing/events)\n"
    )
