"""Load events in a real systemd-journald, read back with journalctl (issue: the journal).

The module starts /lib/systemd/systemd-journald when no journald listens (none does on these
machines: systemd is not PID 1) and stops that process, by its pid, at the end. The loader
speaks journald's native protocol itself (bpfloader/journal_protocol.py): no test here has
a journal binding in the loop.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

import bpfloader
from bpfloader.journal import (
    VERIFIER_LOG_FIELD,
    Event,
    JournalReporter,
    MessageId,
    Priority,
)
from bpfloader.journal_protocol import MEMFD_NAME, SOCKET, serialize
from bpfloader.kernel.programs import LOG_FIRST_SIZE
from tests.conftest import REPO, pins_in
from tests.loader.test_load_imports import IMPORT_LINE

pytestmark = pytest.mark.kernel

JOURNALD = "/lib/systemd/systemd-journald"
CATALOG = REPO / "systemd" / "bpfloader.catalog"
PACKAGE = Path(bpfloader.__file__).parent


def journald_listens() -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(SOCKET)
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def journald() -> Iterator[None]:
    if journald_listens():
        yield
        return
    process = subprocess.Popen([JOURNALD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not journald_listens():
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


@dataclass
class Loaded:
    pid: int
    returncode: int
    stdout: str
    stderr: str


def load(
    source_dir: Path,
    bpffs: Path,
    target: str = "journal",
    *options: str,
    python: Sequence[str] = (sys.executable,),
) -> Loaded:
    """`bpfloader load` in a process of its own; `python`: the command that runs its module
    (under strace, say)."""
    process = subprocess.Popen(
        [
            *python,
            "-m",
            "bpfloader",
            "load",
            "--dir",
            str(source_dir),
            "--pin-root",
            str(bpffs),
            "--state-dir",
            str(bpffs.parent / "run-bpfloader"),
            "--cache-dir",
            str(bpffs.parent / "cache-bpfloader"),
            "--log-target",
            target,
            *options,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    stdout, stderr = process.communicate(timeout=120)
    return Loaded(process.pid, process.returncode, stdout, stderr)


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
    journald, compile_bpf, source_dir, bpffs, tmp_path
):
    """An entry larger than a datagram can be goes by memfd (strace shows the loader's calls);
    the others, each a datagram of its own."""
    obj = compile_bpf("journal_big_log.c")
    shutil.copy(obj, source_dir / "biglog.o")
    trace = tmp_path / "strace"
    strace = ("strace", "-f", "-qq", "-e", "trace=memfd_create,sendmsg", "-o", str(trace))
    run = load(source_dir, bpffs, python=(*strace, sys.executable))
    assert run.returncode == 0, run.stderr
    (entry,) = entries(f"BPF_OBJECT={source_dir / 'biglog.o'}", "PRIORITY=3", timeout=20)
    log = raw(entry[VERIFIER_LOG_FIELD])
    assert len(log) > 4 * LOG_FIRST_SIZE  # the buffer grew (more than once, or by log_true_size)
    assert log.startswith(b"0: R1=ctx() R10=fp0\n")  # whole: the head is there, not only the tail
    assert re.search(rb"processed \d+ insns", log.splitlines()[-1])
    assert without_timing(log) == without_timing(bpftool_verifier_log(obj, bpffs))

    # Far more than one datagram can carry from a socket with the default buffer.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as fresh:
        assert len(log) > 2 * fresh.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
    calls = trace.read_text()
    to_journal = [c for c in calls.splitlines() if f'sun_path="{SOCKET}"' in c]
    assert len(re.findall(rf'^\d+ +memfd_create\("{MEMFD_NAME}", .*', calls, re.M)) == 1
    too_large = [c for c in to_journal if c.endswith("= -1 EMSGSIZE (Message too long)")]
    assert len(too_large) == 1  # the log's entry, tried as a datagram first
    (passed,) = [c for c in to_journal if "cmsg_type=SCM_RIGHTS" in c]
    assert "msg_iovlen=0" in passed and passed.endswith(") = 0")  # the memfd, no payload
    datagrams = [c for c in to_journal if re.search(r"msg_iovlen=[1-9].*\) = [1-9]\d*$", c)]
    # Every entry of the run is accounted for: each other one was one datagram.
    (pid,) = {c.split()[0] for c in to_journal}  # the loader: strace's child, not run.pid
    assert len(entries(f"_PID={pid}", want=len(datagrams) + 1)) == len(datagrams) + 1
    assert len(datagrams) >= 3  # the run started, its pin root, the run finished


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


def test_an_entry_carries_every_field_and_the_code_that_made_it(journald):
    marker = f"fields-test-{os.getpid()}-{time.monotonic_ns()}"
    made_at = sys._getframe().f_lineno + 1
    event = Event(
        MessageId.PROGRAM_LOADED,
        Priority.INFO,
        f"loaded {marker}",
        # text with a newline goes length-prefixed; a name from the file system keeps its bytes
        {"BPF_OBJECT": marker, "BPF_PROG_ID": 42, "BPF_PIN": "/sys/fs/bpf/a\nb\udcff"},
    )
    JournalReporter().emit(event)
    (entry,) = entries(f"BPF_OBJECT={marker}")
    assert {k: raw(v) for k, v in entry.items() if not k.startswith("_")} == {
        "MESSAGE": f"loaded {marker}".encode(),
        "MESSAGE_ID": MessageId.PROGRAM_LOADED.value.encode(),
        "PRIORITY": b"6",
        "SYSLOG_IDENTIFIER": b"bpfloader",
        "CODE_FILE": __file__.encode(),
        "CODE_LINE": str(made_at).encode(),
        "CODE_FUNC": b"test_an_entry_carries_every_field_and_the_code_that_made_it",
        "BPF_OBJECT": marker.encode(),
        "BPF_PROG_ID": b"42",
        "BPF_PIN": b"/sys/fs/bpf/a\nb\xff",
    }


def function_at(source: str, line: int) -> str:
    """The qualified name (co_qualname) of the innermost function whose lines hold `line`."""
    found = "<module>"

    def visit(node: ast.AST, prefix: str) -> None:
        nonlocal found
        for child in ast.iter_child_nodes(node):
            inside = getattr(child, "lineno", 0) <= line <= (getattr(child, "end_lineno", 0) or 0)
            if isinstance(child, ast.ClassDef) and inside:
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) and inside:
                found = f"{prefix}{child.name}"
                visit(child, f"{found}.<locals>.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def test_each_entry_names_the_loader_code_that_produced_it(
    journald, compile_bpf, source_dir, bpffs
):
    """CODE_FILE, CODE_LINE and CODE_FUNC: where in bpfloader the event was made, a call of a
    loader/events.py builder; also for events of objects loaded side by side, which are held
    and emitted later from parallel.py."""
    for name in ("myschedtp.c", "journal_rejected.c"):
        shutil.copy(compile_bpf(name), source_dir)
    run = load(source_dir, bpffs, "journal", "--jobs", "2")
    assert run.returncode == 0, run.stderr
    made_in = set()
    for entry in entries(f"_PID={run.pid}", want=9):
        file, line = Path(str(entry["CODE_FILE"])), int(str(entry["CODE_LINE"]))
        assert file.is_relative_to(PACKAGE), file
        source = file.read_text()
        assert "events." in source.splitlines()[line - 1], (entry["MESSAGE"], file, line)
        assert entry["CODE_FUNC"] == function_at(source, line), (file, line)
        made_in.add(file.relative_to(PACKAGE).as_posix())
    # The list is real: the load's own modules made them, never the ones that make or send.
    assert {"loader/apply.py", "loader/run.py", "loader/pin_root.py"} <= made_in
    assert not made_in & {"journal.py", "loader/events.py", "loader/parallel.py"}


def test_the_journal_needs_no_binding(journald, compile_bpf, source_dir, bpffs):
    """The journal is reached by the loader's own code: no journal binding (systemd-python,
    which a plain `pip install` lacks) is imported, nor `socket` (its cost at boot)."""
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    run = load(source_dir, bpffs, python=(sys.executable, "-X", "importtime"))
    assert run.returncode == 0, run.stderr
    imported = set(IMPORT_LINE.findall(run.stderr))
    assert "bpfloader.journal_protocol" in imported  # the list is real
    assert {m for m in imported if m.split(".")[0] in ("systemd", "socket")} == set()
    assert entries(f"_PID={run.pid}", f"MESSAGE_ID={MessageId.PROGRAM_LOADED.value}")


def without_journald(
    source_dir: Path, tmp_path: Path, target: str, socket_file: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`bpfloader load` where no journald listens: in a mount namespace of its own, /run is an
    empty tmpfs, without journald's socket file (`missing`) or with one no process holds
    (`stale`, as a journald that died leaves it). Returns the run and the pins it made (in a
    private bpffs, gone with the namespace)."""
    pins = tmp_path / "bpffs-no-journald"
    pins.mkdir()
    stale = f"import socket; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).bind({SOCKET!r})"
    run = subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -t tmpfs none /run && mount -t bpf -o mode=0700 bpf "$1" || exit 99\n'
            'if [ "$5" = stale ]; then mkdir -p "${6%/*}" && "$2" -c "$7" || exit 99; fi\n'
            '"$2" -m bpfloader load --dir "$3" --pin-root "$1" --state-dir "$1-state" '
            '--cache-dir "$1-cache" --log-target "$4"\n'
            'status=$?; ls -A "$1" > "$1.pins"; exit $status',
            "sh",
            str(pins),
            sys.executable,
            str(source_dir),
            target,
            socket_file,
            SOCKET,
            stale,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert run.returncode != 99, run.stderr
    made = Path(f"{pins}.pins").read_text().split()
    return run, [p for p in made if p not in ("maps.debug", "progs.debug")]  # as pins_in()


