#!/usr/bin/python3
"""The boot test's checker, run in the guest by bpfloader-boot-check.service (as root) once
bpfloader.service and the consumer service have run.

Every check writes one line to the second serial port (/dev/ttyS1), which the host test reads,
and to stdout (the console and the journal):

    PASS <check>: <what was seen>
    FAIL <check>: <what was wrong>
    INFO <name>: <a measurement>

then `DONE <variant>`. The unit powers the guest off when this exits. The variant comes from the
kernel command line: `bpfloader_boot_test=critical` boots with a failing critical object (added
by bpfloader-boot-critical.service), `bpfloader_boot_test=oldkernel` is the same image booted
with Debian 11's 5.10 kernel, where the old-kernel policy has something to do.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from bpfloader.client import BpfMap, Program
from bpfloader.errors import KernelError

PIN_ROOT = "/sys/fs/bpf"
DATA = "/usr/share/bpfloader-boot-test"
ADM, NOBODY = 4, 65534
SYSCTL = "/proc/sys/kernel/unprivileged_bpf_disabled"
PROGRAM_REJECTED = "7d9afd78562c46faae32983aba52df7a"  # bpfloader.journal.MessageId
UNPRIVILEGED_BPF = "48db9020749845369588969a8b4cf100"
OBJECT_LOADED = "2b14cc99de9b447b9b04e33bf7d46db3"
UNITS = [
    "bpfloader.service",
    "bpfloader-bpffs.service",
    "bpfloader-reload.service",
    "bpfloader.path",
]
MAX_EXPOSURE = 5.0  # `systemd-analyze security`: the unit must stay at "MEDIUM" or better

# (pin, uid, gid, mode) that the examples, built on the host with our header, declare.
PINS = [
    ("map_myschedtp_cpu_pid_map", 0, ADM, 0o640),
    ("prog_myschedtp_tracepoint_sched_sched_switch", 0, ADM, 0o440),
    ("prog_execsnoop_tracepoint_syscalls_sys_enter_execve", 0, 0, 0o440),
    ("map_boot_kprobe_getpid_calls", 0, ADM, 0o640),
    ("prog_boot_kprobe_kprobe___x64_sys_getpid", 0, ADM, 0o440),
]
REJECTED = "/etc/bpf/bad_verifier.o"  # its program reads past a map value
REJECTED_PINS = ["map_bad_verifier_overread_map", "prog_bad_verifier_tracepoint_sched_sched_switch"]
VERIFIER_SAYS = "invalid access to map value"
ADDED_PINS = [  # good_last.c, added after boot as reloaded.o, then as watched.o
    ("map_{}_switch_count", 0, 0, 0o600),
    ("prog_{}_tracepoint_sched_sched_switch", 0, 0, 0o440),
]
CRITICAL = "/etc/bpf/bad_critical.o"


class Failed(Exception):
    pass


def run(*cmd: str, ok: tuple[int, ...] = (0,), timeout: float = 120) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if done.returncode not in ok:
        raise Failed(f"`{' '.join(cmd)}` exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return done.stdout + done.stderr


def unit(name: str, *props: str) -> dict[str, str]:
    out = run("systemctl", "show", name, "-p", ",".join(props))
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def expect_unit(name: str, **want: str) -> None:
    got = unit(name, *want)
    wrong = {k: got.get(k) for k, v in want.items() if got.get(k) != v}
    if wrong:
        raise Failed(f"{name}: expected {want}, got {wrong}")


def journal(*matches: str) -> list[dict[str, object]]:
    out = run("journalctl", "-b", "--all", "-o", "json", "--no-pager", *matches)
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def text(value: object) -> str:
    """A journal field as JSON gives it: a string, or a list of bytes when not plain text."""
    if isinstance(value, list):
        return bytes(value).decode(errors="replace")
    return str(value or "")


def pin_problems(pins: list[tuple[str, int, int, int]]) -> list[str]:
    problems = []
    for name, uid, gid, mode in pins:
        path = os.path.join(PIN_ROOT, name)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            problems.append(f"{name} missing")
            continue
        seen = (st.st_uid, st.st_gid, st.st_mode & 0o7777)
        if seen != (uid, gid, mode):
            problems.append(
                f"{name} is {seen[0]}:{seen[1]} {seen[2]:04o}, not {uid}:{gid} {mode:04o}"
            )
    return problems


def as_user(uid: int, groups: list[int], action: Callable[[], str]) -> str:
    """Run `action` in a child process switched to uid (and gid) NOBODY-style with `groups`;
    its result or its error, as text."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            os.setgroups(groups)
            os.setgid(uid)
            os.setuid(uid)
            result = action()
        except BaseException as e:
            result = f"error: {e}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        result = f.read()
    os.waitpid(pid, 0)
    return result


