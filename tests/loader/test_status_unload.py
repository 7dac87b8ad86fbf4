"""`bpfloader status` (plain and the documented JSON), `bpfloader unload`, and the loaded
marker that `bpfloader.client.wait_for_loaded` waits for."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import bpfloader.loader.status as status_module
from bpfloader.client import wait_for_loaded
from bpfloader.client.ready import loaded_marker
from tests.conftest import REPO, pins_in
from tests.json_support import documented, keys
from tests.reload_support import (
    SWITCH,
    ids_of,
    install,
    kernel_id,
    map_items,
    map_put,
    pin_foreign_map,
    prog_info,
    status_json,
    swap_pins,
    where,
)

pytestmark = pytest.mark.kernel

ALPHA, BETA = swap_pins("alpha"), swap_pins("beta")
PARTIAL_MAP = "map_r_partial_present_map"
PARTIAL_PROG = f"prog_r_partial_{SWITCH}"


@pytest.fixture
def swap(compile_bpf):
    def build(name: str, version: int, *flags: str) -> Path:
        return compile_bpf("r_swap.c", f"{name}.o", f"-DVERSION={version}", *flags)

    return build


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def running_kernel() -> str:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", os.uname().release)
    assert match
    return ".".join(g or "0" for g in match.groups())


# -- the documented JSON ---------------------------------------------------------------------

MODE = re.compile(r"0[0-7]{3}")


def check_pin(pin: Any, kind: str) -> None:
    expected = {"name", "pin", "present", "id", "uid", "gid", "mode"}
    if kind == "programs":
        expected |= {"section", "verified_insns", "load_usec"}
    assert isinstance(pin, dict) and set(pin) == expected, pin
    assert isinstance(pin["name"], str) and isinstance(pin["pin"], str)
    assert type(pin["present"]) is bool
    for key in ("id", "uid", "gid"):
        assert pin[key] is None or type(pin[key]) is int, (key, pin)
    assert pin["mode"] is None or (isinstance(pin["mode"], str) and MODE.fullmatch(pin["mode"]))
    if not pin["present"]:
        assert (pin["id"], pin["uid"], pin["gid"], pin["mode"]) == (None, None, None, None)
    if kind == "programs":
        assert isinstance(pin["section"], str)
        for key in ("verified_insns", "load_usec"):
            assert pin[key] is None or type(pin[key]) is int, (key, pin)


def check_schema(report: Any) -> None:
    """Exactly the form documented in bpfloader/loader/status.py: keys and types."""
    assert isinstance(report, dict)
    assert set(report) == {
        "format",
        "pin_root",
        "source_dir",
        "state",
        "state_reason",
        "objects",
        "foreign_pins",
    }
    assert report["format"] == 1
    assert isinstance(report["pin_root"], str) and isinstance(report["source_dir"], str)
    assert report["state"] in ("recorded", "rebuilt")
    assert isinstance(report["state_reason"], str)
    assert (report["state"] == "rebuilt") == bool(report["state_reason"])
    assert isinstance(report["foreign_pins"], list)
    assert all(isinstance(p, str) for p in report["foreign_pins"])
    assert isinstance(report["objects"], list)
    for obj in report["objects"]:
        assert set(obj) == {
            "path",
            "status",
            "reason",
            "stale",
            "critical",
            "sha256",
            "maps",
            "programs",
            "links",
            "skipped",
        }, obj
        assert isinstance(obj["path"], str) and isinstance(obj["reason"], str)
        assert obj["status"] in ("loaded", "skipped", "failed")
        assert type(obj["critical"]) is bool and type(obj["stale"]) is bool
        assert obj["sha256"] is None or re.fullmatch(r"[0-9a-f]{64}", obj["sha256"])
        for kind in ("maps", "programs"):
            assert isinstance(obj[kind], list)
            for pin in obj[kind]:
                check_pin(pin, kind)
        assert isinstance(obj["links"], list)
        for link in obj["links"]:
            check_pin({k: v for k, v in link.items() if k not in LINK_KEYS}, "links")
            assert isinstance(link["target"], str) and type(link["stale"]) is bool
            assert type(link["declared"]) is bool
            assert link["program_id"] is None or isinstance(link["program_id"], int)
            assert link["map_id"] is None or isinstance(link["map_id"], int)
        for skip in obj["skipped"]:
            assert set(skip) == {"kind", "name", "reason"}
            assert skip["kind"] in ("map", "program")
            assert isinstance(skip["name"], str) and isinstance(skip["reason"], str)


LINK_KEYS = ("target", "program_id", "map_id", "stale", "declared")


@pytest.fixture
def three_kinds(compile_bpf, source_dir, bpffs, bpfloader_cli) -> dict[str, Any]:
    """A loaded object with a map and a program gated out, an object skipped whole, an object
    the verifier refuses, and a pin the tool did not make."""
    paths = {
        name: install(compile_bpf(f"{name}.c"), source_dir)
        for name in ("r_partial", "r_gated", "bad_verifier")
    }
    run = bpfloader_cli("load", *where(source_dir, bpffs))
    assert run.returncode == 0, run.stderr
    pin_foreign_map(bpffs / "map_not_ours")
    (failed_line,) = [line for line in run.stdout.splitlines() if line.startswith("failed: ")]
    return {"paths": paths, "failed_reason": failed_line.removeprefix("failed: ")}


def test_status_json_for_loaded_skipped_and_failed_objects(
    three_kinds, source_dir, bpffs, state_dir, bpfloader_cli
):
    report = status_json(bpfloader_cli, source_dir, bpffs)
    check_schema(report)
    # No link here: test_attachments.py checks the keys of a link against the documentation.
    # (an object's `stale` is one of a link's keys too)
    assert keys(report) == documented(status_module) - (set(LINK_KEYS) - {"stale"})
    recorded = json.loads((state_dir / "state.json").read_text())
    (prog_record,) = [
        p
        for p in recorded["objects"][str(source_dir / "r_partial.o")]["pins"]
        if p["kind"] == "program"
    ]
    assert type(prog_record["load_usec"]) is int and prog_record["load_usec"] > 0
    kernel = running_kernel()
    future = f"needs kernel >= 99.0.0 and < inf, running {kernel}"
    paths = three_kinds["paths"]
    assert report == {
        "format": 1,
        "pin_root": str(bpffs),
        "source_dir": str(source_dir),
        "state": "recorded",
        "state_reason": "",
        "objects": [
            {
                "path": str(paths["bad_verifier"]),
                "status": "failed",
                "reason": three_kinds["failed_reason"],
                "stale": False,
                "critical": False,
                "sha256": None,
                "maps": [],
                "programs": [],
                "links": [],
                "skipped": [],
            },
            {
                "path": str(paths["r_gated"]),
                "status": "skipped",
                "reason": "needs loader version >= 1000 and < 65536, this loader is 48",
                "stale": False,
                "critical": False,
                "sha256": sha256(paths["r_gated"]),
                "maps": [],
                "programs": [],
                "links": [],
                "skipped": [],
            },
            {
                "path": str(paths["r_partial"]),
                "status": "loaded",
                "reason": "",
                "stale": False,
                "critical": False,
                "sha256": sha256(paths["r_partial"]),
                "maps": [
                    {
                        "name": "present_map",
                        "pin": str(bpffs / PARTIAL_MAP),
                        "present": True,
                        "id": kernel_id(bpffs / PARTIAL_MAP),
                        "uid": 0,
                        "gid": 4,
                        "mode": "0640",
                    }
                ],
                "programs": [
                    {
                        "name": "present_prog",
                        "pin": str(bpffs / PARTIAL_PROG),
                        "present": True,
                        "id": kernel_id(bpffs / PARTIAL_PROG),
                        "uid": 0,
                        "gid": 4,
                        "mode": "0440",
                        "section": "tracepoint/sched/sched_switch",
                        "verified_insns": prog_info(bpffs / PARTIAL_PROG).verified_insns,
                        "load_usec": prog_record["load_usec"],
                    }
                ],
                "links": [],
                "skipped": [
                    {"kind": "map", "name": "future_map", "reason": future},
                    {"kind": "program", "name": "future_prog", "reason": future},
                ],
            },
        ],
        "foreign_pins": [str(bpffs / "map_not_ours")],
    }
    assert "rejected by the verifier at bad_verifier.c:" in three_kinds["failed_reason"]


def test_status_plain_for_loaded_skipped_and_failed_objects(
    three_kinds, source_dir, bpffs, bpfloader_cli
):
    paths = three_kinds["paths"]
    prog = prog_info(bpffs / PARTIAL_PROG)
    report = status_json(bpfloader_cli, source_dir, bpffs)
    load_ms = report["objects"][2]["programs"][0]["load_usec"] / 1000
    future = f"needs kernel >= 99.0.0 and < inf, running {running_kernel()}"
    run = bpfloader_cli("status", *where(source_dir, bpffs))
    assert run.returncode == 0, run.stderr
    assert run.stderr == ""
    assert run.stdout.splitlines() == [
        f"pin root {bpffs} (state recorded)",
        # the reason without the path it starts with: the line names the object once
        f"{paths['bad_verifier']}: failed: "
        + three_kinds["failed_reason"].removeprefix(f"{paths['bad_verifier']}: "),
        f"{paths['r_gated']}: skipped: needs loader version >= 1000 and < 65536, this loader is 48",
        f"{paths['r_partial']}: loaded",
        f"  map     {bpffs / PARTIAL_MAP}  id {kernel_id(bpffs / PARTIAL_MAP)}  0:4 0640",
        f"  program {bpffs / PARTIAL_PROG}  id {prog.id}  0:4 0440  "
        f"{prog.verified_insns} insns, {load_ms:.2f} ms",
        f"  skipped map future_map: {future}",
        f"  skipped program future_prog: {future}",
        "not made by bpfloader:",
        f"  {bpffs / 'map_not_ours'}",
    ]

    # A pin that went away is shown as missing, in both forms.
    os.unlink(bpffs / PARTIAL_MAP)
    run = bpfloader_cli("status", *where(source_dir, bpffs))
    assert f"  map     {bpffs / PARTIAL_MAP}  MISSING" in run.stdout.splitlines()
    report = status_json(bpfloader_cli, source_dir, bpffs)
    check_schema(report)
    assert report["objects"][2]["maps"] == [
        {
            "name": "present_map",
            "pin": str(bpffs / PARTIAL_MAP),
            "present": False,
            "id": None,
            "uid": None,
            "gid": None,
            "mode": None,
        }
    ]


@pytest.mark.parametrize("how", ["deleted", "corrupt"])
def test_status_without_a_usable_state_rebuilds_it(
    three_kinds, source_dir, bpffs, state_dir, bpfloader_cli, how
):
    state_file = state_dir / "state.json"
    if how == "deleted":
        state_file.unlink()
        why = f"no state recorded in {state_dir}"
    else:
        state_file.write_text('{"format": 1, "objects": ')
        with pytest.raises(ValueError) as refused:
            json.loads(state_file.read_text())
        why = f"{state_file}: {type(refused.value).__name__}: {refused.value}"
    report = status_json(bpfloader_cli, source_dir, bpffs)
    check_schema(report)
    prog = prog_info(bpffs / PARTIAL_PROG)
    # Only what the pins show: the object that has pins, its hash not known, no load figures.
    assert report == {
        "format": 1,
        "pin_root": str(bpffs),
        "source_dir": str(source_dir),
        "state": "rebuilt",
        "state_reason": why,
        "objects": [
            {
                "path": str(three_kinds["paths"]["r_partial"]),
                "status": "loaded",
                "reason": "",
                "stale": False,
                "critical": False,
                "sha256": None,
                "maps": [
                    {
                        "name": "present_map",
                        "pin": str(bpffs / PARTIAL_MAP),
                        "present": True,
                        "id": kernel_id(bpffs / PARTIAL_MAP),
                        "uid": 0,
                        "gid": 4,
                        "mode": "0640",
                    }
                ],
                "programs": [
                    {
                        "name": "present_prog",
                        "pin": str(bpffs / PARTIAL_PROG),
                        "present": True,
                        "id": prog.id,
                        "uid": 0,
                        "gid": 4,
                        "mode": "0440",
                        "section": "tracepoint/sched/sched_switch",
                        "verified_insns": None,
                        "load_usec": None,
                    }
                ],
                "links": [],
                "skipped": [],
            }
        ],
        "foreign_pins": [str(bpffs / "map_not_ours")],
    }
    # status only reads: the state file is as it was.
    assert state_file.exists() == (how == "corrupt")
    plain = bpfloader_cli("status", *where(source_dir, bpffs))
    assert plain.stdout.splitlines()[0] == f"pin root {bpffs} (state rebuilt: {why})"


# -- unload ------------------------------------------------------------------------------------


@pytest.fixture
def four(swap, compile_bpf, source_dir, bpffs, bpfloader_cli) -> dict[str, set[str]]:
    """alpha, beta, delta@mainline (FILENAME delta) and net/gamma loaded, a foreign pin at the
    top and one in the location's directory."""
    install(swap("alpha", 1), source_dir)
    install(swap("beta", 1), source_dir)
    install(swap("delta@mainline", 1), source_dir)
    install(swap("gamma", 1), source_dir / "net")
    assert bpfloader_cli("load", *where(source_dir, bpffs)).returncode == 0
    objects = {
        "alpha.o": ALPHA,
        "beta.o": BETA,
        "delta@mainline.o": swap_pins("delta"),
        "net/gamma.o": swap_pins("gamma", "net"),
    }
    assert pins_in(bpffs) == set().union(*objects.values())
    pin_foreign_map(bpffs / "map_alpha_extra")
    pin_foreign_map(bpffs / "net" / "someone_elses")
    return objects


