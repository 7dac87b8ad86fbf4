"""Bad input: a bad object fails alone, on one line, and leaves nothing behind.

Each test puts one bad object in the source directory next to good ones (the two etc/bpf
examples, and `zz_last.o`, which sorts after every bad object, to prove the run goes on past
the failure), runs `bpfloader load` as a process, and checks:
  - stderr holds exactly one line about the bad object: the error, naming the file, the
    section where one applies, and the reason;
  - every good object is loaded with all its pins;
  - nothing of the bad object remains: no pin, no staging entry, no directory;
  - the exit status: 0, or 1 when the bad object is critical.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from bpfloader.errors import ObjectFormatError
from bpfloader.obj.reader import read_object
from tests.conftest import BPF_SOURCES, Run

pytestmark = pytest.mark.kernel

GOOD_PINS = frozenset(
    {
        "map_myschedtp_cpu_pid_map",
        "prog_myschedtp_tracepoint_sched_sched_switch",
        "prog_execsnoop_tracepoint_syscalls_sys_enter_execve",
        "map_zz_last_switch_count",
        "prog_zz_last_tracepoint_sched_sched_switch",
    }
)
KERNEL_ENTRIES = ("maps.debug", "progs.debug")  # preloaded in every fresh bpffs
ERROR_LEVELS = ("bpfloader: err: ", "bpfloader: crit: ", "bpfloader: alert: ", "bpfloader: emerg: ")
PROG_PREFIXES = (
    "kprobe/, kretprobe/, uprobe/, uretprobe/, tracepoint/, perf_event/, skfilter/, schedcls/, "
    "schedact/, xdp/, cgroupskb/, ingress/, egress/, cgroupsock/, cgroupsockcreate/, "
    "cgroupsockrelease/, postbind4/, postbind6/, bind4/, bind6/, connect4/, connect6/, "
    "recvmsg4/, recvmsg6/, sendmsg4/, sendmsg6/, getsockopt/, setsockopt/, sockops/, sysctl"
)


def rejected_at(source: str, code: str) -> str:
    """How a verifier's refusal names where it stopped: the C file and line of `code` in
    tests/bpf/`source`, and that line, from the log's line info (the objects carry BTF)."""
    lines = (BPF_SOURCES / source).read_text().splitlines()
    (number,) = [i + 1 for i, line in enumerate(lines) if code in line]
    return f"rejected by the verifier at {source}:{number} (`{lines[number - 1].strip()}`)"


def overread(source: str) -> str:
    """What the verifier says about bad_verifier.c and bad_second_prog.c (v[1] of a 4-byte
    value): where, and its last two meaningful lines (issue 20: it was `BPF_PROG_LOAD failed:
    EACCES (Permission denied): ...`, as if a permission were missing)."""
    return (
        f"{rejected_at(source, 'return v[1];')}: invalid access to map value, value_size=4 "
        "off=4 size=4 | R0 min value is outside of the allowed memory range"
    )


# -- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def good_objects(compile_bpf, source_dir: Path) -> Path:
    """The source directory with the three good objects in it."""
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    shutil.copy(compile_bpf("execsnoop.c"), source_dir)
    shutil.copy(compile_bpf("good_last.c", "zz_last.o"), source_dir)
    return source_dir


def place(compile_bpf, source: str, directory: Path, name: str | None = None) -> Path:
    """Compile tests/bpf/`source` and copy it into `directory` (as `name`, if given)."""
    built = compile_bpf(source)
    target = directory / (name or built.name)
    shutil.copyfile(built, target)
    return target


def load(bpfloader_cli, source_dir: Path, bpffs: Path) -> Run:
    return bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)


def bpffs_entries(root: Path) -> set[str]:
    """Every file and directory under `root` (relative), minus the kernel's preloaded files."""
    found = set()
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            rel = os.path.relpath(os.path.join(directory, name), root)
            if rel not in KERNEL_ENTRIES:
                found.add(rel)
    return found