def open_map_readonly() -> str:
    try:
        with BpfMap.open(
            f"{PIN_ROOT}/map_myschedtp_cpu_pid_map", key="i", value="I", readonly=True
        ):
            return "opened"
    except KernelError as e:
        return errno.errorcode.get(e.errno, str(e.errno))


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def add_object(source: str, name: str) -> None:
    """Put an object into /etc/bpf atomically (written beside it, renamed in), as the README says
    to: a watcher never sees half a file."""
    staged = f"/etc/.{name}.new"
    shutil.copyfile(source, staged)
    os.rename(staged, f"/etc/bpf/{name}")


# -- the main variant ----------------------------------------------------------------------


def check_loader_unit() -> str:
    try:
        expect_unit(
            "bpfloader.service",
            ActiveState="active",
            SubState="exited",
            Result="success",
            ExecMainStatus="0",
        )
    except Failed as e:
        raise Failed(f"{e}; its journal: {unit_journal()}") from None
    return "bpfloader.service active (exited), status 0"


def unit_journal(name: str = "bpfloader.service", lines: int = 15) -> str:
    out = run("journalctl", "-b", "-u", name, "-o", "cat", "--no-pager")
    return " | ".join(out.strip().splitlines()[-lines:])


def loader_run(verb: str) -> None:
    """`systemctl VERB bpfloader.service`; on failure, say what the loader said."""
    try:
        run("systemctl", verb, "bpfloader.service")
    except Failed as e:
        raise Failed(f"{e}; its journal: {unit_journal()}") from None


def bpffs_problem() -> str | None:
    kind = run("stat", "-f", "-c", "%T", PIN_ROOT).strip()
    mode = os.stat(PIN_ROOT).st_mode & 0o777
    if kind != "bpf_fs" or mode & 0o011 != 0o011:
        return f"{PIN_ROOT} is {kind} mode {mode:04o}: want a bpffs traversable by others"
    return None


def check_bpffs() -> str:
    problem = bpffs_problem()
    if problem:
        raise Failed(problem)
    return f"{PIN_ROOT} is a bpffs, mode {os.stat(PIN_ROOT).st_mode & 0o777:04o}"


def check_ordering() -> str:
    def stamp(name: str, prop: str) -> int:
        return int(unit(name, prop)[prop])

    started = stamp("bpfloader.service", "ExecMainStartTimestampMonotonic")
    done = stamp("bpfloader.service", "ActiveEnterTimestampMonotonic")
    sysinit = stamp("sysinit.target", "ActiveEnterTimestampMonotonic")
    reader = stamp("bpfloader-boot-reader.service", "ExecMainStartTimestampMonotonic")
    if not 0 < started <= done <= sysinit <= reader:
        raise Failed(f"loader {started}-{done}, sysinit.target {sysinit}, reader {reader} (us)")
    return (
        f"loader ran {started / 1e6:.2f}-{done / 1e6:.2f} s, before sysinit.target "
        f"({sysinit / 1e6:.2f} s) and the consumer ({reader / 1e6:.2f} s)"
    )


def check_pins() -> str:
    problems = pin_problems(PINS)
    problems += [f"{n} exists" for n in REJECTED_PINS if os.path.lexists(f"{PIN_ROOT}/{n}")]
    if problems:
        raise Failed("; ".join(problems))
    return f"{len(PINS)} pins with their owner, group and mode; none of the rejected object's"


def check_consumer() -> str:
    expect_unit("bpfloader-boot-reader.service", Result="success", ExecMainStatus="0")
    out = run("journalctl", "-b", "-u", "bpfloader-boot-reader.service", "-o", "cat")
    line = next((x for x in out.splitlines() if x.startswith("reader: OK")), None)
    if line is None:
        raise Failed(f"no OK line from the reader: {out.strip()[-300:]}")
    return line


def check_old_kernel_policy() -> str:
    """The loader's opt-in did what this kernel needs: measured here by setting the sysctl to 2
    and asking whether a non-root member of the map's group may still open the map. Where it
    is refused (kernels before 5.19) the loader must have lowered the sysctl to 0; where it is
    not, the loader must have left it alone."""
    value = Path(SYSCTL).read_text().strip()
    events = journal("SYSLOG_IDENTIFIER=bpfloader", f"MESSAGE_ID={UNPRIVILEGED_BPF}")
    if not events:
        raise Failed(f"{SYSCTL} is {value}, and no policy event in the journal")
    said = text(events[0].get("MESSAGE"))
    try:
        Path(SYSCTL).write_text("2\n")
        at_2 = as_user(NOBODY, [ADM], open_map_readonly)
    finally:
        Path(SYSCTL).write_text(f"{value}\n")
    now = as_user(NOBODY, [ADM], open_map_readonly)
    expected = ("0", "EPERM") if "lowered" in said else ("2", "opened")
    if (value, at_2, now) != (*expected, "opened"):
        raise Failed(
            f"sysctl {value}; a member of adm at 2: {at_2}, now: {now}; the loader said: {said}"
        )
    needed = "needed: at 2 a member of adm gets EPERM" if at_2 == "EPERM" else "not needed"
    return f"{needed}; sysctl {value}; the member opens the map; the loader said: {said!r}"