FOREIGN = {"map_alpha_extra", "net/someone_elses"}


@pytest.mark.parametrize(
    ("name", "target"),
    [
        ("{source_dir}/beta.o", "beta.o"),
        ("beta.o", "beta.o"),
        ("beta", "beta.o"),
        ("delta@mainline.o", "delta@mainline.o"),
        ("delta", "delta@mainline.o"),  # FILENAME: cut at the last '.', then the last '@'
        ("gamma", "net/gamma.o"),
    ],
)
def test_unload_one_object_removes_only_its_pins(
    four, source_dir, bpffs, bpfloader_cli, name, target
):
    others = set().union(*(pins for obj, pins in four.items() if obj != target))
    before = ids_of(bpffs, others | FOREIGN)
    run = bpfloader_cli("unload", name.format(source_dir=source_dir), *where(source_dir, bpffs))
    assert run.returncode == 0, run.stderr
    assert run.stdout == "removed 4 pins\n"
    assert pins_in(bpffs) == others | FOREIGN
    assert ids_of(bpffs, others | FOREIGN) == before
    report = status_json(bpfloader_cli, source_dir, bpffs)
    assert [o["path"] for o in report["objects"]] == [
        str(source_dir / obj) for obj in sorted(four) if obj != target
    ]
    assert report["foreign_pins"] == sorted(str(bpffs / rel) for rel in FOREIGN)


