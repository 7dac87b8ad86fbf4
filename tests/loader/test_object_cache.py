"""The object cache (loader/object_cache.py): a second load of unchanged objects takes their
specs from it, without importing the reader, and pins the same programs; every way it could
serve a stale spec parses instead (a changed object, a changed policy file, a new kernel, a new
loader, changed reader code, a corrupt or foreign entry); it is used only where no one but root
can write, and it never fails a load (a directory it refuses, one it cannot write).

Loads are real, into private bpffs mounts; the entries are real files, with real owners and
modes, on real read-only and full file systems. The one stand-in is the kernel release: the
kernel cannot be changed under a test, so a new kernel is an Identity with another release (the
value current_identity() reads from uname, shown to be that). (The ceiling on an entry's size
is lowered in its test, rather than a 64 MiB spec made.) The attacks by a real second uid on
the cache directory are in tests/attack/test_cache_dir.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bpfloader.loader import object_cache
from bpfloader.loader.object_cache import (
    MAGIC,
    CacheUnusable,
    ObjectCache,
    current_identity,
    decoded,
    encoded,
    entry_key,
    entry_name,
)
from bpfloader.loader.source import _content_hash
from bpfloader.obj.btf import Btf
from bpfloader.obj.reader import read_object
from bpfloader.obj.spec import ObjectSpec
from bpfloader.version import LOADER_VERSION, __version__
from tests.cache_support import planted_payload
from tests.conftest import REPO, Compile, Run, mounted_bpffs, pins_in
from tests.core_support import core_flags, generate_vmlinux_h
from tests.libbpf_support import bpftool, libbpf_object, run_pinned

pytestmark = pytest.mark.kernel  # root: the cache is used only where root owns it

OTHER_UID = 65534  # nobody: the owner of a file root did not write

# The modules that read an object: a load served from the cache imports none of them.
READER = (
    "bpfloader.obj.reader",
    "bpfloader.obj.libbpf_reader",
    "bpfloader.obj.btf_maps",
    "bpfloader.obj.linker",
    "bpfloader.obj.object_btf",
    "bpfloader.obj.defs",
)
# ... nor, for objects without CO-RE, `__ksym`, `__kconfig` or struct_ops, the modules of those
# features or the BTF and ELF parsers (a spec's records are obj/spec.py's; its BTF is bytes).
NOT_WARM = (
    "bpfloader.obj.btf",
    "bpfloader.obj.elf",
    "bpfloader.obj.core",
    "bpfloader.obj.ksyms",
    "bpfloader.obj.kconfig",
    "bpfloader.obj.struct_ops",
    "bpfloader.obj.android_2026",
)

# A libbpf-style program whose section says no type: its policy file gives it (policy.py).
UNTYPED = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("custom") int untyped(void *ctx) { return 1; }
char LICENSE[] SEC("license") = "GPL";
"""


# -- helpers ------------------------------------------------------------------------------------


def cache_column(stats: dict[str, Any]) -> dict[str, str | None]:
    """Each object's `cache` in `--stats-json`, by file name."""
    return {Path(o["path"]).name: o["cache"] for o in stats["objects"]}


def tags(root: Path) -> dict[str, str]:
    """The kernel's tag of each program pinned under `root` (a hash of its instructions, map
    fds left out): the same tag is the same program."""
    return {
        pin: bpftool("prog", "show", "pinned", root / pin)["tag"]
        for pin in pins_in(root)
        if pin.startswith("prog_")
    }


def key_fields(entry: Path) -> list[bytes]:
    """The fields of the key an entry holds (format, path, content hash, release, loader,
    code), read from the file."""
    body = entry.read_bytes()[len(MAGIC) + 32 :]
    length = int.from_bytes(body[:4], "big")
    return body[4 : 4 + length].split(b"\0")


def entries(cache: Path) -> dict[str, Path]:
    """The cache's entries, by the file name of the object each is of."""
    return {
        Path(os.fsdecode(key_fields(e)[1])).name: e
        for e in cache.iterdir()
        if object_cache.ENTRY_NAME.fullmatch(e.name)
    }