MAP_CREATE_PROBE = (
    "from bpfloader.kernel.maps import create_map\n"
    "from bpfloader.errors import KernelError\n"
    "try:\n    create_map('probe', 2, 4, 8, 1024, 0)\nexcept KernelError as e:\n"
    "    print(e.reason)\nelse:\n    print('created')\n"
)


@contextlib.contextmanager
def private_load(objects: list[str], *prefix: str) -> Iterator[tuple[Path, str]]:
    """`bpfloader load` of `objects` into a bpffs of the check's own (its state beside), run
    after `prefix` (prlimit ...): the pins' directory, unmounted after the block, and what the
    loader said."""
    work = Path(tempfile.mkdtemp(prefix="private-load-"))
    (work / "objects").mkdir()
    pins = work / "pins"
    pins.mkdir()
    for obj in objects:
        shutil.copy(obj, work / "objects")
    run("mount", "-t", "bpf", "bpf", str(pins))
    try:
        where = ["--dir", str(work / "objects"), "--pin-root", str(pins)]
        where += ["--state-dir", str(work / "state"), "--log-target", "console"]
        yield pins, run(*prefix, "bpfloader", "load", *where)
    finally:
        run("umount", str(pins))


def check_memlock() -> str:
    """RLIMIT_MEMLOCK at 0: kernels before 5.11 charge maps to it, so there a plain map create
    must fail with EPERM and the loader must raise the limit and load all the same; on later
    kernels both work and the loader leaves the limit alone."""
    kernel = tuple(int(x) for x in re.findall(r"\d+", os.uname().release)[:2])
    probe = run("prlimit", "--memlock=0:0", "--", sys.executable, "-c", MAP_CREATE_PROBE).strip()
    with private_load(["/etc/bpf/myschedtp.o"], "prlimit", "--memlock=0:0", "--") as (pins, said):
        pinned = sorted(os.listdir(pins))
    raised = "raised it from 0 bytes" in said
    if kernel < (5, 11):
        want_probe, want_raised = "BPF_MAP_CREATE failed: EPERM", True
    else:
        want_probe, want_raised = "created", False
    if not probe.startswith(want_probe) or raised != want_raised:
        raise Failed(f"memlock 0: a map create said {probe!r}; the loader said {said[-400:]!r}")
    if "map_myschedtp_cpu_pid_map" not in pinned:
        raise Failed(f"memlock 0: the loader pinned {pinned}; it said {said[-400:]!r}")
    needed = "needed" if want_raised else "not needed"
    return f"raising the limit {needed} on {os.uname().release} (a map create: {probe}); loaded"


KSYMS_OBJECT = "/usr/share/bpfloader-boot-test/ksyms/ksyms_module.o"
ENOENT = 2


def check_ksyms() -> str:
    """`__ksym` externs on this kernel, loaded by `bpfloader load` into a bpffs of the check's
    own and run: a kfunc of a module (nf_conntrack's, named through the program's fd_array) and
    a typed per-CPU variable of vmlinux (tests/bpf/ksyms/ksyms_module.c)."""
    run("modprobe", "nf_conntrack")
    if not os.path.exists("/sys/kernel/btf/nf_conntrack"):
        raise Failed("nf_conntrack is loaded but has no BTF (/sys/kernel/btf/nf_conntrack)")
    with private_load([KSYMS_OBJECT]) as (pins, said):
        packet = bytes(14) + bytes(50)
        try:
            with Program.open(f"{pins}/prog_ksyms_module_tc_ct_lookup") as prog:
                looked_up = prog.test_run(packet).retval
            with Program.open(f"{pins}/prog_ksyms_module_tc_this_cpu") as prog:
                cpu = prog.test_run(packet).retval - 100
        except OSError as e:
            raise Failed(f"{e}; the loader said {said[-600:]!r}") from None
    if looked_up != ENOENT:
        raise Failed(f"bpf_skb_ct_lookup of an all-zero tuple returned {looked_up}, want ENOENT")
    if not 0 <= cpu < os.cpu_count():
        raise Failed(f"runqueues of this CPU says cpu {cpu}")
    return (
        "nf_conntrack's bpf_skb_ct_lookup (module BTF through fd_array) said ENOENT; "
        f"runqueues (a typed per-CPU variable) read on cpu {cpu}"
    )


ATTACHED_COUNTS = "/sys/fs/bpf/map_boot_attached_attached_counts"
DECLARED_LINKS = ["link_boot_attached_count_switches", "link_boot_attached_count_system_egress"]
PROGRAM_ATTACHED = "0bcdb32ca7a04582a1d71236ca500208"  # bpfloader.journal.MessageId


def attached_counts() -> list[int]:
    with BpfMap.open(ATTACHED_COUNTS, key="I", value="Q", readonly=True) as counts:
        return [counts[i] for i in range(3)]