@pytest.mark.parametrize(
    ("socket_file", "reason"),
    [("missing", "No such file or directory"), ("stale", "Connection refused")],
)
def test_journal_target_without_a_journald_fails_on_one_line(
    compile_bpf, source_dir, tmp_path, socket_file, reason
):
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    run, pins = without_journald(source_dir, tmp_path, "journal", socket_file)
    assert run.returncode == 2  # EXIT_SETUP: the run could not start, nothing was loaded
    assert run.stderr == (
        f"bpfloader: {SOCKET}: cannot reach systemd-journald: {reason} "
        "(--log-target console or auto writes events to stderr)\n"
    )
    assert run.stdout == ""
    assert pins == []


@pytest.mark.parametrize("socket_file", ["missing", "stale"])
def test_auto_target_without_a_journald_writes_to_the_console(
    compile_bpf, source_dir, tmp_path, socket_file
):
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    run, pins = without_journald(source_dir, tmp_path, "auto", socket_file)
    assert run.returncode == 0, run.stderr
    assert "bpfloader: info: loaded program tp_sched_switch (id " in run.stderr
    assert "objects: 1 loaded, 0 skipped, 0 failed" in run.stdout
    assert sorted(pins) == [
        "map_myschedtp_cpu_pid_map",
        "prog_myschedtp_tracepoint_sched_sched_switch",
    ]