def assert_failed_alone(
    run: Run,
    bad: Path,
    expected: str | re.Pattern[str],
    *,
    good_pins: frozenset[str] = GOOD_PINS,
    loaded: int = 3,
    bpffs: Path,
    critical: bool = False,
) -> str:
    """The run failed `bad` with the `expected` line (exact, or a full-match pattern), and
    nothing else went wrong. Returns the line."""
    lines = run.stderr.splitlines()
    # Every line is an event (a verifier log, where one is printed, follows indented by "  | ").
    assert all(line.startswith(("bpfloader: ", "  | ")) for line in lines), run.stderr
    about_bad = [line for line in lines if str(bad) in line]
    assert len(about_bad) == 1, run.stderr
    (line,) = about_bad
    if isinstance(expected, str):
        assert line == expected
    else:
        assert expected.fullmatch(line), f"{line!r} does not match {expected.pattern!r}"
    errors = [line for line in lines if line.startswith(ERROR_LEVELS)]
    if critical:
        assert line.startswith("bpfloader: crit: ") and line.endswith(" (critical object)")
        counts = f"{loaded} loaded, 0 skipped, 1 failed (1 critical)"
        assert errors == [line, f"bpfloader: err: {counts}"]
        assert run.returncode == 1, run.stderr
        assert run.stdout.splitlines()[0] == f"objects: {counts}"
    else:
        assert line.startswith("bpfloader: err: ")
        assert errors == [line]
        assert run.returncode == 0, run.stderr
        assert run.stdout.splitlines()[0] == f"objects: {loaded} loaded, 0 skipped, 1 failed"
    assert bpffs_entries(bpffs) == good_pins
    return line


def err(bad: Path, *where_and_reason: str) -> str:
    return ": ".join(("bpfloader: err", str(bad), *where_and_reason))


def assert_refused_by_plan(bpfloader_cli, source_dir: Path, bpffs: Path, line: str) -> None:
    """The plan (--dry-run: no syscall, no root needed) already refuses the object so."""
    dry = bpfloader_cli("load", "--dry-run", "--dir", source_dir, "--pin-root", bpffs)
    assert dry.returncode == 3, dry.stderr  # an object (not critical) would fail
    reason = line.removeprefix("bpfloader: err: ")
    bad = reason.split(": ", 1)[0]
    # The object's path once, then the reason (issue 20: `FILE: FAIL: FILE: ...`).
    assert f"{bad}: FAIL: {reason.removeprefix(bad + ': ')}" in dry.stdout.splitlines(), dry.stdout


# -- not an object ------------------------------------------------------------------------------