def loopback_datagrams(count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _ in range(count):
            sock.sendto(b"x", ("127.0.0.1", 9))


def check_declared_attachments() -> str:
    """boot_attached.policy's attachments, made by the loader at boot with no other process
    involved: the tracepoint counts switches, the cgroup program system.slice's datagrams (this
    checker's among them), and each link is pinned and logged."""
    problems = pin_problems([(name, 0, ADM, 0o440) for name in DECLARED_LINKS])
    if problems:
        raise Failed("; ".join(problems) + f"; the loader said: {unit_journal()}")
    logged = journal("SYSLOG_IDENTIFIER=bpfloader", f"MESSAGE_ID={PROGRAM_ATTACHED}")
    if len(logged) < len(DECLARED_LINKS):
        raise Failed(f"{len(logged)} attachments logged, want {len(DECLARED_LINKS)}")
    before = attached_counts()
    loopback_datagrams(20)
    if not wait_for(lambda: attached_counts()[0] > before[0], 5):
        raise Failed(f"the tracepoint counted no switch ({before[0]} all along)")
    sent = attached_counts()[1] - before[1]
    if sent < 20:
        raise Failed(f"system.slice's egress counted {sent} of this checker's 20 datagrams")
    return (
        f"{before[0]} switches counted since boot; system.slice's egress counted {sent} "
        f"datagrams; {len(logged)} attachments in the journal"
    )


def check_bpfprogram_unit() -> str:
    """A unit attaching a pinned program itself (systemd's BPFProgram=egress:PIN): its
    datagrams counted by the program the loader pinned before it started."""
    expect_unit("bpfloader-boot-bpfprogram.service", Result="success", ActiveState="active")
    counted = attached_counts()[2]
    if counted < 10:
        raise Failed(f"the unit's program counted {counted} of its 10 datagrams")
    return f"BPFProgram=egress:PIN: the unit's {counted} datagrams counted"


def check_verifier_log() -> str:
    entries = journal("SYSLOG_IDENTIFIER=bpfloader", f"BPF_OBJECT={REJECTED}")
    for entry in entries:
        log = text(entry.get("BPF_VERIFIER_LOG"))
        if entry.get("MESSAGE_ID") == PROGRAM_REJECTED and VERIFIER_SAYS in log:
            return (
                f"{REJECTED}: priority {entry.get('PRIORITY')}, {len(log)}-byte verifier log "
                f"in this boot's journal: {text(entry.get('MESSAGE'))[:120]!r}"
            )
    raise Failed(f"no rejection entry with {VERIFIER_SAYS!r} among {len(entries)} for {REJECTED}")


def check_only_rejected_failed() -> str:
    """Every object in /etc/bpf at boot (all the examples among them) loaded, but the rejected
    one: each has its `loaded` event in this boot's journal, and that one has none."""
    loaded = {
        text(e.get("BPF_OBJECT"))
        for e in journal("SYSLOG_IDENTIFIER=bpfloader", f"MESSAGE_ID={OBJECT_LOADED}")
    }
    present = {str(p) for p in Path("/etc/bpf").glob("*.o")}
    if loaded != present - {REJECTED}:
        raise Failed(f"loaded: {sorted(loaded)}; in /etc/bpf: {sorted(present)}")
    return f"{len(loaded)} objects loaded: {' '.join(sorted(os.path.basename(p) for p in loaded))}"


def check_kprobe() -> str:
    """Attach the pinned kprobe program to __x64_sys_getpid, call getpid, count the calls."""
    prog_pin = f"{PIN_ROOT}/prog_boot_kprobe_kprobe___x64_sys_getpid"
    with (
        Program.open(prog_pin) as prog,
        BpfMap.open(f"{PIN_ROOT}/map_boot_kprobe_getpid_calls", key="i", value="Q") as counts,
    ):
        before = counts[0]
        if hasattr(prog, "attach_kprobe"):
            how = "bpfloader.client Program.attach_kprobe"
            with prog.attach_kprobe("__x64_sys_getpid"):
                for _ in range(100):
                    os.getpid()
        else:
            how = "perf_event_open(kprobe PMU) + PERF_EVENT_IOC_SET_BPF in the checker"
            with KprobeEvent("__x64_sys_getpid", prog.fd):
                for _ in range(100):
                    os.getpid()
        calls = counts[0] - before
    if calls < 100:
        raise Failed(f"the program counted {calls} getpid calls, want >= 100")
    return f"attached through {how}: counted {calls} getpid calls"


class KprobeEvent:
    """The minimal kprobe attachment (used where bpfloader.client has none): a perf event of the
    kprobe PMU on `function`, running the program `prog_fd`."""

    PERF_EVENT_IOC_ENABLE, PERF_EVENT_IOC_SET_BPF = 0x2400, 0x40042408

    def __init__(self, function: str, prog_fd: int):
        libc = ctypes.CDLL(None, use_errno=True)
        pmu = int(Path("/sys/bus/event_source/devices/kprobe/type").read_text())
        self.name = ctypes.create_string_buffer(function.encode())
        attr = (ctypes.c_uint64 * 16)()  # struct perf_event_attr, 128 bytes
        attr[0] = pmu | (128 << 32)  # type, size
        attr[2] = 1  # sample_period
        attr[7] = ctypes.addressof(self.name)  # config1: the function's name
        self.fd = libc.syscall(298, attr, -1, 0, -1, 8)  # perf_event_open(pid -1, cpu 0), CLOEXEC
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "perf_event_open")
        for request, arg in (
            (self.PERF_EVENT_IOC_SET_BPF, prog_fd),
            (self.PERF_EVENT_IOC_ENABLE, 0),
        ):
            if libc.ioctl(self.fd, request, arg) != 0:
                raise OSError(ctypes.get_errno(), f"ioctl {request:#x}")

    def __enter__(self) -> KprobeEvent:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