def test_serialized_as_systemd_documents_it():
    """The native format (systemd.io/JOURNAL_NATIVE_PROTOCOL): `KEY=value` where the value is
    text without a newline, else the key, the length (64-bit little-endian), the value. The
    text fields come first (journald takes fields in any order)."""
    assert b"".join(
        serialize(
            [("PRIORITY", 3), ("BINARY_BLOB", b"xx\nx"), ("MESSAGE", "two\nlines"), ("E", "")]
        )
    ) == (
        b"PRIORITY=3\n"
        b"E=\n"
        b"BINARY_BLOB\n\x04\x00\x00\x00\x00\x00\x00\x00xx\nx\n"
        b"MESSAGE\n\x09\x00\x00\x00\x00\x00\x00\x00two\nlines\n"
    )


@pytest.mark.parametrize(
    "name", ["BPF-PIN", "bpf_pin", "_PID", "1ST", "B" * 65, "MESSAGE", "PRIORITY", "CODE_LINE"]
)
def test_a_field_the_journal_would_not_keep_is_refused_where_the_event_is_made(name):
    """journald drops a field whose name it does not accept, silently: refused at once instead
    (so is one the entry sets itself)."""
    with pytest.raises(ValueError, match=re.escape(f"would not keep as given: [{name!r}]")):
        Event(MessageId.RUN_STARTED, Priority.INFO, "x", {"BPF_OBJECT": "ok", name: 1})


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
            '--state-dir "$1-state" --cache-dir "$1-cache"',
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
            "--cache-dir",
            str(tmp_path / "cache"),
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
