"""Load events in a real systemd-journald, read back with journalctl (issue: the journal).

The module starts /lib/systemd/systemd-journald when no journald listens (none does on these
machines: systemd is not PID 1) and stops that process, by its pid, at the end.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfloader.journal import (
    VERIFIER_LOG_FIELD,
    Event,
    JournalReporter,
    MessageId,
    Priority,
    journal_available,
)
from bpfloader.kernel.programs import LOG_FIRST_SIZE
from tests.conftest import REPO, pins_in

pytestmark = pytest.mark.kernel

JOURNALD = "/lib/systemd/systemd-journald"
CATALOG = REPO / "systemd" / "bpfloader.catalog"


@pytest.fixture(scope="module")
def journald() -> Iterator[None]:
    if journal_available():
        yield
        return
    process = subprocess.Popen([JOURNALD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not journal_available():
            assert process.poll() is None, f"systemd-journald exited with {process.returncode}"
            assert time.monotonic() < deadline, "systemd-journald did not open its socket"
            time.sleep(0.05)
        yield
    finally:
        process.terminate()
        process.wait(timeout=10)


def entries(*matches: str, want: int = 1, timeout: float = 10.0) -> list[dict[str, object]]:
    """Journal entries of bpfloader matching `FIELD=value` terms; waits for `want` of them."""
    deadline = time.monotonic() + timeout
    while True:
        done = subprocess.run(
            [
                "journalctl",
                "-o",
                "json",
                "--all",
                "--no-pager",
                "SYSLOG_IDENTIFIER=bpfloader",
                *matches,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        found = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        if len(found) >= want or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def raw(value: object) -> bytes:
    """A journal field as bytes: journalctl -o json gives text as a string, binary as a list."""
    if isinstance(value, list):
        return bytes(value)
    assert isinstance(value, str), value
    return value.encode()


def bpftool_verifier_log(obj: Path, bpffs: Path) -> bytes:
    """The same program's verifier log as libbpf (through bpftool) gets it from the kernel."""
    done = subprocess.run(
        ["bpftool", "prog", "load", str(obj), str(bpffs / "by_bpftool")],
        capture_output=True,
        check=False,
    )
    assert done.returncode != 0
    match = re.search(rb"-- BEGIN PROG LOAD LOG --\n(.*)-- END PROG LOAD LOG --", done.stderr, re.S)
    assert match, done.stderr[-2000:]
    return match.group(1)


def without_timing(log: bytes) -> bytes:
    """The verifier's log minus its one line that differs between any two loads."""
    return re.sub(rb"verification time \d+ usec\n", b"", log)


