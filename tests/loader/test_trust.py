"""The trust policy on the source directory (StrictModes): an object someone other than root could
have written is refused on one line naming it and why, while the other objects load; with
--insecure-allow-untrusted it loads, and the log says so loudly (once per run, once per object).

The pure tests call bpfloader.loader.trust directly; the kernel-marked ones run `bpfloader load`.
"""

from __future__ import annotations

import grp
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfloader.loader.gates import Environment
from bpfloader.loader.plan import Planner
from bpfloader.loader.scan import scan
from bpfloader.loader.source import DEFAULT_MAX_OBJECT_BYTES, plan_sources
from bpfloader.loader.trust import directory_problem, file_problem, open_checked, refused
from bpfloader.version import LOADER_VERSION
from tests.loader.test_bad_input import GOOD_PINS, assert_failed_alone, bpffs_entries, load, place

WHY = "only root may be able to change what the loader runs"
NO_SUCH_GROUP = next(
    g for g in range(4242424, 1 << 31) if g not in {e.gr_gid for e in grp.getgrall()}
)
BAD_PINS = frozenset({"map_untrusted_switch_count", "prog_untrusted_tracepoint_sched_sched_switch"})


def group_name(gid: int) -> str:
    """How a refusal names a group: by its name, where it has one (with its gid after)."""
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid}, "
    except KeyError:
        return f"{gid} ("


def open_dir(path: Path) -> str:
    """Why a directory of mode 0777, root's, is refused."""
    return (
        f"writable by group root and everyone and not sticky (gid 0, mode 0777; "
        f"fix: chmod go-w {path})"
    )


def writable_by_group(path: Path, gid: int, mode: str = "0664", who: str = "g") -> str:
    name, _, details = group_name(gid).partition(" (")
    return f"writable by group {name} ({details}mode {mode}; fix: chmod {who}-w {path})"


INSECURE_RUN = "bpfloader: warning: INSECURE: --insecure-allow-untrusted: the trust policy on "


def fake_stat(mode: int, uid: int = 0, gid: int = 0) -> os.stat_result:
    return os.stat_result((mode, 0, 0, 1, uid, gid, 0, 0, 0, 0))