def check_reload() -> str:
    """`systemctl reload bpfloader` after adding an object (and taking the rejected one away:
    a reload that still meets a failing object reports it, exit 3) pins it, and leaves the rest
    alone."""
    kept = os.stat(f"{PIN_ROOT}/map_myschedtp_cpu_pid_map").st_ino
    os.unlink(REJECTED)
    add_object(f"{DATA}/added/good_last.o", "reloaded.o")
    loader_run("reload")
    expect_unit("bpfloader.service", ActiveState="active", Result="success")
    problems = pin_problems([(n.format("reloaded"), *rest) for n, *rest in ADDED_PINS])
    if os.stat(f"{PIN_ROOT}/map_myschedtp_cpu_pid_map").st_ino != kept:
        problems.append("myschedtp's map pin was replaced")
    if problems:
        raise Failed("; ".join(problems))
    return "reloaded.o pinned by `systemctl reload bpfloader`; the other pins untouched"


def check_path_unit() -> str:
    """bpfloader.path is off by default; started, it reloads when an object lands in /etc/bpf."""
    enabled = run("systemctl", "is-enabled", "bpfloader.path", ok=(0, 1)).strip()
    if enabled != "disabled":
        raise Failed(f"bpfloader.path is {enabled!r}, want 'disabled' by default")
    run("systemctl", "start", "bpfloader.path")
    add_object(f"{DATA}/added/good_last.o", "watched.o")
    pins = [(n.format("watched"), *rest) for n, *rest in ADDED_PINS]
    if not wait_for(lambda: not pin_problems(pins), 60):
        raise Failed("; ".join(pin_problems(pins)) + " 60 s after adding watched.o")
    return "disabled by default; once started, adding watched.o to /etc/bpf got it pinned"


def check_remount() -> str:
    """With /sys/fs/bpf unmounted, a restart of the unit mounts a bpffs again and pins into it."""
    run("umount", PIN_ROOT)
    if run("stat", "-f", "-c", "%T", PIN_ROOT).strip() == "bpf_fs":
        raise Failed(f"{PIN_ROOT} still a bpffs after umount")
    try:
        loader_run("restart")
    except Failed as e:
        mounts = run("findmnt", "-n", PIN_ROOT, ok=(0, 1)).strip() or "nothing mounted"
        pre = unit("bpfloader.service", "ExecStartPre")
        raise Failed(f"{e}; now {PIN_ROOT}: {mounts}; {pre}") from None
    problems = [p for p in [bpffs_problem(), *pin_problems(PINS)] if p]
    if problems:
        mounts = run("findmnt", "-n", PIN_ROOT, ok=(0, 1)).strip() or "nothing mounted"
        raise Failed("; ".join(problems) + f"; {PIN_ROOT}: {mounts}")
    return "after umount /sys/fs/bpf, `systemctl restart bpfloader` mounted it and pinned again"


def check_catalog() -> str:
    out = run("journalctl", "--list-catalog", "--no-pager")
    ours = [line for line in out.splitlines() if "bpfloader" in line.lower()]
    if not any(line.startswith(PROGRAM_REJECTED) for line in ours):
        raise Failed(f"the catalog has {len(ours)} bpfloader entries, none for rejections")
    return f"{len(ours)} bpfloader entries in the journal catalog"


def check_package() -> str:
    """What booted is the Debian package: the unit's command is the package's, and every file the
    package installed is as it shipped (an administrator's /etc/default/bpfloader aside)."""
    status = run("dpkg-query", "-W", "-f", "${Status} ${Version}", "bpfloader").strip()
    if not status.startswith("install ok installed "):
        raise Failed(f"dpkg says bpfloader is {status!r}")
    command = unit("bpfloader.service", "ExecStart")["ExecStart"]
    if "path=/usr/bin/bpfloader " not in command:
        raise Failed(f"bpfloader.service runs {command}")
    owner = run("dpkg-query", "-S", "/usr/bin/bpfloader").split(":")[0]
    if owner != "bpfloader":
        raise Failed(f"/usr/bin/bpfloader belongs to {owner!r}")
    changed = [
        line
        for line in run("dpkg", "--verify", "bpfloader", ok=(0, 1)).splitlines()
        if line.split()[-1] != "/etc/default/bpfloader"
    ]
    if changed:
        raise Failed(f"dpkg --verify: {' | '.join(changed)}")
    version = status.rsplit(" ", 1)[1]
    return f"bpfloader {version} from its .deb runs /usr/bin/bpfloader; dpkg --verify clean"