def test_truncated_elf(compile_bpf, good_objects, bpffs, bpfloader_cli):
    whole = compile_bpf("good_last.c").read_bytes()
    bad = good_objects / "trunc.o"
    bad.write_bytes(whole[: len(whole) // 2])
    shoff = struct.unpack_from("<Q", whole, 0x28)[0]
    shentsize, shnum = struct.unpack_from("<HH", whole, 0x3A)
    run = load(bpfloader_cli, good_objects, bpffs)
    assert_failed_alone(
        run,
        bad,
        err(
            bad,
            f"truncated file: the section header table ends at byte {shoff + shentsize * shnum}, "
            f"but the file has {len(whole) // 2} bytes",
        ),
        bpffs=bpffs,
    )


def test_non_bpf_elf(good_objects, bpffs, bpfloader_cli):
    with open("/bin/true", "rb") as f:
        machine = ELFFile(f).header["e_machine"]
    assert machine != "EM_BPF"
    bad = good_objects / "x.o"
    shutil.copyfile("/bin/true", bad)
    run = load(bpfloader_cli, good_objects, bpffs)
    assert_failed_alone(
        run, bad, err(bad, f"not a BPF object (ELF machine {machine})"), bpffs=bpffs
    )


def test_text_file(good_objects, bpffs, bpfloader_cli):
    bad = good_objects / "x.o"
    bad.write_text("this is not an object\nbut it is named like one\n")
    run = load(bpfloader_cli, good_objects, bpffs)
    assert_failed_alone(run, bad, err(bad, "not an ELF file"), bpffs=bpffs)


# -- malformed objects --------------------------------------------------------------------------


def test_missing_license(compile_bpf, good_objects, bpffs, bpfloader_cli):
    bad = place(compile_bpf, "bad_no_license.c", good_objects)
    run = load(bpfloader_cli, good_objects, bpffs)
    assert_failed_alone(
        run, bad, err(bad, 'no "license" section (declare one with LICENSE("GPL"))'), bpffs=bpffs
    )


def test_unknown_section_prefix(compile_bpf, good_objects, bpffs, bpfloader_cli):
    bad = place(compile_bpf, "bad_section_prefix.c", good_objects)
    run = load(bpfloader_cli, good_objects, bpffs)
    assert_failed_alone(
        run,
        bad,
        err(bad, "frobnicate/foo", f"unknown program type prefix (known: {PROG_PREFIXES})"),
        bpffs=bpffs,
    )


def test_impossible_map_def_size(compile_bpf, good_objects, bpffs, bpfloader_cli):
    bad = place(compile_bpf, "bad_map_def_size.c", good_objects)
    run = load(bpfloader_cli, good_objects, bpffs)
    assert_failed_alone(
        run,
        bad,
        err(
            bad,
            "size_of_bpf_map_def",
            "map def size 7 is impossible (must be a multiple of 4 in 28..4096)",
        ),
        bpffs=bpffs,
    )


def test_maps_section_not_whole_defs(compile_bpf, good_objects, bpffs, bpfloader_cli):
    bad = place(compile_bpf, "bad_maps_partial.c", good_objects)
    run = load(bpfloader_cli, good_objects, bpffs)
    assert_failed_alone(
        run,
        bad,
        err(bad, "maps", "244 bytes is not a whole number of 120-byte map defs"),
        bpffs=bpffs,
    )


def test_relocation_to_unknown_symbol(compile_bpf, good_objects, bpffs, bpfloader_cli):
    bad = place(compile_bpf, "bad_unknown_symbol.c", good_objects)
    run = load(bpfloader_cli, good_objects, bpffs)
    expected = re.escape(err(bad, "tracepoint/sched/sched_switch", "instruction ")) + (
        r"\d+ refers to unknown symbol 'missing_map'"
    )
    assert_failed_alone(run, bad, re.compile(expected), bpffs=bpffs)


# -- refused by the kernel ----------------------------------------------------------------------


def test_verifier_rejects_program(compile_bpf, good_objects, bpffs, bpfloader_cli):
    """The map was created before the program was refused: it must not stay pinned."""
    bad = place(compile_bpf, "bad_verifier.c", good_objects)
    run = load(bpfloader_cli, good_objects, bpffs)
    line = assert_failed_alone(
        run, bad, err(bad, "tracepoint/sched/sched_switch", overread("bad_verifier.c")), bpffs=bpffs
    )
    assert not re.search(r"map_bad_verifier|prog_bad_verifier", run.stdout)
    assert "processed " not in line  # the log's statistics are not "meaningful lines"


def test_second_program_rejected_leaves_nothing(compile_bpf, good_objects, bpffs, bpfloader_cli):
    """All or nothing: the first program loaded and the map was made, then the second program
    was refused; neither the first program's pin, nor the map, nor its pin_subdir remains."""
    bad = place(compile_bpf, "bad_second_prog.c", good_objects)
    run = load(bpfloader_cli, good_objects, bpffs)
    # The failure is in the second section, so the first one got past the verifier.
    why = overread("bad_second_prog.c")
    assert_failed_alone(run, bad, err(bad, "tracepoint/sched/sched_wakeup", why), bpffs=bpffs)
    assert not (bpffs / "second_prog_dir").exists()


# -- names bpffs refuses, names that would leave the pin root -----------------------------------


def test_section_name_with_dot(compile_bpf, good_objects, bpffs, bpfloader_cli):
    bad = place(compile_bpf, "bad_dot_name.c", good_objects)
    run = load(bpfloader_cli, good_objects, bpffs)
    line = assert_failed_alone(
        run,
        bad,
        err(
            bad,
            "tracepoint/sched/sched.switch",
            "program pin name 'prog_bad_dot_name_tracepoint_sched_sched.switch' contains '.', "
            "which bpffs refuses",
        ),
        bpffs=bpffs,
    )
    assert_refused_by_plan(bpfloader_cli, good_objects, bpffs, line)


def test_file_name_with_dot(compile_bpf, good_objects, bpffs, bpfloader_cli):
    """FILENAME is cut at the last '.' only: `bad.dotted.o` would pin as map_bad.dotted_..."""
    bad = place(compile_bpf, "good_last.c", good_objects, "bad.dotted.o")
    run = load(bpfloader_cli, good_objects, bpffs)
    line = assert_failed_alone(
        run,
        bad,
        err(
            bad,
            "maps",
            "map pin name 'map_bad.dotted_switch_count' contains '.', which bpffs refuses",
        ),
        bpffs=bpffs,
    )
    assert_refused_by_plan(bpfloader_cli, good_objects, bpffs, line)


def test_map_pin_subdir_escapes(compile_bpf, good_objects, bpffs, bpfloader_cli, tmp_path):
    bad = place(compile_bpf, "bad_map_subdir_escape.c", good_objects)
    run = load(bpfloader_cli, good_objects, bpffs)
    line = assert_failed_alone(
        run,
        bad,
        err(bad, "maps", "pin_subdir '../escape' would escape the pin root ('..')"),
        bpffs=bpffs,
    )
    assert_refused_by_plan(bpfloader_cli, good_objects, bpffs, line)
    assert sorted(os.listdir(tmp_path)) == ["bpffs", "cache-bpfloader", "etc-bpf", "run-bpfloader"]


def test_program_pin_subdir_escapes(compile_bpf, good_objects, bpffs, bpfloader_cli, tmp_path):
    bad = place(compile_bpf, "bad_prog_subdir_escape.c", good_objects)
    run = load(bpfloader_cli, good_objects, bpffs)
    line = assert_failed_alone(
        run,
        bad,
        err(
            bad,
            "tracepoint/sched/sched_switch",
            "pin_subdir 'inside/../../escape' would escape the pin root ('..')",
        ),
        bpffs=bpffs,
    )
    assert_refused_by_plan(bpfloader_cli, good_objects, bpffs, line)
    assert sorted(os.listdir(tmp_path)) == ["bpffs", "cache-bpfloader", "etc-bpf", "run-bpfloader"]


def test_location_directory_with_dot(compile_bpf, good_objects, bpffs, bpfloader_cli, tmp_path):
    """A location's name becomes a directory of the pin root: one with '.' is refused; the
    location after it (sorted) still loads, into its own directory."""
    dotted, after = good_objects / "net.shared", good_objects / "zz_after"
    dotted.mkdir()
    after.mkdir()
    bad = place(compile_bpf, "good_last.c", dotted, "located.o")
    place(compile_bpf, "good_last.c", after, "late.o")
    run = load(bpfloader_cli, good_objects, bpffs)
    line = assert_failed_alone(
        run,
        bad,
        err(bad, "maps", "location directory 'net.shared' contains '.', which bpffs refuses"),
        good_pins=GOOD_PINS
        | {
            "zz_after",
            "zz_after/map_late_switch_count",
            "zz_after/prog_late_tracepoint_sched_sched_switch",
        },
        loaded=4,
        bpffs=bpffs,
    )
    assert_refused_by_plan(bpfloader_cli, good_objects, bpffs, line)
    assert sorted(os.listdir(tmp_path)) == ["bpffs", "cache-bpfloader", "etc-bpf", "run-bpfloader"]


# -- critical objects ---------------------------------------------------------------------------


def test_critical_object_refused_fails_the_run(compile_bpf, good_objects, bpffs, bpfloader_cli):
    bad = place(compile_bpf, "bad_critical_verifier.c", good_objects)
    run = load(bpfloader_cli, good_objects, bpffs)
    # Issue 20's message: `BPF_PROG_LOAD failed: EACCES (Permission denied): 7: (79) r1 =
    # *(u64 *)(r0 +0) | R0 invalid mem access 'map_value_or_null'`, now where and why.
    at = rejected_at("bad_critical_verifier.c", "return *v;")
    pattern = re.escape(
        f"bpfloader: crit: {bad}: tracepoint/sched/sched_switch: {at}: "
        "R0 invalid mem access 'map_value_or_null' (critical object)"
    )
    line = assert_failed_alone(run, bad, re.compile(pattern), bpffs=bpffs, critical=True)
    reason = line.removeprefix("bpfloader: crit: ").removesuffix(" (critical object)")
    assert f"failed (critical): {reason}" in run.stdout.splitlines()


def corrupt_section_offset(data: bytes, section: str) -> bytes:
    """`data` with the named section's contents moved past the end of the file: what a file
    truncated in its middle looks like, while the section headers still parse."""
    elf = ELFFile(io.BytesIO(data))
    names = [s.name for s in elf.iter_sections()]
    header = elf["e_shoff"] + names.index(section) * elf["e_shentsize"]
    patched = bytearray(data)
    struct.pack_into("<Q", patched, header + 24, len(data) + 4096)  # Elf64_Shdr.sh_offset
    return bytes(patched)


def test_corrupt_critical_object_fails_the_run(compile_bpf, good_objects, bpffs, bpfloader_cli):
    whole = compile_bpf("good_critical.c").read_bytes()
    assert read_object(whole, "good_critical.o").is_critical  # sound before the patch
    bad = good_objects / "broken_critical.o"
    bad.write_bytes(corrupt_section_offset(whole, "maps"))
    with pytest.raises(ObjectFormatError):
        read_object(bad.read_bytes(), str(bad))
    maps_size = ELFFile(io.BytesIO(whole)).get_section_by_name("maps")["sh_size"]
    assert maps_size == 120  # one map def
    run = load(bpfloader_cli, good_objects, bpffs)
    assert_failed_alone(
        run,
        bad,
        f"bpfloader: crit: {bad}: maps: truncated file: the section's data ends at byte "
        f"{len(whole) + 4096 + maps_size}, but the file has {len(whole)} bytes (critical object)",
        bpffs=bpffs,
        critical=True,
    )