def load(
    source_dir: Path, bpffs: Path, target: str = "journal"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "bpfloader",
            "load",
            "--dir",
            str(source_dir),
            "--pin-root",
            str(bpffs),
            "--state-dir",
            str(bpffs.parent / "run-bpfloader"),
            "--log-target",
            target,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def test_rejected_program_is_one_entry_with_the_whole_verifier_log(
    journald, compile_bpf, source_dir, bpffs
):
    obj = compile_bpf("journal_rejected.c")
    shutil.copy(obj, source_dir / "rejected.o")
    run = load(source_dir, bpffs)
    assert run.returncode == 0, run.stderr
    path = str(source_dir / "rejected.o")

    (entry,) = entries(f"BPF_OBJECT={path}", "PRIORITY=3")
    assert entry["MESSAGE_ID"] == MessageId.PROGRAM_REJECTED.value
    assert entry["BPF_PROGRAM"] == "rejected"
    assert entry["BPF_SECTION"] == "tracepoint/sched/sched_switch"
    assert entry["ERRNO"] == "13"  # EACCES
    log = raw(entry[VERIFIER_LOG_FIELD])
    assert len(log) > 4096
    assert int(str(entry["BPF_VERIFIER_LOG_SIZE"])) == len(log)
    assert "BPF_VERIFIER_LOG_TRUNCATED" not in entry
    # The message alone tells the cause: the file, the section, and the verifier's last words.
    message = str(entry["MESSAGE"])
    assert "\n" not in message
    assert message.startswith(
        f"{path}: tracepoint/sched/sched_switch: rejected by the verifier at "
    )
    assert "dereference of modified ctx ptr R1 off=32768 disallowed" in message
    # Byte for byte what the kernel wrote: the same log libbpf gets for the same program.
    assert without_timing(log) == without_timing(bpftool_verifier_log(obj, bpffs))
    assert pins_in(bpffs) == set()


def test_verifier_log_larger_than_the_first_buffer_arrives_whole(
    journald, compile_bpf, source_dir, bpffs
):
    obj = compile_bpf("journal_big_log.c")
    shutil.copy(obj, source_dir / "biglog.o")
    assert load(source_dir, bpffs).returncode == 0
    (entry,) = entries(f"BPF_OBJECT={source_dir / 'biglog.o'}", "PRIORITY=3", timeout=20)
    log = raw(entry[VERIFIER_LOG_FIELD])
    assert len(log) > 4 * LOG_FIRST_SIZE  # the buffer grew (more than once, or by log_true_size)
    assert log.startswith(b"0: R1=ctx() R10=fp0\n")  # whole: the head is there, not only the tail
    assert re.search(rb"processed \d+ insns", log.splitlines()[-1])
    assert without_timing(log) == without_timing(bpftool_verifier_log(obj, bpffs))


def test_load_events_carry_ids_pins_and_program_stats(journald, compile_bpf, source_dir, bpffs):
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    assert load(source_dir, bpffs).returncode == 0
    path = str(source_dir / "myschedtp.o")
    by_id: dict[str, list[dict[str, object]]] = {}
    for entry in entries(f"BPF_OBJECT={path}", want=6):
        by_id.setdefault(str(entry["MESSAGE_ID"]), []).append(entry)

    (loaded,) = by_id[MessageId.PROGRAM_LOADED.value]
    assert loaded["PRIORITY"] == "6"
    assert loaded["BPF_PROGRAM"] == "tp_sched_switch"
    assert loaded["BPF_SECTION"] == "tracepoint/sched/sched_switch"
    prog_pin = bpffs / "prog_myschedtp_tracepoint_sched_sched_switch"
    assert loaded["BPF_PIN"] == str(prog_pin)
    assert int(str(loaded["BPF_VERIFIED_INSNS"])) > 0
    assert int(str(loaded["BPF_JIT_SIZE"])) > 0
    assert int(str(loaded["BPF_LOAD_USEC"])) > 0
    shown = json.loads(
        subprocess.run(
            ["bpftool", "-j", "prog", "show", "id", str(loaded["BPF_PROG_ID"])],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert shown["name"] == "tp_sched_switch"

    (created,) = by_id[MessageId.MAP_CREATED.value]
    assert created["BPF_MAP"] == "cpu_pid_map"
    map_shown = json.loads(
        subprocess.run(
            ["bpftool", "-j", "map", "show", "pinned", str(bpffs / "map_myschedtp_cpu_pid_map")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    assert int(str(created["BPF_MAP_ID"])) == map_shown["id"]

    pins = {str(e["BPF_PIN"]): e for e in by_id[MessageId.PIN_MADE.value]}
    assert set(pins) == {str(prog_pin), str(bpffs / "map_myschedtp_cpu_pid_map")}
    assert pins[str(prog_pin)]["BPF_PIN_MODE"] == "0440"
    assert pins[str(prog_pin)]["BPF_PIN_GID"] == "4"
    assert len(by_id[MessageId.OBJECT_LOADED.value]) == 1


def test_the_journal_says_which_variant_was_pinned_and_why_the_others_were_not(
    journald, compile_bpf, source_dir, bpffs
):
    shutil.copy(compile_bpf("k_variant_rules.c"), source_dir / "variants.o")
    assert load(source_dir, bpffs).returncode == 0
    path = str(source_dir / "variants.o")
    (loaded,) = entries(
        f"BPF_OBJECT={path}",
        f"MESSAGE_ID={MessageId.PROGRAM_LOADED.value}",
        "BPF_PROGRAM=order_new",
    )
    assert loaded["BPF_SECTION"] == "skfilter/order$new"
    assert str(loaded["MESSAGE"]).startswith("loaded program order_new (id ")
    (skip,) = entries(
        f"BPF_OBJECT={path}",
        f"MESSAGE_ID={MessageId.PROGRAM_SKIPPED.value}",
        "BPF_PROGRAM=order_old",
    )
    assert skip["MESSAGE"] == (
        f"{path}: program order_old skipped: variant 'skfilter/order$old': "
        "'skfilter/order$new' was pinned first"
    )
    (gated,) = entries(
        f"BPF_OBJECT={path}",
        f"MESSAGE_ID={MessageId.PROGRAM_SKIPPED.value}",
        "BPF_PROGRAM=middle_c",
    )
    assert "needs kernel >= 200.0.0 and < inf" in str(gated["MESSAGE"])


def test_critical_failure_is_crit(journald, compile_bpf, source_dir, bpffs):
    broken = compile_bpf(
        '#include <bpf_helpers.h>\nCRITICAL("the network stack needs it");\n'
        'DEFINE_BPF_PROG("tracepoint/sched/sched_switch", 0, 0, f)(unsigned long long *c)'
        '{ return c[4096]; }\nLICENSE("GPL");\n',
        "critical.o",
    )
    shutil.copy(broken, source_dir)
    run = load(source_dir, bpffs)
    assert run.returncode == 1
    (entry,) = entries(f"BPF_OBJECT={source_dir / 'critical.o'}", "PRIORITY=2")
    assert entry["MESSAGE_ID"] == MessageId.PROGRAM_REJECTED.value
    assert entry["BPF_CRITICAL"] == "1"
    assert str(entry["MESSAGE"]).endswith("(critical object)")


def test_catalog_explains_every_message_id(tmp_path):
    text = CATALOG.read_text()
    in_catalog = re.findall(r"^-- ([0-9a-f]{32})$", text, re.M)
    assert sorted(in_catalog) == sorted(m.value for m in MessageId)
    # journalctl itself compiles and lists the catalog (in a private root, not the host's).
    catalog_dir = tmp_path / "usr/lib/systemd/catalog"
    catalog_dir.mkdir(parents=True)
    (tmp_path / "var/lib/systemd/catalog").mkdir(parents=True)
    shutil.copy(CATALOG, catalog_dir)
    subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"], check=True)
    listed = subprocess.run(
        ["journalctl", f"--root={tmp_path}", "--list-catalog"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for message_id in MessageId:
        assert re.search(rf"^{message_id.value} bpfloader: \S", listed, re.M), message_id


def test_every_message_id_in_the_code_is_in_the_catalog():
    used = set()
    for source in (REPO / "bpfloader").rglob("*.py"):
        used |= set(re.findall(r"MessageId\.([A-Z_]+)", source.read_text()))
    defined = {m.name for m in MessageId}
    assert used <= defined
    text = CATALOG.read_text()
    for name in used:
        assert f"-- {MessageId[name].value}" in text, name


def test_weird_section_name_arrives_intact_and_readable(journald, compile_bpf, source_dir, bpffs):
    # Without BTF, an Android-format object: its pin names refuse the newline (a libbpf-style
    # one would have it become '_' and load).
    obj = compile_bpf(
        "#define SEC(n) __attribute__((section(n), used))\n"
        'SEC("tracepoint/sched/weirdXnameY") int f(void *c) { return 0; }\n'
        'char _license[] SEC("license") = "GPL";\n',
        "weird.o",
        btf=False,
    )
    data = obj.read_bytes().replace(b"weirdXnameY", b"weird\nname\xff")
    (source_dir / "weird.o").write_bytes(data)
    run = load(source_dir, bpffs)
    assert run.returncode == 0
    (entry,) = entries(f"BPF_OBJECT={source_dir / 'weird.o'}", "PRIORITY=3")
    assert entry["MESSAGE_ID"] == MessageId.OBJECT_FAILED.value
    assert raw(entry["BPF_SECTION"]) == b"tracepoint/sched/weird\nname\xff"
    message = str(entry["MESSAGE"])
    assert "tracepoint/sched/weird\\x0aname\\xff" in message  # readable, on one line
    assert "\n" not in message


def test_fields_with_nul_newline_and_invalid_utf8_arrive_intact(journald, tmp_path):
    value = b"a\x00b\nc\xff\xfe" * 100
    marker = f"nul-test-{os.getpid()}-{time.monotonic_ns()}"
    JournalReporter().emit(
        Event(
            MessageId.OBJECT_FAILED,
            Priority.ERR,
            f"weird bytes {marker}",
            {"BPF_OBJECT": marker, "BPF_SECTION": value},
        )
    )
    (entry,) = entries(f"BPF_OBJECT={marker}")
    assert raw(entry["BPF_SECTION"]) == value


def normalized(line: str, pin_root: Path) -> str:
    """An event line with what differs between two equal runs (ids, timings) blanked."""
    line = line.replace(str(pin_root), "PINS")
    line = re.sub(r"\(id \d+\)", "(id N)", line)
    return re.sub(r"in \d+\.\d+ ms", "in T ms", line)


def test_console_fallback_without_a_journal_socket(
    journald, compile_bpf, source_dir, bpffs, tmp_path
):
    """With no journal socket (hidden in a private mount namespace), `auto` writes to stderr
    the same events that it writes to the journal where one listens."""
    for name in ("myschedtp.c", "journal_rejected.c"):
        shutil.copy(compile_bpf(name), source_dir)
    second = tmp_path / "bpffs2"
    second.mkdir()
    hidden = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs none /run/systemd/journal && mount -t bpf -o mode=0700 bpf "$1" && '
            'exec "$2" -m bpfloader load --dir "$3" --pin-root "$1" --log-target auto '
            '--state-dir "$1-state"',
            "sh",
            str(second),
            sys.executable,
            str(source_dir),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert hidden.returncode == 0, hidden.stderr
    console = [
        normalized(line, second)
        for line in hidden.stderr.splitlines()
        if line.startswith("bpfloader: ")
    ]

    with_journal = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bpfloader",
            "load",
            "--dir",
            str(source_dir),
            "--pin-root",
            str(bpffs),
            "--state-dir",
            str(tmp_path / "state"),
            "--log-target",
            "auto",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    _, stderr = with_journal.communicate(timeout=120)
    assert with_journal.returncode == 0
    assert stderr == ""  # a journal listens: nothing on stderr
    levels = {"2": "crit", "3": "err", "4": "warning", "5": "notice", "6": "info"}
    journal = [
        normalized(f"bpfloader: {levels[str(e['PRIORITY'])]}: {e['MESSAGE']}", bpffs)
        for e in entries(f"_PID={with_journal.pid}", want=len(console))
    ]
    assert len(console) == 9  # run, pin root, rejection, map, pin, program, pin, object, run
    assert sorted(console) == sorted(journal)
    # The rejected program's verifier log follows its line on the console, indented.
    assert any(line.startswith("  | ") for line in hidden.stderr.splitlines())
