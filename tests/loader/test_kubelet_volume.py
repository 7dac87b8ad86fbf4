"""A source directory the kubelet wrote (a ConfigMap volume, as the DaemonSet mounts one): the
kubelet's exact layout (tests/kubelet_support.py: the 0777 emptyDir, `..2026_...` version
directories, `..data`, the visible links), seen as a pod sees it (a read-only bind mount),
loaded by `bpfloader` into a private bpffs; an update of the volume applied by `reload`; the
listing made while the kubelet updates the volume is of one version, never a mix.

The scan tests call bpfloader.loader.scan directly; the others run `bpfloader`."""

from __future__ import annotations

import os
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfloader.errors import LoaderError
from bpfloader.kernel.fd import Fd
from bpfloader.loader import dirfd
from bpfloader.loader.scan import scan
from tests import kubelet_support as kubelet
from tests.conftest import pins_in
from tests.reload_support import status_json

pytestmark = pytest.mark.kernel  # mounts, and the kernel for the loads

WHY = "only root may be able to change what the loader runs"


def open_volume(path: object) -> str:
    """Why a volume seen writable is refused (trust.directory_problem's words, with the fix)."""
    return (
        "writable by group root and everyone and not sticky (gid 0, mode 0777; fix: chmod go-w "
        f"{path})"
    )


CRITICAL_PINS = {"map_good_critical_vital_map", "prog_good_critical_tracepoint_sched_sched_switch"}
SCHED_PINS = {"map_myschedtp_cpu_pid_map", "prog_myschedtp_tracepoint_sched_sched_switch"}
NET_PINS = {"net/map_zz_last_switch_count", "net/prog_zz_last_tracepoint_sched_sched_switch"}


@pytest.fixture
def objects(compile_bpf) -> dict[str, bytes]:
    """The ConfigMap's payload: a critical object and the example, at the top, and one more
    under `net/` (an item whose path is in a subdirectory: a location)."""
    return {
        "good_critical.o": compile_bpf("good_critical.c").read_bytes(),
        "myschedtp.o": compile_bpf("myschedtp.c").read_bytes(),
        "net/zz_last.o": compile_bpf("good_last.c").read_bytes(),
    }


@pytest.fixture
def volume(tmp_path: Path) -> Iterator[Path]:
    with kubelet.node_tmpfs(tmp_path / "node") as node:
        yield kubelet.make_volume(node / "volume")


@pytest.fixture
def mounted(volume: Path, tmp_path: Path) -> Iterator[Path]:
    """The volume where the pod's container sees it: read-only."""
    with kubelet.read_only_view(volume, tmp_path / "etc-bpf") as view:
        yield view


def test_the_kubelets_layout_is_built_as_the_kubelet_builds_it(volume, objects):
    version = kubelet.write(volume, objects)
    assert version.startswith("..") and len(version.split(".")[-1]) >= 9
    entries = {e.name: e for e in os.scandir(volume)}
    assert set(entries) == {version, "..data", "good_critical.o", "myschedtp.o", "net"}
    assert stat.S_IMODE(volume.stat().st_mode) == 0o777
    assert stat.S_IMODE((volume / version).stat().st_mode) == 0o755
    assert os.readlink(volume / "..data") == version
    assert os.readlink(volume / "myschedtp.o") == "..data/myschedtp.o"
    assert os.readlink(volume / "net") == "..data/net"
    assert stat.S_IMODE((volume / version / "myschedtp.o").stat().st_mode) == 0o644