def check_units_verify() -> str:
    paths = [unit(u, "FragmentPath")["FragmentPath"] for u in UNITS]
    out = run("systemd-analyze", "verify", *paths).strip()
    ours = [line for line in out.splitlines() if "bpf" in line]
    if ours:
        raise Failed(" | ".join(ours))
    return f"systemd-analyze verify: {', '.join(UNITS)} clean"


def check_security() -> str:
    out = run("systemd-analyze", "security", "--no-pager", "bpfloader.service", ok=(0, 1))
    match = re.search(r"Overall exposure level for bpfloader.service: ([\d.]+) (\w+)", out)
    if not match:
        raise Failed(f"no exposure level in: {out.strip()[-300:]}")
    score = float(match.group(1))
    report("INFO", "exposure", f"{match.group(1)} {match.group(2)}")
    if score > MAX_EXPOSURE:
        raise Failed(f"exposure {score} above {MAX_EXPOSURE}")
    return f"exposure {match.group(1)} {match.group(2)} (at most {MAX_EXPOSURE})"


def check_blame() -> str:
    """Once the boot has finished (this unit is Type=exec: it does not hold it up)."""
    run("systemctl", "is-system-running", "--wait", ok=(0, 1))
    line = blame_line(run("systemd-analyze", "blame", "--no-pager"), "bpfloader.service")
    report("INFO", "blame", line)
    report("INFO", "boot", run("systemd-analyze", "time").splitlines()[0])
    return line


def blame_line(blame: str, name: str) -> str:
    line = next((x.strip() for x in blame.splitlines() if x.strip().endswith(f" {name}")), "")
    if not line:
        raise Failed(f"{name} not in systemd-analyze blame")
    return line


# -- bpfloader beside the C peer ------------------------------------------------------------

REFERENCE = f"{DATA}/reference"  # libbpf-style objects of the benchmark corpus
REFERENCE_LIST = f"{DATA}/reference.env"  # OBJECTS="...": the peer's, in bpfloader's order
PEER = f"{DATA}/libbpf_loader"  # bench/libbpf_loader.c
REFERENCE_ROOT = Path("/run/bpfloader-boot-reference")  # same/, peer/: a bpffs each
SAME_UNIT, PEER_UNIT = "bpfloader-boot-same.service", "bpfloader-boot-peer.service"


def check_peer_reference() -> str:
    """bpfloader and the C peer (bench/libbpf_loader.c, one process on libbpf) load the same
    libbpf-style objects, one after the other, each into a bpffs of its own, once the boot has
    finished (the units say why then); the figures for the note: the critical chains and blame
    times of bpfloader.service and of the two units, bpfloader's time over the peer's on that
    set (with its object cache filled, as every boot after the first finds it, and empty), and
    bpfloader.service's share of the userspace boot. It fails only if the peer did not
    load every object as bpfloader did or a figure is missing: no performance bound here (the
    benchmark has those)."""
    from bpfloader.loader.parallel import default_jobs

    run("systemctl", "is-system-running", "--wait", ok=(0, 1))
    objects = sorted(str(p) for p in Path(REFERENCE).glob("*.o"))
    listed = Path(REFERENCE_LIST).read_text().split("=", 1)[1].strip().strip('"').split()
    if not objects or listed != objects:
        raise Failed(f"the peer's list {listed} is not the set's objects {objects}")
    command = unit(PEER_UNIT, "ExecStart")["ExecStart"]
    threads = int(match.group(1)) if (match := re.search(r" -j (\d+) ", command)) else 0
    if threads != default_jobs():
        raise Failed(f"the peer runs {threads} thread(s), bpfloader {default_jobs()} job(s) here")
    with reference_bpffs("same", "peer") as (same, peer):
        warm_up(objects)
        started(SAME_UNIT)  # the object cache empty: a first boot
        cold = activation(SAME_UNIT)
        run("umount", str(same))  # a new bpffs and state: a load again, not a reuse of its pins
        run("mount", "-t", "bpf", "bpf", str(same))
        shutil.rmtree(REFERENCE_ROOT / "same-state")
        started(SAME_UNIT, "restart")  # the cache filled by the first: every later boot
        started(PEER_UNIT)
        made = pins_per_object(same)
        # map_STEM_NAME and prog_STEM_NAME (a fresh bpffs may hold the kernel's own
        # maps.debug and progs.debug: CONFIG_BPF_PRELOAD)
        peer_pins = [pin for pin in os.listdir(peer) if pin.startswith(("map_", "prog_"))]
    problems = []
    for stem, want in made.items():
        got = sum(pin.startswith((f"map_{stem}_", f"prog_{stem}_")) for pin in peer_pins)
        if got != want:
            problems.append(f"{stem}: the peer pinned {got}, bpfloader {want}")
    if len(peer_pins) != sum(made.values()):
        problems.append(f"the peer pinned {len(peer_pins)} in all, bpfloader {sum(made.values())}")
    if problems:
        raise Failed("; ".join(problems))
    return reference_figures(len(objects), sum(made.values()), threads, cold)