def test_unload_without_names_removes_every_pin_of_the_tool_and_nothing_else(
    four, source_dir, bpffs, state_dir, bpfloader_cli
):
    foreign = ids_of(bpffs, FOREIGN)
    assert (state_dir / "loaded").exists()
    run = bpfloader_cli("unload", *where(source_dir, bpffs))
    assert run.returncode == 0, run.stderr
    assert run.stdout == "removed 16 pins\n"
    assert not (state_dir / "loaded").exists()  # nothing pinned: wait_for_loaded must wait
    assert pins_in(bpffs) == FOREIGN
    assert ids_of(bpffs, FOREIGN) == foreign
    assert sorted(os.listdir(bpffs)) == ["map_alpha_extra", "maps.debug", "net", "progs.debug"]
    report = status_json(bpfloader_cli, source_dir, bpffs)
    assert (report["state"], report["objects"]) == ("recorded", [])
    assert json.loads((state_dir / "state.json").read_text())["objects"] == {}
    # Nothing left to unload; a reload brings everything back.
    again = bpfloader_cli("unload", *where(source_dir, bpffs))
    assert (again.returncode, again.stdout) == (
        0,
        f"nothing to unload: no object of {bpffs} is recorded or found\n",
    )
    assert bpfloader_cli("reload", *where(source_dir, bpffs)).returncode == 0
    assert pins_in(bpffs) == set().union(*four.values()) | FOREIGN