@pytest.fixture
def elsewhere() -> Iterator[Path]:
    """A directory in /tmp outside the source directory (root-owned, 0700: trusted in itself)."""
    path = Path(tempfile.mkdtemp(prefix="bpfloader-trust-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def good_objects(compile_bpf, source_dir: Path) -> Path:
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    shutil.copy(compile_bpf("execsnoop.c"), source_dir)
    shutil.copy(compile_bpf("good_last.c", "zz_last.o"), source_dir)
    return source_dir


def untrusted(compile_bpf, directory: Path) -> Path:
    """A good object named untrusted.o: only its ownership, mode or path can make it fail."""
    return place(compile_bpf, "good_last.c", directory, "untrusted.o")


# -- pure: trust.py -----------------------------------------------------------------------------


def test_file_problems():
    x = "/etc/bpf/x.o"
    assert file_problem(fake_stat(stat.S_IFREG | 0o644), x) is None
    assert file_problem(fake_stat(stat.S_IFREG | 0o600), x) is None
    # A group is named, with its gid (by its number where it has no name); the fix follows.
    assert file_problem(fake_stat(stat.S_IFREG | 0o664, gid=0), x) == (
        "writable by group root (gid 0, mode 0664; fix: chmod g-w /etc/bpf/x.o)"
    )
    assert file_problem(fake_stat(stat.S_IFREG | 0o664, gid=NO_SUCH_GROUP), x) == (
        f"writable by group {NO_SUCH_GROUP} (mode 0664; fix: chmod g-w /etc/bpf/x.o)"
    )
    assert file_problem(fake_stat(stat.S_IFREG | 0o646), x) == (
        "writable by everyone (mode 0646; fix: chmod o-w /etc/bpf/x.o)"
    )
    assert file_problem(fake_stat(stat.S_IFREG | 0o666, gid=0), x) == (
        "writable by group root and everyone (gid 0, mode 0666; fix: chmod go-w /etc/bpf/x.o)"
    )
    assert file_problem(fake_stat(stat.S_IFREG | 0o644, uid=1000), x) == (
        "owned by uid 1000, not root (mode 0644; fix: chown root /etc/bpf/x.o)"
    )
    # The path in the fix is a shell word, whatever the file is called.
    assert file_problem(fake_stat(stat.S_IFREG | 0o646), "/etc/bpf/a b.o") == (
        "writable by everyone (mode 0646; fix: chmod o-w '/etc/bpf/a b.o')"
    )


def test_directory_problems():
    d = "/etc/bpf"
    assert directory_problem(fake_stat(stat.S_IFDIR | 0o755), d) is None
    assert directory_problem(fake_stat(stat.S_IFDIR | 0o1777), d) is None  # /tmp
    assert directory_problem(fake_stat(stat.S_IFDIR | 0o777), d) == open_dir(Path(d))
    assert directory_problem(fake_stat(stat.S_IFDIR | 0o775, gid=0), d) == (
        "writable by group root and not sticky (gid 0, mode 0775; fix: chmod g-w /etc/bpf)"
    )
    assert directory_problem(fake_stat(stat.S_IFDIR | 0o1777, uid=1000), d) == (
        "owned by uid 1000, not root (mode 1777; fix: chown root /etc/bpf)"
    )


def test_refusal_line():
    """The message of issue 20: `refused: writable by group 0 (mode 0664)` named neither the
    group nor the fix."""
    problem = file_problem(fake_stat(stat.S_IFREG | 0o664, gid=0), "/etc/bpf/x.o")
    assert problem is not None
    assert str(refused(problem).where(file="/etc/bpf/x.o")) == (
        "/etc/bpf/x.o: refused: writable by group root (gid 0, mode 0664; fix: chmod g-w "
        f"/etc/bpf/x.o); {WHY}"
    )


def problem_of(source_dir: Path, rel: str) -> str | None:
    """Why the trust policy refuses the entry `rel` ("name" or "location/name") of the source
    directory, opened as the loader opens it, or None; "missing" for no such entry."""
    location, _, name = rel.rpartition("/")
    with scan(str(source_dir)) as tree:
        opened = open_checked(tree.directory(location), name, tree.within)
        if opened is None:
            return "missing"
        opened.close()
        assert (opened.fd is None) == (opened.problem is not None)  # a refusal opens nothing
        return opened.problem


def test_checks_on_what_was_opened(tmp_path: Path, elsewhere: Path):
    src = tmp_path / "src"
    (src / "loc").mkdir(parents=True)
    ok = src / "ok.o"
    ok.write_bytes(b"x")
    os.chmod(ok, 0o644)
    assert problem_of(src, "ok.o") is None  # pytest's tmp_path, under the sticky /tmp
    assert problem_of(src, "none.o") == "missing"

    group = src / "group.o"
    group.write_bytes(b"x")
    os.chmod(group, 0o664)
    os.chown(group, 0, 1000)
    assert problem_of(src, "group.o") == writable_by_group(group, 1000)

    owned = src / "owned.o"
    owned.write_bytes(b"x")
    os.chown(owned, 1000, 1000)
    assert problem_of(src, "owned.o") == (
        f"owned by uid 1000, not root (mode 0644; fix: chown root {owned})"
    )

    os.mkfifo(src / "fifo.o")  # opened without blocking, refused on its fd
    assert problem_of(src, "fifo.o") == "not a regular file"

    inner = src / "loc" / "inner.o"
    inner.write_bytes(b"x")
    os.chmod(src / "loc", 0o777)
    assert problem_of(src, "loc/inner.o") == f"directory {src}/loc is {open_dir(src / 'loc')}"
    os.chmod(src / "loc", 0o755)
    assert problem_of(src, "loc/inner.o") is None


def test_links(tmp_path: Path, elsewhere: Path):
    """A link of root's is followed (its target checked, and kept inside the source
    directory); a link anyone else owns is refused unopened; a location is never a link."""
    src = tmp_path / "src"
    src.mkdir()
    ok = src / "ok.o"
    ok.write_bytes(b"x")
    target = elsewhere / "outside.o"
    target.write_bytes(b"x")
    (src / "link.o").symlink_to(target)
    assert problem_of(src, "link.o") == f"a symlink to {target}, outside {src}"

    group = src / "group.o"
    group.write_bytes(b"x")
    os.chmod(group, 0o664)
    os.chown(group, 0, 1000)
    (src / "inside.o").symlink_to(group)  # a link inside the directory: its target is checked
    assert problem_of(src, "inside.o") == f"its target {group} is {writable_by_group(group, 1000)}"
    (src / "fine.o").symlink_to("ok.o")
    assert problem_of(src, "fine.o") is None
    (src / "chain.o").symlink_to("fine.o")  # root's link to root's link
    assert problem_of(src, "chain.o") is None

    theirs = src / "theirs.o"
    theirs.symlink_to("ok.o")
    os.chown(theirs, 1000, 1000, follow_symlinks=False)
    assert problem_of(src, "theirs.o") == "a symbolic link owned by uid 1000"
    (src / "via_theirs.o").symlink_to("theirs.o")  # root's link, through theirs
    assert problem_of(src, "via_theirs.o") == (
        f"{src}/theirs.o is a symbolic link owned by uid 1000: only root's links are followed"
    )
    (src / "loop.o").symlink_to("loop.o")
    with pytest.raises(OSError, match="Too many levels of symbolic links"):
        problem_of(src, "loop.o")

    (src / "via").symlink_to(elsewhere)
    (src / "real_loc").mkdir()
    with scan(str(src)) as tree:
        assert {o.location for o in tree} == {""}  # `via` is a link; real_loc has no objects
        assert [Path(o.path).name for o in tree] == [
            "chain.o",
            "fine.o",
            "group.o",
            "inside.o",
            "link.o",
            "loop.o",
            "ok.o",
            "theirs.o",
            "via_theirs.o",
        ]


def test_ancestor_directory(tmp_path: Path):
    top = tmp_path / "top"
    src = top / "etc-bpf"
    src.mkdir(parents=True)
    (src / "x.o").write_bytes(b"x")
    os.chmod(top, 0o770)
    os.chown(top, 0, 1000)
    name, _, details = group_name(1000).partition(" (")
    assert problem_of(src, "x.o") == (
        f"directory {top} is writable by group {name} and not sticky ({details}mode 0770; "
        f"fix: chmod g-w {top})"
    )
    os.chown(top, 1000, 0)
    os.chmod(top, 0o755)
    assert problem_of(src, "x.o") == (
        f"directory {top} is owned by uid 1000, not root (mode 0755; fix: chown root {top})"
    )


def test_object_size_ceiling(compile_bpf, tmp_path: Path):
    """An object larger than the ceiling fails on one line, unread."""
    src = tmp_path / "src"
    src.mkdir()
    good = place(compile_bpf, "good_last.c", src, "small.o")
    size = good.stat().st_size
    big = src / "big.o"
    big.write_bytes(b"\0" * (size + 1))
    environment = Environment(kernel=(6, 1, 0), loader_version=LOADER_VERSION, arch="x86_64")
    planned = list(
        plan_sources(
            scan(str(src)), Planner(environment, "/pins", lambda _: False), max_object_bytes=size
        )
    )
    assert [str(p.plan.error) for p in planned] == [
        f"{big}: too large: {size + 1} bytes, over the ceiling of {size} bytes (--max-object-size)",
        "None",
    ]
    assert DEFAULT_MAX_OBJECT_BYTES == 64 << 20


# -- kernel: bpfloader load ---------------------------------------------------------------------


def refusal(bad: Path, reason: str) -> str:
    return f"bpfloader: err: {bad}: refused: {reason}; {WHY}"


@pytest.mark.kernel
def test_group_writable_object(compile_bpf, good_objects, bpffs, bpfloader_cli):
    bad = untrusted(compile_bpf, good_objects)
    os.chown(bad, 0, 1000)
    os.chmod(bad, 0o664)
    run = load(bpfloader_cli, good_objects, bpffs)
    assert_failed_alone(run, bad, refusal(bad, writable_by_group(bad, 1000)), bpffs=bpffs)


@pytest.mark.kernel
def test_world_writable_directory(compile_bpf, good_objects, bpffs, bpfloader_cli):
    loc = good_objects / "loc"
    loc.mkdir()
    bad = untrusted(compile_bpf, loc)
    os.chmod(loc, 0o777)
    run = load(bpfloader_cli, good_objects, bpffs)
    reason = f"directory {loc} is {open_dir(loc)}"
    assert_failed_alone(run, bad, refusal(bad, reason), bpffs=bpffs)


@pytest.mark.kernel
def test_object_of_another_uid(compile_bpf, good_objects, bpffs, bpfloader_cli):
    bad = untrusted(compile_bpf, good_objects)
    os.chown(bad, 1000, 0)
    run = load(bpfloader_cli, good_objects, bpffs)
    reason = f"owned by uid 1000, not root (mode 0644; fix: chown root {bad})"
    assert_failed_alone(run, bad, refusal(bad, reason), bpffs=bpffs)


@pytest.mark.kernel
def test_symlink_out_of_the_directory(compile_bpf, good_objects, elsewhere, bpffs, bpfloader_cli):
    target = untrusted(compile_bpf, elsewhere)
    bad = good_objects / "untrusted.o"
    bad.symlink_to(target)
    run = load(bpfloader_cli, good_objects, bpffs)
    reason = f"a symlink to {target}, outside {good_objects}"
    assert_failed_alone(run, bad, refusal(bad, reason), bpffs=bpffs)


@pytest.mark.kernel
def test_refused_in_the_dry_run(compile_bpf, good_objects, bpffs, bpfloader_cli):
    bad = untrusted(compile_bpf, good_objects)
    os.chmod(bad, 0o646)
    dry = bpfloader_cli("load", "--dry-run", "--dir", good_objects, "--pin-root", bpffs)
    assert dry.returncode == 3, dry.stderr  # an object (not critical) would fail
    # The path once (issue 20: it was `FILE: FAIL: FILE: refused...`).
    line = f"{bad}: FAIL: refused: writable by everyone (mode 0646; fix: chmod o-w {bad}); {WHY}"
    assert line in dry.stdout.splitlines(), dry.stdout


@pytest.mark.kernel
def test_insecure_flag_loads_and_warns(compile_bpf, good_objects, elsewhere, bpffs, bpfloader_cli):
    group = untrusted(compile_bpf, good_objects)
    os.chown(group, 0, 1000)
    os.chmod(group, 0o664)
    target = place(compile_bpf, "good_last.c", elsewhere, "linked.o")
    link = good_objects / "linked.o"
    link.symlink_to(target)
    loc = good_objects / "loc"
    loc.mkdir()
    os.chmod(loc, 0o777)
    other = place(compile_bpf, "good_last.c", loc, "other.o")
    os.chown(other, 1000, 0)
    run = bpfloader_cli(
        "load", "--insecure-allow-untrusted", "--dir", good_objects, "--pin-root", bpffs
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0] == "objects: 6 loaded, 0 skipped, 0 failed", run.stdout
    lines = run.stderr.splitlines()
    assert [line for line in lines if line.startswith(INSECURE_RUN)] == [
        f"{INSECURE_RUN}{good_objects} is off; objects that someone other than root could have "
        "written will be loaded (for development only, never on a real system)"
    ]
    insecure = [line for line in lines if "INSECURE: let through" in line]
    prefix = "bpfloader: warning: {}: INSECURE: let through despite the trust policy "
    prefix += "(--insecure-allow-untrusted): {}"
    assert insecure == [
        prefix.format(link, f"a symlink to {target}, outside {good_objects}"),
        prefix.format(group, writable_by_group(group, 1000)),
        prefix.format(other, f"directory {loc} is {open_dir(loc)}"),
    ]
    assert not [line for line in lines if line.startswith("bpfloader: err")], run.stderr
    assert bpffs_entries(bpffs) >= GOOD_PINS | BAD_PINS
    assert "loc/prog_other_tracepoint_sched_sched_switch" in bpffs_entries(bpffs)


@pytest.mark.kernel
def test_reload_refuses_and_the_flag_lets_through(compile_bpf, good_objects, bpffs, bpfloader_cli):
    bad = untrusted(compile_bpf, good_objects)
    os.chown(bad, 1000, 0)
    where = ("--dir", good_objects, "--pin-root", bpffs)
    run = bpfloader_cli("reload", *where)
    assert run.returncode == 3, run.stderr  # reload: an object failed
    why = f"owned by uid 1000, not root (mode 0644; fix: chown root {bad})"
    assert refusal(bad, why) in run.stderr.splitlines()
    assert bpffs_entries(bpffs) == GOOD_PINS
    run = bpfloader_cli("reload", "--insecure-allow-untrusted", *where)
    assert run.returncode == 0, run.stderr
    assert sum(line.startswith(INSECURE_RUN) for line in run.stderr.splitlines()) == 1
    assert f"bpfloader: warning: {bad}: INSECURE: let through" in run.stderr
    assert bpffs_entries(bpffs) == GOOD_PINS | BAD_PINS