def started(name: str, verb: str = "start") -> None:
    """`systemctl VERB NAME`, checked to have succeeded (its journal in the failure)."""
    run("systemctl", verb, name, ok=(0, 1), timeout=900)
    try:
        expect_unit(name, Result="success", ExecMainStatus="0")
    except Failed as e:
        raise Failed(f"{e}; its journal: {unit_journal(name)}") from None


@contextlib.contextmanager
def reference_bpffs(*names: str) -> Iterator[list[Path]]:
    """A bpffs at REFERENCE_ROOT/NAME for each name (the units' pin roots), unmounted after."""
    mounted = []
    try:
        for name in names:
            (REFERENCE_ROOT / name).mkdir(parents=True)
            run("mount", "-t", "bpf", "bpf", str(REFERENCE_ROOT / name))
            mounted.append(REFERENCE_ROOT / name)
        yield mounted
    finally:
        for path in mounted:
            run("umount", str(path))


def warm_up(objects: list[str]) -> None:
    """Both loads find what they read in the page cache, so that neither pays the other's cold
    reads: the objects, and the peer's binary and libraries (run for its usage message: exit 2).
    bpfloader's interpreter and modules are there already (bpfloader.service, this checker)."""
    for obj in objects:
        Path(obj).read_bytes()
    run(PEER, ok=(2,))


def pins_per_object(pin_root: Path) -> dict[str, int]:
    """What bpfloader made of each object of the set (`bpfloader status`): its maps and programs,
    one pin each. Every object must have loaded."""
    where = ["--dir", REFERENCE, "--pin-root", str(pin_root)]
    where += ["--state-dir", str(REFERENCE_ROOT / "same-state")]
    objects = json.loads(run("bpfloader", "status", "--json", *where))["objects"]
    failed = [f"{o['path']}: {o['status']}" for o in objects if o["status"] != "loaded"]
    if failed or not objects:
        raise Failed(f"bpfloader's load of the set: {failed or 'no objects'}")
    return {Path(o["path"]).stem: len(o["maps"]) + len(o["programs"]) for o in objects}


def activation(name: str) -> float:
    """A unit's time from leaving inactive to active, in seconds: what systemd-analyze blame
    shows, to the microsecond."""
    stamps = unit(name, "InactiveExitTimestampMonotonic", "ActiveEnterTimestampMonotonic")
    start = int(stamps.get("InactiveExitTimestampMonotonic") or 0)
    end = int(stamps.get("ActiveEnterTimestampMonotonic") or 0)
    if not 0 < start <= end:
        raise Failed(f"{name}: no activation times: {stamps}")
    return (end - start) / 1e6


def userspace_boot() -> float:
    """systemd-analyze time's userspace figure, in seconds: from PID 1's start to the boot's end."""
    out = run("systemctl", "show", "-p", "UserspaceTimestampMonotonic,FinishTimestampMonotonic")
    stamps = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    start = int(stamps.get("UserspaceTimestampMonotonic") or 0)
    end = int(stamps.get("FinishTimestampMonotonic") or 0)
    if not 0 < start < end:
        raise Failed(f"no userspace boot time: {stamps}")
    return (end - start) / 1e6


def critical_chain(*units: str) -> str:
    """systemd-analyze critical-chain (of the default target, or of `units`) on one line: the
    chain's units from the last one back, ' | ' between them. It follows only units that became
    active within the boot: the chain of a unit started after it goes back to the boot's units
    (the peer's names basic.target, not bpfloader-boot-same.service, which it runs after)."""
    out = run("systemd-analyze", "critical-chain", "--no-pager", *units)
    chain = [x.strip() for x in out.splitlines() if x.strip() and not x.startswith("The time ")]
    if not chain or not all(chain[0].startswith(f"{u} ") for u in units):
        raise Failed(f"systemd-analyze critical-chain {' '.join(units)} said: {out.strip()}")
    return " | ".join(chain)