def test_unload_of_an_unknown_name_is_a_clear_error(four, source_dir, bpffs, bpfloader_cli):
    before = ids_of(bpffs, pins_in(bpffs))
    run = bpfloader_cli("unload", "beta", "nosuch", *where(source_dir, bpffs))
    assert run.returncode == 2
    recorded = ", ".join(str(source_dir / obj) for obj in sorted(four))
    assert run.stderr.splitlines() == [
        f"bpfloader: no object 'nosuch' is recorded as loaded (recorded: {recorded})"
    ]
    assert ids_of(bpffs, pins_in(bpffs)) == before  # not even beta's pins went


def test_unload_keeps_a_shared_map_another_object_still_uses(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    install(compile_bpf("k_shared.c", "share_a.o", "-DPROG_FN=tp_a"), source_dir)
    install(compile_bpf("k_shared.c", "share_b.o", "-DPROG_FN=tp_b"), source_dir)
    assert bpfloader_cli("load", *where(source_dir, bpffs)).returncode == 0
    own = {
        name: {f"map_{name}_own_map", f"prog_{name}_{SWITCH}"} for name in ("share_a", "share_b")
    }
    assert pins_in(bpffs) == {"map__shared_counts"} | own["share_a"] | own["share_b"]
    shared_id = kernel_id(bpffs / "map__shared_counts")
    map_put(bpffs / "map__shared_counts", 3, 3000)
    b_ids = ids_of(bpffs, own["share_b"])

    run = bpfloader_cli("unload", "share_a", *where(source_dir, bpffs))
    assert (run.returncode, run.stdout) == (0, "removed 2 pins\n")
    assert pins_in(bpffs) == {"map__shared_counts"} | own["share_b"]
    assert kernel_id(bpffs / "map__shared_counts") == shared_id
    assert map_items(bpffs / "map__shared_counts")[3] == 3000
    assert ids_of(bpffs, own["share_b"]) == b_ids

    run = bpfloader_cli("unload", "share_b.o", *where(source_dir, bpffs))
    assert (run.returncode, run.stdout) == (0, "removed 3 pins\n")  # the last user: it goes
    assert pins_in(bpffs) == set()


# -- the loaded marker --------------------------------------------------------------------------

WAITER = """
import json, sys, time
from bpfloader.client import wait_for_loaded
print("waiting", flush=True)
result = wait_for_loaded(float(sys.argv[1]), state_dir=sys.argv[2])
print(json.dumps({"result": result, "time": time.time()}), flush=True)
"""


def test_wait_for_loaded_returns_right_after_the_load(
    swap, source_dir, bpffs, state_dir, bpfloader_cli
):
    install(swap("alpha", 1), source_dir)
    waiter = subprocess.Popen(
        [sys.executable, "-c", WAITER, "30", str(state_dir)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert waiter.stdout is not None
        assert waiter.stdout.readline() == "waiting\n"
        time.sleep(0.3)
        assert waiter.poll() is None  # still waiting: nothing has loaded
        assert loaded_marker(str(state_dir)) is None
        run = bpfloader_cli("load", *where(source_dir, bpffs))
        load_done = time.time()
        out, _ = waiter.communicate(timeout=10)
    finally:
        waiter.kill()
        waiter.wait()
    assert run.returncode == 0, run.stderr
    answer = json.loads(out)
    marker = loaded_marker(str(state_dir))
    assert marker is not None
    assert answer["result"] is True
    # It returned once the marker was there, within a couple of its 50 ms polls.
    assert marker["time"] <= answer["time"] <= load_done + 0.5
    assert answer["time"] - marker["time"] < 0.5
    assert {k: v for k, v in marker.items() if k not in ("time", "pid")} == {
        "pin_root": str(bpffs),
        "loaded": 1,
        "skipped": 0,
        "failed": 0,
    }


def test_wait_for_loaded_times_out_when_nothing_loads(state_dir):
    started = time.monotonic()
    assert wait_for_loaded(0.3, state_dir=str(state_dir)) is False
    assert 0.3 <= time.monotonic() - started < 1.0


def test_a_critical_failure_writes_no_marker(
    swap, compile_bpf, source_dir, bpffs, state_dir, bpfloader_cli
):
    install(swap("alpha", 1), source_dir)
    critical = install(compile_bpf("bad_critical_verifier.c"), source_dir)
    run = bpfloader_cli("load", *where(source_dir, bpffs))
    assert run.returncode == 1, run.stderr
    assert pins_in(bpffs) == ALPHA  # the others loaded
    assert sorted(os.listdir(state_dir)) == ["lock", "state.json"]  # no marker
    assert wait_for_loaded(0.2, state_dir=str(state_dir)) is False
    # The same for a reload that fails critically.
    run = bpfloader_cli("reload", *where(source_dir, bpffs))
    assert run.returncode == 1
    assert loaded_marker(str(state_dir)) is None

    os.unlink(critical)
    run = bpfloader_cli("reload", *where(source_dir, bpffs))
    assert run.returncode == 0, run.stderr
    assert wait_for_loaded(0.2, state_dir=str(state_dir)) is True
    marker = loaded_marker(str(state_dir))
    assert marker is not None and (marker["loaded"], marker["failed"]) == (1, 0)