def test_a_configmap_volume_loads(volume, objects, mounted, bpffs, bpfloader_cli):
    """Every object loads (the critical one too: before, the scan failed on `..data`), from the
    version `..data` names, pinned as from a plain directory; named by their visible paths."""
    kubelet.write(volume, objects)
    run = bpfloader_cli("load", "--dir", mounted, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    assert "objects: 3 loaded, 0 skipped, 0 failed" in run.stdout, run.stdout
    assert pins_in(bpffs) == CRITICAL_PINS | SCHED_PINS | NET_PINS
    assert not [p for p in os.listdir(bpffs) if p.startswith("..")]
    sched = (bpffs / "map_myschedtp_cpu_pid_map").stat()
    assert (sched.st_uid, sched.st_gid, stat.S_IMODE(sched.st_mode)) == (0, 4, 0o640)
    report = status_json(bpfloader_cli, mounted, bpffs)
    assert {o["path"]: o["status"] for o in report["objects"]} == {
        f"{mounted}/good_critical.o": "loaded",
        f"{mounted}/myschedtp.o": "loaded",
        f"{mounted}/net/zz_last.o": "loaded",
    }


def test_an_update_of_the_volume_is_applied_by_reload(
    volume, objects, mounted, bpffs, bpfloader_cli
):
    """The kubelet writes a new version (myschedtp.o gone, zz_last.o at the top instead of in
    net/): `reload` removes the gone objects' pins, loads the new one, keeps the unchanged."""
    kubelet.write(volume, objects)
    bpfloader_cli("load", "--dir", mounted, "--pin-root", bpffs, check=True)
    before = (bpffs / "prog_good_critical_tracepoint_sched_sched_switch").stat().st_ino
    kubelet.write(
        volume,
        {"good_critical.o": objects["good_critical.o"], "zz_last.o": objects["net/zz_last.o"]},
    )
    run = bpfloader_cli("reload", "--dir", mounted, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    top_last = {"map_zz_last_switch_count", "prog_zz_last_tracepoint_sched_sched_switch"}
    assert pins_in(bpffs) == CRITICAL_PINS | top_last
    assert (bpffs / "prog_good_critical_tracepoint_sched_sched_switch").stat().st_ino == before


def test_a_volume_seen_writable_is_refused(volume, objects, bpffs, bpfloader_cli):
    """The same 0777 directory, not through a read-only mount: anyone could rename in it, so
    every object is refused on one line, and nothing is pinned."""
    kubelet.write(volume, objects)
    run = bpfloader_cli("load", "--dir", volume, "--pin-root", bpffs)
    for name in objects:
        refusal = f"{volume}/{name}: refused: directory {volume} is {open_volume(volume)}; {WHY}"
        assert f"bpfloader: err: {refusal}" in run.stderr.splitlines(), run.stderr
    assert pins_in(bpffs) == set()


# -- the scan: what is listed, from where ------------------------------------------------------


def listed(source: Path) -> dict[str, str | None]:
    """Each object the scan finds: its name (relative) -> why it would be refused (None: not)."""
    with scan(str(source)) as tree:
        return {os.path.relpath(o.path, source): tree.directory(o.location).problem for o in tree}


def test_the_writers_names_are_never_objects_or_locations(tmp_path: Path):
    source = tmp_path / "plain"
    (source / "..loc").mkdir(parents=True)
    (source / "..loc" / "x.o").write_bytes(b"x")
    (source / "..x.o").write_bytes(b"x")
    (source / "a.o").write_bytes(b"x")
    assert listed(source) == {"a.o": None}


def test_a_data_link_someone_else_made_is_not_followed(tmp_path: Path):
    """Not a volume the kubelet wrote: `..data` is skipped and the directory listed as it is
    (so another user's `..data` in a sticky directory cannot refuse root's objects)."""
    source = tmp_path / "plain"
    (source / "..v").mkdir(parents=True)
    (source / "..v" / "theirs.o").write_bytes(b"x")
    (source / "a.o").write_bytes(b"x")
    (source / "..data").symlink_to("..v")
    os.chown(source / "..data", 65534, 65534, follow_symlinks=False)
    assert listed(source) == {"a.o": None}


@pytest.mark.parametrize(
    "target", ["/tmp", "..v/sub", "elsewhere", "..data", "..link", "..file"], ids=str
)
def test_a_data_link_to_no_version_refuses_the_volume(volume, mounted, target):
    """Root's `..data` that names no version directory of the volume (a path, a name not the
    writer's, itself, a link, a file): every visible object refused, nothing read through it."""
    (volume / "..v" / "sub").mkdir(parents=True)
    (volume / "..link").symlink_to("..v")
    (volume / "..file").write_bytes(b"")
    (volume / "..data").symlink_to(target)
    (volume / "x.o").symlink_to("..data/x.o")
    why = f"{mounted}/..data -> {target} names no version directory of the kubelet's volume"
    assert listed(mounted) == {"x.o": why}


def test_a_data_link_with_a_trailing_slash_is_followed(volume, mounted):
    """`..data -> ..VERSION/`, as the kubelet's own comment writes it."""
    (volume / "..v").mkdir(mode=0o755)
    (volume / "..v" / "x.o").write_bytes(b"x")
    (volume / "..data").symlink_to("..v/")
    (volume / "x.o").symlink_to("..data/x.o")
    assert listed(mounted) == {"x.o": None}


def test_a_version_directory_not_roots_is_refused(volume, objects, mounted):
    version = kubelet.write(volume, objects)
    os.chown(volume / version, 65534, 65534)
    problem = (
        f"directory {mounted}/{version} is owned by uid 65534, not root (mode 0755; fix: chown "
        f"root {mounted}/{version})"
    )
    assert listed(mounted) == {
        "good_critical.o": problem,
        "myschedtp.o": problem,
        "net/zz_last.o": problem,
    }


def test_listings_are_of_one_version_while_the_kubelet_updates(volume, mounted):
    """A writer process (root, as the kubelet) writes new versions of one payload (1000 files in
    a location) as fast as it can, while the loader's scan lists the volume again and again:
    each listing is of one whole version, never one half removed (the writer removes the old
    version right after each switch: a listing that ignored `..data` changing meanwhile
    catches it half removed)."""
    payload = {f"net/o{i:04}.o": b"x" for i in range(1000)}
    kubelet.write(volume, payload)
    pid = os.fork()
    if pid == 0:
        try:
            while True:
                kubelet.write(volume, payload)
        finally:
            os._exit(0)
    whole: set[str] = set()  # the versions listed whole
    partial = given_up = 0
    started = time.monotonic()
    try:
        while len(whole) < 50 and time.monotonic() - started < 10:
            try:
                with scan(str(mounted)) as tree:
                    names = {os.path.relpath(o.path, mounted) for o in tree}
                    version = tree.directory("").real
            except LoaderError as e:  # the kubelet changed `..data` on every try
                assert "changed 5 times while it was read" in str(e), e
                given_up += 1
                continue
            if names == set(payload):
                whole.add(version)
            else:
                partial += 1
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    print(f"{len(whole)} versions listed whole, {partial} partial, {given_up} given up")
    assert partial == 0
    assert len(whole) >= 10  # the versions did change under the scans, many times


def test_a_version_removed_as_it_is_listed_is_listed_again(volume, mounted, monkeypatch):
    """The interleaving the race above meets now and then, made to happen: the kubelet writes a
    new version (and removes the old one) just after the scan opened the version `..data`
    named. The scan sees `..data` changed and lists the new version; without that, it would
    list an empty directory, and a reload would unload every object."""
    kubelet.write(volume, {"old.o": b"x", "net/old.o": b"x"})
    opened = dirfd.open_directory_at

    def open_then_update(parent: Fd, name: str, where: str) -> Fd:
        fd = opened(parent, name, where)
        if name.startswith(".."):
            monkeypatch.setattr(dirfd, "open_directory_at", opened)  # once
            kubelet.write(volume, {"new.o": b"x", "net/new.o": b"x"})
        return fd

    monkeypatch.setattr(dirfd, "open_directory_at", open_then_update)
    assert listed(mounted) == {"new.o": None, "net/new.o": None}


def test_a_new_version_of_the_same_content_changes_nothing(
    volume, objects, mounted, bpffs, bpfloader_cli
):
    """The state records the visible paths, not the version directory's: after an update that
    changes no content, `reload` finds every object unchanged and makes nothing."""
    kubelet.write(volume, objects)
    bpfloader_cli("load", "--dir", mounted, "--pin-root", bpffs, check=True)
    before = {pin: (bpffs / pin).stat().st_ino for pin in pins_in(bpffs)}
    kubelet.write(volume, objects)  # a new version directory, the same files
    run = bpfloader_cli("reload", "--dir", mounted, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    assert "3 loaded, 0 skipped, 0 failed" in run.stderr, run.stderr
    assert "created map" not in run.stderr and "loaded program" not in run.stderr, run.stderr
    assert {pin: (bpffs / pin).stat().st_ino for pin in pins_in(bpffs)} == before
