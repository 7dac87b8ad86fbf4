"""The command line's conventions (issue 20, item 4): the JSON forms of load, reload, the dry
run, unload and check against their documentation (loader/report.py, loader/check.py); exit
codes of the dry run and check; a closed pipe; a mistyped option; stale pins said by load and
status; a state directory that records another pin root; and the messages the issue quoted."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import bpfloader.loader.check as check_module
import bpfloader.loader.report as report_module
from bpfloader.loader.report import FORMAT
from tests.conftest import REPO, with_cache_dir
from tests.json_support import documented, keys
from tests.reload_support import install, status_json, swap_pins, where

MODE = re.compile(r"0[0-7]{3}")
ACTIONS = {"create", "load", "reuse", "replace", "keep", "update", "skip"}


def check_run(report: Any, command: str, *, dry_run: bool) -> None:
    """The form of `load --json`, `reload --json`, `load --dry-run --json` (report.py)."""
    assert set(report) == {
        "format", "command", "dry_run", "pin_root", "source_dir", "loaded", "skipped", "failed",
        "critical_failed", "objects", "removed",
    }  # fmt: skip
    assert (report["format"], report["command"], report["dry_run"]) == (FORMAT, command, dry_run)
    for count in ("loaded", "skipped", "failed", "critical_failed"):
        assert type(report[count]) is int
    statuses = [o["status"] for o in report["objects"]]
    assert report["loaded"] == statuses.count("loaded")
    assert report["failed"] == statuses.count("failed")
    assert report["skipped"] == statuses.count("skipped")
    assert all(isinstance(p, str) for p in report["removed"])
    for obj in report["objects"]:
        assert set(obj) == {"path", "status", "reason", "critical", "stale", "pins", "skipped"}
        assert obj["status"] in ("loaded", "skipped", "failed")
        assert isinstance(obj["reason"], str) and type(obj["critical"]) is bool
        assert (obj["reason"] == "") == (obj["status"] == "loaded")
        assert all(isinstance(p, str) for p in obj["stale"])
        for pin in obj["pins"]:
            assert set(pin) == {
                "kind", "name", "pin", "action", "id", "uid", "gid", "mode", "verified_insns",
                "load_usec", "jited_size",
            }  # fmt: skip
            assert pin["kind"] in ("map", "program", "link") and pin["action"] in ACTIONS
            assert pin["mode"] is None or MODE.fullmatch(pin["mode"])
            for number in ("id", "uid", "gid", "verified_insns", "load_usec", "jited_size"):
                assert pin[number] is None or type(pin[number]) is int, (number, pin)
            if dry_run:
                assert (pin["id"], pin["verified_insns"]) == (None, None)
            elif pin["kind"] == "program" and pin["action"] == "load":
                assert pin["id"] and pin["verified_insns"] and pin["load_usec"] is not None
        for skip in obj["skipped"]:
            assert set(skip) == {"kind", "name", "reason"} and skip["kind"] in ("map", "program")


@pytest.fixture
def three(compile_bpf, source_dir) -> dict[str, Path]:
    """An object with a map and a program gated out, one skipped whole, one the verifier
    refuses."""
    return {
        name: install(compile_bpf(f"{name}.c"), source_dir)
        for name in ("r_partial", "r_gated", "bad_verifier")
    }


@pytest.mark.kernel
def test_json_of_load_reload_dry_run_and_unload(three, source_dir, bpffs, bpfloader_cli):
    dry = bpfloader_cli("load", "--dry-run", "--json", *where(source_dir, bpffs))
    assert dry.returncode == 0, dry.stderr  # the verifier's refusal is not the plan's to see
    planned = json.loads(dry.stdout)
    check_run(planned, "load", dry_run=True)
    assert [o["status"] for o in planned["objects"]] == ["loaded", "skipped", "loaded"]
    assert not list(bpffs.glob("map_*"))

    load = bpfloader_cli("load", "--json", *where(source_dir, bpffs))
    assert load.returncode == 0, load.stderr
    report = json.loads(load.stdout)
    check_run(report, "load", dry_run=False)
    assert (report["pin_root"], report["source_dir"]) == (str(bpffs), str(source_dir))
    assert [o["status"] for o in report["objects"]] == ["failed", "skipped", "loaded"]
    assert report["objects"][0]["reason"].startswith(
        f"{three['bad_verifier']}: tracepoint/sched/sched_switch: rejected by the verifier at "
    )
    loaded = report["objects"][2]
    assert {p["pin"] for p in loaded["pins"]} == {
        str(bpffs / "map_r_partial_present_map"),
        str(bpffs / "prog_r_partial_tracepoint_sched_sched_switch"),
    }
    assert {s["name"] for s in loaded["skipped"]} == {"future_map", "future_prog"}
    # Every key the documentation gives is produced here (unload's own form below).
    assert keys(report) == documented(report_module)

    reload = bpfloader_cli("reload", "--json", *where(source_dir, bpffs))
    assert reload.returncode == 3, reload.stderr  # bad_verifier.o fails again
    again = json.loads(reload.stdout)
    check_run(again, "reload", dry_run=False)
    assert [p["action"] for p in again["objects"][2]["pins"]] == ["keep", "keep"]

    unload = bpfloader_cli("unload", "--json", *where(source_dir, bpffs))
    assert unload.returncode == 0, unload.stderr
    gone = json.loads(unload.stdout)
    assert gone == {
        "format": FORMAT,
        "command": "unload",
        "pin_root": str(bpffs),
        "objects": sorted(str(p) for p in three.values()),
        "removed": sorted(p["pin"] for p in loaded["pins"]),
    }


def test_dry_run_exit_codes(compile_bpf, source_dir, tmp_path, bpfloader_cli):
    """Issue 20: `load --dry-run` exited 0 when every object would be refused. 0: all would
    load; 3: one that is not critical would fail; 1: a critical one would."""
    pins = tmp_path / "no-pins-needed"
    install(compile_bpf("myschedtp.c"), source_dir)
    assert (
        bpfloader_cli("load", "--dry-run", "--dir", source_dir, "--pin-root", pins).returncode == 0
    )
    (source_dir / "broken.o").write_text("not an object\n")
    run = bpfloader_cli("load", "--dry-run", "--dir", source_dir, "--pin-root", pins, "--json")
    assert run.returncode == 3
    report = json.loads(run.stdout)
    check_run(report, "load", dry_run=True)
    assert (report["failed"], report["critical_failed"]) == (1, 0)
    assert report["objects"][0]["reason"] == f"{source_dir}/broken.o: not an ELF file"
    critical = compile_bpf("pure_errors.c", None, "-DNO_LICENSE", "-DMAKE_CRITICAL")
    shutil.copy(critical, source_dir / "crit.o")
    run = bpfloader_cli("load", "--dry-run", "--dir", source_dir, "--pin-root", pins)
    assert run.returncode == 1
    assert not pins.exists()


def test_check_json_and_exit_codes(compile_bpf, tmp_path, bpfloader_cli):
    good = compile_bpf("myschedtp.c")
    run = bpfloader_cli("check", "--json", good)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert keys(report) == documented(check_module)
    assert report["ok"] is True
    (obj,) = report["objects"]
    assert (obj["path"], obj["ok"], obj["error"], obj["verifier_log"]) == (
        str(good),
        True,
        None,
        None,
    )
    assert obj["pins"] == [
        {
            "kind": "map", "name": "cpu_pid_map", "pin": "/sys/fs/bpf/map_myschedtp_cpu_pid_map",
            "action": "create", "reason": "", "uid": 0, "gid": 4, "mode": "0640",
        },
        {
            "kind": "program", "name": "tp_sched_switch",
            "pin": "/sys/fs/bpf/prog_myschedtp_tracepoint_sched_sched_switch", "action": "load",
            "reason": "", "uid": 0, "gid": 4, "mode": "0440",
        },
    ]  # fmt: skip
    # The text form says the same pins.
    text = bpfloader_cli("check", good).stdout.splitlines()
    assert text == [
        f"ok   {good}",
        "  map  /sys/fs/bpf/map_myschedtp_cpu_pid_map  0:4 0640",
        "  prog /sys/fs/bpf/prog_myschedtp_tracepoint_sched_sched_switch  0:4 0440",
    ]
    # A C source: issue 20's `FAIL x.c: not an ELF file` says what to do instead.
    source = tmp_path / "x.c"
    source.write_text("int x;\n")
    run = bpfloader_cli("check", "--json", good, source)
    assert run.returncode == 1
    report = json.loads(run.stdout)
    assert report["ok"] is False
    assert report["objects"][1]["error"] == (
        f"{source}: a C source, not an object: compile it first with `bpfloader build "
        f"{source}` and check the .o it writes"
    )
    assert bpfloader_cli("check", source).stdout == f"FAIL {report['objects'][1]['error']}\n"


@pytest.mark.kernel
def test_check_json_carries_the_verifiers_log(compile_bpf, bpfloader_cli):
    bad = compile_bpf("bad_verifier.c")
    run = bpfloader_cli("check", "--kernel", "--json", bad)
    assert run.returncode == 1
    (obj,) = json.loads(run.stdout)["objects"]
    assert obj["error"].startswith(f"{bad}: tracepoint/sched/sched_switch: rejected by the ")
    assert (
        "; return v[1]; /* value_size is 4: offset 4 is past the end */ @ bad_verifier.c:"
        in (obj["verifier_log"])
    )


@pytest.mark.kernel
def test_stale_pins_are_said_by_load_and_status(compile_bpf, source_dir, bpffs, bpfloader_cli):
    """Issue 20: `load` over a changed object said "reuse", and `status` then said "loaded"
    with sha256 null. Now both say the pins are stale, and a reload puts it right."""
    obj = install(compile_bpf("r_swap.c", "alpha.o", "-DVERSION=1"), source_dir)
    bpfloader_cli("load", *where(source_dir, bpffs), check=True)
    assert status_json(bpfloader_cli, source_dir, bpffs)["objects"][0]["stale"] is False
    # The same file again: its pins are its own.
    again = bpfloader_cli("load", *where(source_dir, bpffs), check=True)
    assert not [line for line in again.stdout.splitlines() if line.startswith("stale: ")]
    shutil.copy(compile_bpf("r_swap.c", "alpha.o", "-DVERSION=2"), obj)
    run = bpfloader_cli("load", *where(source_dir, bpffs), check=True)
    said = run.stdout.splitlines()[-1]
    head = (
        f"stale: {obj}: kept 4 pins found in place, made from another version of the file "
        "(`bpfloader reload` loads the file and replaces them): "
    )
    assert said.startswith(head)
    stale = said.removeprefix(head).split(", ")  # in the object's order: maps, then programs
    assert sorted(stale) == sorted(str(bpffs / p) for p in swap_pins("alpha"))
    assert (
        f"bpfloader: warning: {obj}: kept 4 pins found in place, made from another version of "
        f"the file: {', '.join(stale)}; `bpfloader reload` loads the file and replaces them"
    ) in run.stderr.splitlines()
    as_json = json.loads(bpfloader_cli("load", "--json", *where(source_dir, bpffs)).stdout)
    assert as_json["objects"][0]["stale"] == stale
    report = status_json(bpfloader_cli, source_dir, bpffs)
    assert (report["objects"][0]["status"], report["objects"][0]["stale"]) == ("loaded", True)
    text = bpfloader_cli("status", *where(source_dir, bpffs)).stdout.splitlines()
    assert text[1] == (
        f"{obj}: loaded (stale: a load kept pins it found in place that may come from another "
        "version of the file; `bpfloader reload` replaces them)"
    )
    bpfloader_cli("reload", *where(source_dir, bpffs), check=True)
    report = status_json(bpfloader_cli, source_dir, bpffs)
    assert report["objects"][0]["stale"] is False and report["objects"][0]["sha256"]


@pytest.mark.kernel
def test_a_state_directory_of_another_pin_root_is_said(
    compile_bpf, source_dir, bpffs, tmp_path, state_dir, bpfloader_cli
):
    """Issue 20: `unload --pin-root X` with the wrong state directory printed `removed 0
    pins` and wrote a state for X over the one it had."""
    install(compile_bpf("myschedtp.c"), source_dir)
    bpfloader_cli("load", *where(source_dir, bpffs), check=True)
    recorded = (state_dir / "state.json").read_bytes()
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["mount", "-t", "bpf", "bpf", str(other)], check=True)
    try:
        refusal = (
            f"bpfloader: the state directory {state_dir} records the pins of {bpffs}, not of "
            f"{other}: give each pin root its own --state-dir (nothing was done)"
        )
        for command in ("unload", "load", "reload"):
            run = bpfloader_cli(command, *where(source_dir, other))
            assert run.returncode == 2, (command, run.stderr)
            assert refusal in run.stderr.splitlines(), run.stderr
            assert (state_dir / "state.json").read_bytes() == recorded
        assert set(os.listdir(other)) == {"maps.debug", "progs.debug"}
        status = status_json(bpfloader_cli, source_dir, other)
        assert (status["state"], status["state_reason"]) == (
            "rebuilt",
            f"{state_dir} records the pins of {bpffs}, not these",
        )
        # A state directory of its own: nothing recorded, nothing found, nothing written.
        own = tmp_path / "own-state"
        run = bpfloader_cli("unload", *where(source_dir, other), "--state-dir", own)
        assert (run.returncode, run.stdout) == (
            0,
            f"nothing to unload: no object of {other} is recorded or found\n",
        )
        assert not (own / "state.json").exists()
    finally:
        subprocess.run(["umount", str(other)], check=True)


def test_a_mistyped_option_gets_its_commands_usage_and_the_closest_option(bpfloader_cli):
    run = bpfloader_cli("load", "--pin-rot", "/tmp/x")
    assert run.returncode == 2
    lines = run.stderr.splitlines()
    assert lines[0].startswith("usage: bpfloader load [-h] [--dir DIR]")
    assert lines[-1] == (
        "bpfloader load: error: unrecognized arguments: --pin-rot /tmp/x (did you mean --pin-root?)"
    )
    run = bpfloader_cli("map", "dump", "PIN", "--key-tpye=u32")
    assert run.stderr.splitlines()[-1] == (
        "bpfloader map dump: error: unrecognized arguments: --key-tpye=u32 "
        "(did you mean --key-type?)"
    )
    run = bpfloader_cli("stauts")
    assert run.returncode == 2 and run.stderr.splitlines()[-1].endswith("(did you mean status?)")
    run = bpfloader_cli("map", "lokup")
    assert run.stderr.splitlines()[-1].endswith("(did you mean lookup?)")
    # No close match: nothing is guessed.
    run = bpfloader_cli("status", "--frobnicate")
    assert run.stderr.splitlines()[-1] == (
        "bpfloader status: error: unrecognized arguments: --frobnicate"
    )


def test_options_only_where_they_mean_something(bpfloader_cli):
    """Issue 20: unload took --dir-mode and --build-type, which it has no use for."""
    for command, option in [
        ("unload", "--dir-mode"),
        ("unload", "--build-type"),
        ("status", "--build-type"),
        ("reload", "--dry-run"),
    ]:
        run = bpfloader_cli(command, option, "x")
        assert run.returncode == 2 and "unrecognized arguments" in run.stderr, (command, option)
    helped = bpfloader_cli("unload", "--help")
    assert "--dir-mode" not in helped.stdout and "--json" in helped.stdout
    assert "exit status:" in helped.stdout and "examples:" in helped.stdout


def test_help_says_exit_codes_and_examples(bpfloader_cli):
    top = bpfloader_cli("--help", check=True).stdout
    assert "\nexit status:\n  0  success" in top and "\nexamples:\n" in top
    assert "  3  reload: an object failed" in top
    load = bpfloader_cli("load", "--help", check=True).stdout
    assert "Load every object file of the source directory" in load
    assert "  3  --dry-run: an object that is not critical would fail" in load
    assert "\n  bpfloader load --dry-run\n" in load


@pytest.mark.kernel
def test_a_closed_pipe_ends_the_command_quietly(
    compile_bpf, source_dir, bpffs, state_dir, cache_dir
):
    """Issue 20: `bpfloader status | true` printed `bpfloader: : Broken pipe` and exited 2."""
    install(compile_bpf("myschedtp.c"), source_dir)
    argv = [sys.executable, "-m", "bpfloader"]
    first = ["load", *map(str, where(source_dir, bpffs)), "--state-dir", str(state_dir)]
    subprocess.run(
        [*argv, *with_cache_dir(first, cache_dir)],
        check=True,
        capture_output=True,
        cwd=REPO,
    )
    for command in (["status"], ["load", "--log-target", "console", "-q"]):
        read_end, write_end = os.pipe()
        os.close(read_end)  # the reader is gone before the first line is written
        line = [*command, *map(str, where(source_dir, bpffs)), "--state-dir", str(state_dir)]
        done = subprocess.run(
            [*argv, *with_cache_dir(line, cache_dir)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
        )
        os.close(write_end)
        assert (done.returncode, done.stderr) == (0, ""), command


def test_messages_of_setup_errors(tmp_path, bpfloader_cli):
    """Issue 20: a missing pin root was `not a bpf filesystem (mount it: ...)`; $CLANG not
    found was `bpfloader: clang-99: No such file or directory`."""
    missing = tmp_path / "x"
    run = bpfloader_cli("status", "--pin-root", missing)
    assert (run.returncode, run.stderr) == (
        2,
        f"bpfloader: pin root {missing} does not exist (make it and mount a bpffs there: "
        f"mkdir -p {missing} && mount -t bpf -o mode=0700 bpf {missing})\n",
    )
    source = REPO / "etc" / "bpf" / "myschedtp.c"
    done = subprocess.run(
        [sys.executable, "-m", "bpfloader", "build", str(source), "-o", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "CLANG": "clang-99"},
    )
    assert (done.returncode, done.stderr) == (
        2,
        "bpfloader: $CLANG=clang-99 was not found on PATH (unset CLANG to use clang, or the "
        "newest clang-N, on PATH)\n",
    )
    assert not list(tmp_path.glob("*.o"))