def reference_figures(objects: int, pins: int, threads: int, cold: float) -> str:
    """The figures for the note, as INFO lines; the PASS line's summary. `cold`: the same-set
    unit's time with an empty object cache (the unit's own times are its second run's)."""
    report("INFO", "critical_chain", critical_chain())
    for key, name in (
        ("critical_chain_bpfloader", "bpfloader.service"),
        ("critical_chain_same_set", SAME_UNIT),
        ("critical_chain_peer", PEER_UNIT),
    ):
        report("INFO", key, critical_chain(name))
    blame = run("systemd-analyze", "blame", "--no-pager")
    for key, name in (("blame_same_set", SAME_UNIT), ("blame_peer", PEER_UNIT)):
        report("INFO", key, blame_line(blame, name))
    same, peer = activation(SAME_UNIT), activation(PEER_UNIT)
    loader, userspace = activation("bpfloader.service"), userspace_boot()
    ratio = (
        f"bpfloader {same:.3f} s / C peer {peer:.3f} s = {same / peer:.2f}; with an empty object "
        f"cache {cold:.3f} s = {cold / peer:.2f} ({objects} objects, {pins} pins, "
        f"{threads} thread(s) each)"
    )
    share = (
        f"bpfloader.service {loader:.3f} s of {userspace:.3f} s userspace: {loader / userspace:.1%}"
    )
    report("INFO", "same_set_ratio", ratio)
    report("INFO", "loader_share", share)
    return f"the peer pinned all {pins}, as bpfloader; {ratio}; {share}"


# -- the critical variant -------------------------------------------------------------------


def check_loader_unit_failed() -> str:
    expect_unit("bpfloader.service", ActiveState="failed", Result="exit-code", ExecMainStatus="1")
    return "bpfloader.service failed with status 1"


def check_critical_logged() -> str:
    entries = journal("SYSLOG_IDENTIFIER=bpfloader", f"BPF_OBJECT={CRITICAL}", "PRIORITY=2")
    logged = [e for e in entries if text(e.get("BPF_VERIFIER_LOG"))]
    if not logged:
        raise Failed(f"no crit entry with a verifier log for {CRITICAL} ({len(entries)} entries)")
    return f"crit: {text(logged[0].get('MESSAGE'))[:150]!r}"


def check_others_loaded() -> str:
    problems = pin_problems(PINS)
    if problems:
        raise Failed("; ".join(problems))
    return f"the {len(PINS)} pins of the non-critical objects are there all the same"


def check_consumer_held_back() -> str:
    """A consumer that Requires= the loader does not start after a critical failure, and no
    `loaded` marker tells a waiting client that all went well."""
    started = unit("bpfloader-boot-reader.service", "ExecMainStartTimestampMonotonic")
    if started.get("ExecMainStartTimestampMonotonic") != "0":
        raise Failed(f"the reader started: {started}")
    if os.path.exists("/run/bpfloader/loaded"):
        raise Failed("/run/bpfloader/loaded exists after a critical failure")
    return "the consumer did not start; no /run/bpfloader/loaded marker"


OLD_KERNEL_CHECKS = [
    check_loader_unit,
    check_pins,
    check_consumer,
    check_old_kernel_policy,
    check_kprobe,
    check_memlock,
]
MAIN = [
    check_loader_unit,
    check_bpffs,
    check_ordering,
    check_pins,
    check_consumer,
    check_old_kernel_policy,
    check_verifier_log,
    check_only_rejected_failed,
    check_kprobe,
    check_memlock,
    check_ksyms,
    check_declared_attachments,
    check_bpfprogram_unit,
    check_package,
    check_catalog,
    check_units_verify,
    check_security,
    check_blame,  # before the checks below change the unit (the restart would be blamed)
    check_peer_reference,  # after only_rejected_failed, which counts this boot's `loaded` events
    check_reload,
    check_path_unit,
    check_remount,
]
CRITICAL_CHECKS = [
    check_loader_unit_failed,
    check_critical_logged,
    check_others_loaded,
    check_consumer_held_back,
]

VARIANT_ARG = "bpfloader_boot_test="  # on the kernel command line: critical, oldkernel
SERIAL = "/dev/ttyS1"  # the host reads findings here; the console has kernel messages mixed in
_outputs: list[TextIO] = [sys.stdout]


def report(kind: str, name: str, detail: str) -> None:
    line = f"{kind} {name}: {' '.join(detail.split())}"
    for output in _outputs:
        output.write(line + "\n")
        output.flush()


def main() -> int:
    words = Path("/proc/cmdline").read_text().split()
    variant = next((w.split("=", 1)[1] for w in words if w.startswith(VARIANT_ARG)), "main")
    checks = {"main": MAIN, "critical": CRITICAL_CHECKS, "oldkernel": OLD_KERNEL_CHECKS}
    with open(SERIAL, "w") as serial:
        _outputs.append(serial)
        report(
            "INFO",
            "kernel",
            f"{os.uname().release}; {run('systemctl', '--version').split(chr(10))[0]}",
        )
        failed = 0
        for check in checks[variant]:
            name = check.__name__.removeprefix("check_")
            try:
                report("PASS", name, check())
            except Failed as e:
                failed += 1
                report("FAIL", name, str(e))
            except Exception:
                failed += 1
                report("FAIL", name, traceback.format_exc().strip().replace("\n", " | "))
        report("DONE", variant, f"{failed} failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