def imported(stderr: str) -> set[str]:
    """The modules `python -X importtime` lists."""
    return {line.rsplit("|", 1)[1].strip() for line in stderr.splitlines() if "|" in line}


@dataclasses.dataclass
class Loads:
    """`bpfloader load` of `source` with the object cache `cache`, each into a fresh bpffs and
    state directory of its own: every load makes every object anew."""

    source: Path
    cache: Path
    base: Path
    mounts: contextlib.ExitStack
    count: int = 0

    def run(
        self, *extra: str | Path, python: tuple[str, ...] = (sys.executable,), cwd: Path = REPO
    ) -> tuple[Run, dict[str, Any], Path]:
        """One load: its run, its `--stats-json`, its pin root (mounted until the test ends)."""
        self.count += 1
        root = self.mounts.enter_context(mounted_bpffs(self.base / f"bpffs-{self.count}"))
        state, stats = self.base / f"state-{self.count}", self.base / f"stats-{self.count}.json"
        argv = [*python, "-m", "bpfloader", "load", "--dir", self.source, "--pin-root", root]
        argv += ["--state-dir", state, "--cache-dir", self.cache, "--log-target", "console"]
        argv += ["--stats-json", stats, *extra]
        done = subprocess.run(
            [str(a) for a in argv], capture_output=True, text=True, cwd=cwd, timeout=120
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return Run(done.returncode, done.stdout, done.stderr), json.loads(stats.read_text()), root


@pytest.fixture
def loads(source_dir: Path, cache_dir: Path, tmp_path: Path) -> Iterator[Loads]:
    with contextlib.ExitStack() as mounts:
        yield Loads(source_dir, cache_dir, tmp_path, mounts)


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[Path]:
    """`directory` bind-mounted read-only over itself (EROFS for root too), until the end."""
    subprocess.run(["mount", "--bind", directory, directory], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", directory], check=True)
        yield directory
    finally:
        subprocess.run(["umount", directory], check=True)


# -- served from the cache ----------------------------------------------------------------------


def test_a_second_load_is_served_from_the_cache_and_pins_the_same_programs(
    compile_bpf: Compile, source_dir: Path, cache_dir: Path, loads: Loads
) -> None:
    """Both formats, subprograms, global data: the second load takes every spec from the
    cache, imports none of the reader, and pins programs the kernel tags the same, which run
    as the parsed ones do (global data's initial values included)."""
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    shutil.copy(libbpf_object(compile_bpf, "libbpf_subprogs.c"), source_dir)
    shutil.copy(libbpf_object(compile_bpf, "libbpf_globals.c"), source_dir)
    names = {"myschedtp.o", "libbpf_subprogs.o", "libbpf_globals.o"}

    importtime = (sys.executable, "-X", "importtime")
    cold, cold_stats, cold_root = loads.run(python=importtime)
    assert cache_column(cold_stats) == dict.fromkeys(names, "miss")
    assert (cold_stats["total"]["cache_hits"], cold_stats["total"]["cache_misses"]) == (0, 3)
    assert {*READER, *NOT_WARM} <= imported(cold.stderr)  # real: a parse imports them all
    assert stat.S_IMODE(cache_dir.stat().st_mode) == 0o700  # made by the load: root's alone
    assert set(entries(cache_dir)) == names

    warm, warm_stats, warm_root = loads.run(python=importtime)
    assert cache_column(warm_stats) == dict.fromkeys(names, "hit")
    assert (warm_stats["total"]["cache_hits"], warm_stats["total"]["cache_misses"]) == (3, 0)
    assert imported(warm.stderr) & {*READER, *NOT_WARM} == set()
    assert "; object cache: 3 hits, 0 misses\n" in loads.run("--stats")[0].stdout

    assert pins_in(warm_root) == pins_in(cold_root)
    assert tags(warm_root) == tags(cold_root)
    assert len(tags(cold_root)) == 4  # every program of the three objects
    prog = "prog_libbpf_globals_socket_count"
    assert run_pinned(warm_root / prog) == run_pinned(cold_root / prog) == 265


def test_no_cache_reads_and_writes_none(
    compile_bpf: Compile, source_dir: Path, cache_dir: Path, loads: Loads
) -> None:
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    _, stats, _ = loads.run("--no-cache")
    assert cache_column(stats) == {"myschedtp.o": None}
    assert (stats["total"]["cache_hits"], stats["total"]["cache_misses"]) == (0, 0)
    assert not cache_dir.exists()


def test_a_reload_keeps_the_entries_of_its_objects_and_removes_the_others(
    compile_bpf: Compile, source_dir: Path, bpffs: Path, cache_dir: Path, bpfloader_cli
) -> None:
    """A reload parses only what changed; the cache then holds the entries of the objects in
    the directory, parsed or left alone, and none of those gone. A file that is not an entry
    is never removed."""
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    shutil.copy(compile_bpf("r_swap.c", "alpha.o", "-DVERSION=1"), source_dir)
    shutil.copy(compile_bpf("r_swap.c", "beta.o", "-DVERSION=1"), source_dir)
    where = ("--dir", source_dir, "--pin-root", bpffs)
    bpfloader_cli("load", *where, check=True)
    assert set(entries(cache_dir)) == {"myschedtp.o", "alpha.o", "beta.o"}
    (cache_dir / "README").write_text("not the loader's\n")
    shutil.copy(compile_bpf("r_swap.c", "alpha.o", "-DVERSION=2"), source_dir / "alpha.o")
    (source_dir / "beta.o").unlink()
    stats_file = cache_dir.with_name("reload-stats.json")
    bpfloader_cli("reload", *where, "--stats-json", stats_file, check=True)
    assert cache_column(json.loads(stats_file.read_text())) == {
        "myschedtp.o": None,  # unchanged: not parsed, not looked up
        "alpha.o": "miss",
    }
    kept = entries(cache_dir)
    assert set(kept) == {"myschedtp.o", "alpha.o"}
    alpha = (source_dir / "alpha.o").read_bytes()
    assert key_fields(kept["alpha.o"])[2] == _content_hash(alpha, None).encode()  # the new one
    assert (cache_dir / "README").read_text() == "not the loader's\n"


# -- never a stale spec -------------------------------------------------------------------------


def test_a_changed_object_is_parsed_again(
    compile_bpf: Compile, source_dir: Path, loads: Loads
) -> None:
    """Same path, new bytes: parsed, and its new programs pinned (the tags of a load without
    a cache), not the old ones."""
    obj = source_dir / "alpha.o"
    shutil.copy(compile_bpf("r_swap.c", "alpha.o", "-DVERSION=1"), obj)
    _, first, old_root = loads.run()
    shutil.copy(compile_bpf("r_swap.c", "alpha.o", "-DVERSION=2"), obj)
    _, second, new_root = loads.run()
    assert (cache_column(first), cache_column(second)) == ({"alpha.o": "miss"}, {"alpha.o": "miss"})
    _, _, uncached_root = loads.run("--no-cache")
    assert tags(new_root) == tags(uncached_root) != tags(old_root)
    assert cache_column(loads.run()[1]) == {"alpha.o": "hit"}  # the new version's entry


def test_a_changed_policy_file_is_parsed_again(
    compile_bpf: Compile, source_dir: Path, loads: Loads
) -> None:
    """The policy gives the reader the program's type: a spec read under the old policy would
    load the program as the old type."""
    shutil.copy(libbpf_object(compile_bpf, UNTYPED, "untyped.o"), source_dir)
    policy = source_dir / "untyped.policy"
    types = []
    for given, shown in (("socket", "socket_filter"), ("xdp", "xdp")):
        policy.write_text(f'type = "{given}"\n')
        _, stats, root = loads.run()
        assert cache_column(stats) == {"untyped.o": "miss"}, given
        (pin,) = tags(root)
        types.append(bpftool("prog", "show", "pinned", root / pin)["type"])
        assert types[-1] == shown
    _, stats, root = loads.run()
    assert cache_column(stats) == {"untyped.o": "hit"}
    (pin,) = tags(root)
    assert bpftool("prog", "show", "pinned", root / pin)["type"] == "xdp"


def test_changed_reader_code_or_a_new_loader_version_is_parsed_again(
    compile_bpf: Compile, source_dir: Path, tmp_path: Path, loads: Loads
) -> None:
    """A copy of the package, run as the loader, then changed as an upgrade or an edit
    changes it: a file of obj/ touched (same size, new mtime), one edited, one replaced by a
    file of the same size and mtime (a package rebuilt at the same version: dpkg dates every
    file from the changelog), a new package version. Each change is a miss; the same code
    again, a hit."""
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    copy = tmp_path / "copy"
    shutil.copytree(
        REPO / "bpfloader",
        copy / "bpfloader",
        symlinks=True,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    running = subprocess.run(
        [sys.executable, "-c", "import bpfloader; print(bpfloader.__file__)"],
        capture_output=True,
        text=True,
        cwd=copy,
        check=True,
    )
    assert running.stdout.strip() == str(copy / "bpfloader/__init__.py")  # the copy runs

    def cached() -> str | None:
        return cache_column(loads.run(cwd=copy)[1])["myschedtp.o"]

    insn, version = copy / "bpfloader/obj/insn.py", copy / "bpfloader/version.py"
    assert (cached(), cached()) == ("miss", "hit")
    st = insn.stat()
    os.utime(insn, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert (cached(), cached()) == ("miss", "hit")
    insn.write_text(insn.read_text() + "# edited\n")
    assert (cached(), cached()) == ("miss", "hit")
    st = insn.stat()
    rebuilt = copy / "insn.py.new"
    rebuilt.write_text(insn.read_text().replace("# edited\n", "# EDITED\n"))
    os.utime(rebuilt, ns=(st.st_atime_ns, st.st_mtime_ns))
    rebuilt.rename(insn)
    assert (insn.stat().st_size, insn.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert (cached(), cached()) == ("miss", "hit")
    text = version.read_text()
    assert f'__version__ = "{__version__}"' in text
    version.write_text(text.replace(f'"{__version__}"', f'"{__version__}.post1"'))
    assert (cached(), cached()) == ("miss", "hit")


def test_another_kernel_release_loader_or_code_is_a_miss(
    compile_bpf: Compile, cache_dir: Path
) -> None:
    """The identity's every part is in the key. A new kernel cannot be booted under a test:
    it is the identity with another release, the field current_identity() fills from uname."""
    identity = current_identity()
    assert identity.release == os.uname().release
    assert identity.loader == f"{LOADER_VERSION} {__version__} {sys.version}"
    path = str(compile_bpf("myschedtp.c"))
    data = Path(path).read_bytes()
    spec, digest = read_object(data, path), _content_hash(data, None)
    with ObjectCache.open(str(cache_dir), identity) as cache:
        cache.put(path, digest, spec)
        assert cache.get(path, digest) == spec
    others = [
        dataclasses.replace(identity, release=identity.release + "-next"),
        dataclasses.replace(identity, loader=f"{LOADER_VERSION + 1} {__version__} {sys.version}"),
        dataclasses.replace(identity, code="0" * 64),
    ]
    for other in others:
        with ObjectCache.open(str(cache_dir), other) as cache:
            assert cache.get(path, digest) is None, other
    with ObjectCache.open(str(cache_dir), identity) as cache:
        assert cache.get(path, digest) == spec  # still there: another key, another entry
        assert cache.get(path + "x", digest) is None  # the path is in the key too
        assert cache.get(path, "0" * 64) is None  # and the content hash


# -- corrupt and foreign entries ----------------------------------------------------------------


def test_corrupt_and_foreign_entries_are_parsed_again_and_replaced(
    compile_bpf: Compile, source_dir: Path, cache_dir: Path, loads: Loads
) -> None:
    """A bit flipped in one entry, another truncated, a third replaced by another object's
    entry: each object is parsed (its own programs pinned), and its entry written anew."""
    # gamma and delta: the same bytes under two names, so that only the path tells their
    # entries apart (and each spec names its own file).
    for name, version in (("alpha", 1), ("beta", 2), ("gamma", 3), ("delta", 3)):
        shutil.copy(compile_bpf("r_swap.c", f"{name}.o", f"-DVERSION={version}"), source_dir)
    _, _, parsed_root = loads.run()
    found = entries(cache_dir)
    flipped = bytearray(found["alpha.o"].read_bytes())
    flipped[-10] ^= 0x04  # in the pickle
    found["alpha.o"].write_bytes(flipped)
    found["beta.o"].write_bytes(found["beta.o"].read_bytes()[:-100])
    shutil.copy(found["delta.o"], found["gamma.o"])  # delta's entry under gamma's name
    _, stats, root = loads.run()
    assert cache_column(stats) == {
        "alpha.o": "miss",
        "beta.o": "miss",
        "gamma.o": "miss",
        "delta.o": "hit",
    }
    assert tags(root) == tags(parsed_root)
    assert set(cache_column(loads.run()[1]).values()) == {"hit"}


def test_nothing_is_unpickled_before_the_digest_and_the_key_match(tmp_path: Path) -> None:
    key = b"1\0/etc/bpf/x.o\0" + b"a" * 64
    marker = tmp_path / "ran"
    entry = encoded(key, planted_payload(marker))
    # The control: intact and of this key, the payload runs (not a spec: still a miss).
    assert decoded(entry, key) is None
    assert marker.is_dir()
    marker.rmdir()
    damaged = []
    for at in (0, len(MAGIC) - 1, len(MAGIC), len(MAGIC) + 31, len(MAGIC) + 33, len(entry) - 1):
        for bit in (0x01, 0x80):
            flipped = bytearray(entry)
            flipped[at] ^= bit
            damaged.append(bytes(flipped))
    damaged += [entry[:cut] for cut in (0, len(MAGIC), len(MAGIC) + 32, len(entry) - 1)]
    damaged += [entry + b"\0", MAGIC + entry[len(MAGIC) :][::-1]]
    for data in damaged:
        assert decoded(data, key) is None
    foreign = encoded(key.replace(b"x.o", b"y.o"), planted_payload(marker))  # its own digest
    assert decoded(foreign, key) is None
    assert not marker.exists()


def test_a_loadable_entry_that_is_not_a_spec_is_a_miss() -> None:
    key = b"1\0/etc/bpf/x.o"
    assert decoded(encoded(key, b"\x80\x05K\x07."), key) is None  # the int 7
    assert decoded(encoded(key, b"\x80\x05c"), key) is None  # a pickle cut short


# -- the entries and the directory: root's alone ------------------------------------------------


@pytest.fixture
def spec_and_cache(
    compile_bpf: Compile, cache_dir: Path
) -> Iterator[tuple[ObjectSpec, ObjectCache]]:
    path = str(compile_bpf("myschedtp.c"))
    spec = read_object(Path(path).read_bytes(), path)
    with ObjectCache.open(str(cache_dir)) as cache:
        yield spec, cache


def test_only_a_regular_file_of_roots_that_no_one_else_can_write_is_read(
    spec_and_cache: tuple[ObjectSpec, ObjectCache], cache_dir: Path, tmp_path: Path
) -> None:
    spec, cache = spec_and_cache
    cache.put(spec.path, "h", spec)
    entry = cache_dir / entry_name(entry_key(cache.identity, spec.path, "h"))
    assert stat.S_IMODE(entry.stat().st_mode) == 0o600
    intact = entry.read_bytes()
    assert cache.get(spec.path, "h") == spec
    for mode, served in ((0o644, True), (0o664, False), (0o646, False), (0o400, True)):
        entry.chmod(mode)
        assert (cache.get(spec.path, "h") == spec) is served, oct(mode)
    entry.chmod(0o600)
    os.chown(entry, OTHER_UID, 0)
    assert cache.get(spec.path, "h") is None
    os.chown(entry, 0, 0)
    assert cache.get(spec.path, "h") == spec
    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_bytes(intact)
    entry.unlink()
    entry.symlink_to(elsewhere)  # root's link, to a good entry of root's: never followed
    assert cache.get(spec.path, "h") is None
    entry.unlink()
    os.mkfifo(entry)  # opened without blocking, then refused
    assert cache.get(spec.path, "h") is None
    entry.unlink()
    entry.mkdir()
    assert cache.get(spec.path, "h") is None
    entry.rmdir()
    with entry.open("wb") as f:
        f.write(intact)
        f.truncate(object_cache.MAX_ENTRY + 1)  # sparse: over the ceiling, never read
    assert cache.get(spec.path, "h") is None
    entry.unlink()
    cache.put(spec.path, "h", spec)  # the name taken again by a good entry
    assert cache.get(spec.path, "h") == spec


def test_a_put_over_a_link_replaces_the_link(
    spec_and_cache: tuple[ObjectSpec, ObjectCache], cache_dir: Path, tmp_path: Path
) -> None:
    spec, cache = spec_and_cache
    target = tmp_path / "target"
    target.write_text("root's file elsewhere\n")
    entry = cache_dir / entry_name(entry_key(cache.identity, spec.path, "h"))
    entry.symlink_to(target)
    cache.put(spec.path, "h", spec)
    assert not entry.is_symlink() and entry.stat().st_uid == 0
    assert target.read_text() == "root's file elsewhere\n"
    assert cache.get(spec.path, "h") == spec


def test_the_directory_is_used_only_where_no_one_but_root_can_write(tmp_path: Path) -> None:
    made = tmp_path / "made"
    with ObjectCache.open(str(made)):
        pass
    assert stat.S_IMODE(made.stat().st_mode) == 0o700 and made.stat().st_uid == 0
    refused = {
        0o777: "writable by others (mode 0777",
        0o1777: "writable by others (mode 1777",  # sticky or not: root's alone
        0o770: "writable by others (mode 0770",
    }
    for mode, says in refused.items():
        directory = tmp_path / f"mode-{mode:o}"
        directory.mkdir()
        directory.chmod(mode)
        with pytest.raises(CacheUnusable) as refusal:
            ObjectCache.open(str(directory))
        assert refusal.value.refused and says in refusal.value.reason, mode
    owned = tmp_path / "owned"
    owned.mkdir(mode=0o700)
    os.chown(owned, OTHER_UID, OTHER_UID)
    with pytest.raises(CacheUnusable) as refusal:
        ObjectCache.open(str(owned))
    assert refusal.value.refused and f"owned by uid {OTHER_UID}, not root" in refusal.value.reason
    open_parent = tmp_path / "open"
    open_parent.mkdir()
    open_parent.chmod(0o777)  # not sticky: anyone may swap the cache directory in it
    with pytest.raises(CacheUnusable) as refusal:
        ObjectCache.open(str(open_parent / "cache"))
    assert refusal.value.refused and "and not sticky" in refusal.value.reason
    assert not (open_parent / "cache").exists()  # refused before anything was made
    link = tmp_path / "link"
    link.symlink_to(made)
    os.lchown(link, OTHER_UID, OTHER_UID)
    with pytest.raises(CacheUnusable) as refusal:
        ObjectCache.open(str(link))
    assert refusal.value.refused and "symbolic link owned by uid" in refusal.value.reason
    with pytest.raises(CacheUnusable) as missing:
        ObjectCache.open(str(tmp_path / "no" / "cache"))
    assert not missing.value.refused and "No such file or directory" in missing.value.reason


def test_a_directory_others_can_write_is_not_used_and_the_load_goes_on(
    compile_bpf: Compile, source_dir: Path, cache_dir: Path, loads: Loads
) -> None:
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    cache_dir.mkdir()
    cache_dir.chmod(0o777)
    run, stats, root = loads.run()
    assert cache_column(stats) == {"myschedtp.o": None}
    assert pins_in(root) == {
        "map_myschedtp_cpu_pid_map",
        "prog_myschedtp_tracepoint_sched_sched_switch",
    }
    warnings = [line for line in run.stderr.splitlines() if "object cache" in line]
    assert warnings == [
        f"bpfloader: warning: object cache {cache_dir}: not used: directory {cache_dir} is "
        f"writable by others (mode 0777; fix: chmod go-w {cache_dir}); objects are read and "
        "parsed as without it"
    ]
    assert list(cache_dir.iterdir()) == []  # nothing written there either


# -- never a failed load ------------------------------------------------------------------------


def test_an_unwritable_cache_never_fails_the_load(
    compile_bpf: Compile, source_dir: Path, cache_dir: Path, tmp_path: Path, loads: Loads
) -> None:
    """A read-only cache directory: the objects are parsed, loaded, and the run says once
    that it wrote nothing. A missing one on a read-only file system: not used, said once."""
    shutil.copy(compile_bpf("myschedtp.c"), source_dir)
    shutil.copy(compile_bpf("r_swap.c", "alpha.o", "-DVERSION=1"), source_dir)
    cache_dir.mkdir(mode=0o700)
    with read_only(cache_dir):
        run, stats, root = loads.run()
    assert cache_column(stats) == {"myschedtp.o": "miss", "alpha.o": "miss"}
    assert len(pins_in(root)) == 6
    notices = [line for line in run.stderr.splitlines() if "object cache" in line]
    assert notices == [
        f"bpfloader: notice: object cache {cache_dir}: not written: Read-only file system; "
        "objects are read and parsed as without it"
    ]
    parent = tmp_path / "ro"
    parent.mkdir()
    loads.cache = parent / "cache"
    with read_only(parent):
        run, stats, _ = loads.run()
    assert cache_column(stats) == {"myschedtp.o": None, "alpha.o": None}
    notices = [line for line in run.stderr.splitlines() if "object cache" in line]
    assert notices == [
        f"bpfloader: notice: object cache {parent / 'cache'}: not used: Read-only file system: "
        f"{parent / 'cache'}; objects are read and parsed as without it"
    ]


def test_a_full_disk_stops_the_writes_without_failing(
    spec_and_cache: tuple[ObjectSpec, ObjectCache], tmp_path: Path
) -> None:
    spec, _ = spec_and_cache
    full = tmp_path / "full"
    full.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4k,mode=0700", "tmpfs", full], check=True)
    try:
        (full / "filler").write_bytes(b"\0" * 4096)
        with ObjectCache.open(str(full)) as cache:
            cache.put(spec.path, "h", spec)
            assert cache.unwritten == f"not written: {os.strerror(errno.ENOSPC)}"
            (full / "filler").unlink()
            cache.put(spec.path, "h", spec)  # the run writes no more
            assert cache.get(spec.path, "h") is None
            assert sorted(os.listdir(full)) == []  # no temporary file left either
    finally:
        subprocess.run(["umount", full], check=True)


def test_a_spec_that_cannot_be_pickled_is_not_written_and_said(
    spec_and_cache: tuple[ObjectSpec, ObjectCache], cache_dir: Path
) -> None:
    """A bug (a spec field pickle refuses): that object is parsed at every run, the others
    are still written, and the run says why once."""
    spec, cache = spec_and_cache
    broken = dataclasses.replace(spec, license=lambda: "GPL")  # type: ignore[arg-type]
    cache.put(spec.path, "h", broken)
    assert cache.unwritten is not None
    assert cache.unwritten.startswith(f"not written: {spec.path}: cannot be pickled: ")
    assert list(cache_dir.iterdir()) == []
    cache.put(spec.path, "i", spec)
    assert cache.get(spec.path, "i") == spec


def test_an_entry_over_the_ceiling_is_neither_written_nor_read(
    spec_and_cache: tuple[ObjectSpec, ObjectCache], cache_dir: Path, monkeypatch
) -> None:
    """The ceiling lowered: a spec of 64 MiB would cost the shared machine its memory for
    nothing a smaller ceiling does not show."""
    spec, cache = spec_and_cache
    cache.put(spec.path, "h", spec)
    size = (cache_dir / entry_name(entry_key(cache.identity, spec.path, "h"))).stat().st_size
    monkeypatch.setattr(object_cache, "MAX_ENTRY", size - 1)
    assert cache.get(spec.path, "h") is None
    cache.put(spec.path, "i", spec)
    assert not (cache_dir / entry_name(entry_key(cache.identity, spec.path, "i"))).exists()
    assert cache.unwritten is None  # not a failure: that object is parsed at every run


def test_prune_removes_the_entries_and_temporary_files_a_run_did_not_use(
    spec_and_cache: tuple[ObjectSpec, ObjectCache], cache_dir: Path
) -> None:
    spec, cache = spec_and_cache
    for digest in ("used", "kept", "unused"):
        cache.put(spec.path, digest, spec)
    leftover = cache_dir / f"{object_cache.TEMP_PREFIX}1234-{'0' * 64}"
    leftover.write_bytes(b"a killed run's")
    (cache_dir / "notes").write_text("someone's\n")
    with ObjectCache.open(str(cache_dir)) as run:
        assert run.get(spec.path, "used") == spec
        run.keep(spec.path, "kept")
        run.prune()
    names = {entry_name(entry_key(cache.identity, spec.path, d)): d for d in ("used", "kept")}
    assert {p.name for p in cache_dir.iterdir()} == {*names, "notes"}


# -- every kind of spec -------------------------------------------------------------------------


def same(a: ObjectSpec, b: ObjectSpec) -> bool:
    """`a == b`, but the CO-RE relocations and the __ksym externs compared by value: their
    classes compare by identity, and a parsed BTF (obj/btf.Btf) by nothing; the same bytes
    over the same base, and the same index of its types, are the same BTF."""

    def by_value(part: object) -> tuple[object, ...] | None:
        if part is None:
            return None
        assert dataclasses.is_dataclass(part)
        values = [getattr(part, f.name) for f in dataclasses.fields(part)]
        return tuple(btf_value(v) if isinstance(v, Btf) else v for v in values)

    def btf_value(btf: Btf) -> tuple[object, ...]:
        base = None if btf.base is None else btf_value(btf.base)
        return btf.raw, base, bytes(btf.type_section), btf.offsets, btf.ids_by_kind

    bare_a = dataclasses.replace(a, core=None, ksyms=None)
    bare_b = dataclasses.replace(b, core=None, ksyms=None)
    return (
        bare_a == bare_b
        and by_value(a.core) == by_value(b.core)
        and by_value(a.ksyms) == by_value(b.ksyms)
    )


def test_every_kind_of_spec_comes_back_equal(
    compile_bpf: Compile, build_dir: Path, cache_dir: Path
) -> None:
    """Android's formats, libbpf-style maps and global data, subprograms, maps of maps, CO-RE
    relocations, __kconfig and __ksym externs, struct_ops: each spec, stored and taken back,
    equals the parsed one."""
    vmlinux = build_dir / "vmlinux_object_cache"
    generate_vmlinux_h(vmlinux)
    objects = [
        compile_bpf("myschedtp.c"),
        compile_bpf("tc_counter.c"),
        compile_bpf("android2026/a26_fields.c"),
        *(
            libbpf_object(compile_bpf, source)
            for source in (
                "libbpf_maps.c",
                "libbpf_globals.c",
                "libbpf_subprogs.c",
                "libbpf_values.c",
                "libbpf_kconfig.c",
                "libbpf_legacy_maps.c",
            )
        ),
        *(
            compile_bpf(source, None, *core_flags(vmlinux))
            for source in ("core/core_kinds.c", "ksyms/ksyms_typed.c", "struct_ops/cc.c")
        ),
    ]
    seen = set()
    with ObjectCache.open(str(cache_dir)) as cache:
        for obj in objects:
            data = obj.read_bytes()
            spec = read_object(data, str(obj))
            digest = _content_hash(data, None)
            cache.put(str(obj), digest, spec)
            assert cache.unwritten is None
            cached = cache.get(str(obj), digest)
            assert cached is not None and same(cached, spec), obj.name
            seen |= {
                name
                for name in ("core", "kconfig", "ksyms", "btf")
                if getattr(spec, name) is not None
            }
            seen |= {"struct_ops" for m in spec.maps if m.struct_ops is not None}
    assert seen == {"core", "kconfig", "ksyms", "btf", "struct_ops"}  # each kind was there
