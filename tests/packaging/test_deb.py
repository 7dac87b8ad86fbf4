"""The Debian package (`make deb`: scripts/build-deb, debian/): built with Debian's own tools,
linted, and installed with apt into a fresh Debian root, where its command runs, its files are
where Debian puts them, bpfloader.service is enabled (bpfloader.path is not), systemd's trigger
has indexed the journal catalog, and the installed loader loads an object into a private bpffs.
Removing it keeps /etc/default/bpfloader (a conffile, an administrator's edit included) and the
object cache; purging removes them and every trace in systemd's configuration.

The fresh root is an overlay on the boot test's debootstrap base (tests/boot/image.py: Debian
bookworm with the package's dependencies, built once and cached), so nothing here writes to the
host or to the cache. The boot test installs the same package in its guest and boots it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfloader.version import __version__
from tests.boot.image import Steps, base_rootfs, chroot_mounts, install_deb
from tests.conftest import REPO, Compile, pins_in

pytestmark = pytest.mark.kernel  # root: chroot and mounts; the installed loader loads

UNITS = ["bpfloader.service", "bpfloader-bpffs.service", "bpfloader-reload.service"]
UNITS += ["bpfloader.path"]
UNIT_DIR = "lib/systemd/system"  # debhelper's, on bookworm
CATALOG_IDS = re.findall(
    r"^-- ([0-9a-f]{32})$", (REPO / "systemd/bpfloader.catalog").read_text(), re.MULTILINE
)


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built offline: in a network namespace of its own, with no interface up but loopback."""
    out = tmp_path_factory.mktemp("deb")
    done = subprocess.run(
        ["unshare", "--net", str(REPO / "scripts/build-deb"), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, f"build-deb failed:\n{done.stdout[-3000:]}\n{done.stderr}"
    return out / f"bpfloader_{__version__}_all.deb"


def test_same_tree_builds_the_same_deb(deb: Path, tmp_path: Path) -> None:
    """Byte for byte (reproducible builds): the boot test's image cache is keyed on the .deb."""
    done = subprocess.run(
        [str(REPO / "scripts/build-deb"), str(tmp_path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / deb.name).read_bytes() == deb.read_bytes()


def field(deb: Path, name: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", str(deb), name], capture_output=True, text=True, check=True
    ).stdout.strip()


def members(deb: Path) -> set[str]:
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(deb)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split()[5].removeprefix("./") for line in listing.splitlines()}


def test_deb_named_by_version_with_debian_relations(deb: Path) -> None:
    assert deb.is_file()
    assert (field(deb, "Package"), field(deb, "Version")) == ("bpfloader", __version__)
    assert field(deb, "Architecture") == "all"
    depends = [d.strip() for d in field(deb, "Depends").split(",")]
    assert "python3:any (>= 3.11~)" in depends
    assert field(deb, "Recommends") == "clang, llvm"


def test_deb_depends_on_python3_systemd_while_the_loader_imports_it(deb: Path) -> None:
    """debian/control's python3-systemd line goes with the last `import systemd` in the loader."""
    sources = (p.read_text() for p in (REPO / "bpfloader").rglob("*.py"))
    imports = any(re.search(r"^\s*(from|import) systemd\b", s, re.MULTILINE) for s in sources)
    depends = [d.strip() for d in field(deb, "Depends").split(",")]
    assert ("python3-systemd" in depends) == imports, depends


def test_lintian_clean_and_every_override_says_why(deb: Path) -> None:
    done = subprocess.run(
        ["lintian", "--info", "--display-experimental", "--pedantic", "--show-overrides", deb],
        capture_output=True,
        text=True,
        timeout=300,
    )
    tags = [line for line in done.stdout.splitlines() if re.match(r"[EWIPX]: ", line)]
    assert tags == [], done.stdout
    assert done.returncode == 0, done.stdout + done.stderr
    overrides = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True
    ).stdout
    text = _member_text(overrides, "./usr/share/lintian/overrides/bpfloader")
    reason = ""  # lintian gives a comment to the overrides that follow it, up to a blank line
    for line in text.splitlines():
        if line.startswith("#"):
            reason += line
        elif not line.strip():
            reason = ""
        else:
            assert reason, f"override without its reason: {line}"


def _member_text(tar: bytes, name: str) -> str:
    return subprocess.run(
        ["tar", "-xOf", "-", name], input=tar, capture_output=True, check=True
    ).stdout.decode()


def test_deb_contents(deb: Path) -> None:
    files = members(deb)
    expected = [
        "usr/bin/bpfloader",
        *(f"{UNIT_DIR}/{unit}" for unit in UNITS),
        "usr/lib/systemd/catalog/bpfloader.catalog",
        "etc/default/bpfloader",
        "etc/bpf/",
        "usr/share/doc/bpfloader/README.md",  # uncompressed: the units' Documentation= names it
        "usr/share/doc/bpfloader/copyright",
        "usr/share/doc/bpfloader/kubernetes.md.gz",  # dh_compress: a document over 4 KiB
        "usr/share/doc/bpfloader/examples/myschedtp.c",
        "usr/lib/python3/dist-packages/bpfloader/include/bpf_helpers.h",
        "usr/lib/python3/dist-packages/bpfloader/client/__init__.py",
    ]
    assert [f for f in expected if f not in files] == []
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]  # py3compile's
    control = subprocess.run(
        ["dpkg-deb", "--info", str(deb), "conffiles"], capture_output=True, text=True, check=True
    )
    assert control.stdout.split() == ["/etc/default/bpfloader"]
    # The man page and completions of share/ (made from the argument parser), Debian's places.
    assert {
        "usr/share/man/man8/bpfloader.8.gz",
        "usr/share/bash-completion/completions/bpfloader",
        "usr/share/zsh/vendor-completions/_bpfloader",
    } <= set(files)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The boot test's base root file system, held for this module (no builder replaces it)."""
    if os.geteuid() != 0:
        pytest.fail("installing the package into a fresh root needs root (overlay, chroot)")
    log = tmp_path_factory.mktemp("base") / "build.log"
    try:
        with base_rootfs(log) as rootfs:
            yield rootfs
    except RuntimeError as e:
        pytest.fail(f"the base image: {e}\n{log.read_text()[-3000:]}")


@pytest.fixture
def fresh_root(base: Path, tmp_path: Path) -> Iterator[Path]:
    """A Debian root of its own: an overlay on the base, thrown away after the test."""
    upper, work, root = (tmp_path / name for name in ("upper", "work", "root"))
    for directory in (upper, work, root):
        directory.mkdir()
    options = f"lowerdir={base},upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, root], check=True)
    try:
        yield root
    finally:
        subprocess.run(["umount", root], check=True)


def install(root: Path, deb: Path, tmp_path: Path) -> None:
    log = tmp_path / "install.log"
    with open(log, "w") as out:
        try:
            install_deb(root, deb, Steps(out))
        except RuntimeError as e:
            pytest.fail(f"{e}\n{log.read_text()[-3000:]}")


def chroot(root: Path, *command: str, ok: tuple[int, ...] = (0,)) -> str:
    done = subprocess.run(
        ["chroot", str(root), *command], capture_output=True, text=True, timeout=300
    )
    assert done.returncode in ok, f"{command} exited {done.returncode}:\n{done.stdout}{done.stderr}"
    return done.stdout


def test_installed_in_a_fresh_root(deb: Path, fresh_root: Path, tmp_path: Path) -> None:
    root = fresh_root
    install(root, deb, tmp_path)
    assert chroot(root, "bpfloader", "--version") == f"bpfloader {__version__}\n"
    assert chroot(root, "dpkg-query", "-W", "-f", "${Status}", "bpfloader") == (
        "install ok installed"
    )
    assert (root / "usr/bin/bpfloader").read_text().startswith("#!/usr/bin/python3\n")
    for unit in UNITS:
        text = (root / UNIT_DIR / unit).read_text()
        for command in re.findall(r"^Exec\w*=(\S+)", text, re.MULTILINE):
            assert command in ("/usr/bin/bpfloader", "mount", "systemctl"), (unit, command)
        assert "Documentation=file:///usr/share/doc/bpfloader/README.md" in text, unit
    assert (root / "usr/share/doc/bpfloader/README.md").is_file()
    assert (root / "etc/default/bpfloader").read_text() == (
        (REPO / "systemd/bpfloader.default").read_text()
    )
    assert (root / "etc/bpf").is_dir()
    # Enabled as the package says: the loader at every boot, the path unit off.
    wants = root / "etc/systemd/system/sysinit.target.wants/bpfloader.service"
    assert os.readlink(wants) == f"/{UNIT_DIR}/bpfloader.service"
    is_enabled = ["systemctl", f"--root={root}", "is-enabled"]
    for unit, state in [("bpfloader.service", "enabled"), ("bpfloader.path", "disabled")]:
        done = subprocess.run([*is_enabled, unit], capture_output=True, text=True)
        assert done.stdout.strip() == state, (unit, done.stdout, done.stderr)
    # systemd's trigger on /usr/lib/systemd/catalog ran `journalctl --update-catalog`.
    listed = chroot(root, "journalctl", "--list-catalog", "--no-pager")
    assert [i for i in CATALOG_IDS if i not in listed] == []


def test_installed_loader_loads(
    deb: Path, fresh_root: Path, tmp_path: Path, compile_bpf: Compile
) -> None:
    """The package's loader, with Debian's python3 and nothing of the checkout, in its root:
    loads an object into a bpffs of the test's, pinned with the owner the object declares."""
    root = fresh_root
    install(root, deb, tmp_path)
    objects, pin_root = root / "tmp/objects", root / "tmp/bpffs"
    objects.mkdir(mode=0o755)
    pin_root.mkdir()
    shutil.copy(compile_bpf("myschedtp.c"), objects / "myschedtp.o")
    subprocess.run(["mount", "-t", "bpf", "bpf", pin_root], check=True)
    try:
        with chroot_mounts(root):
            out = chroot(
                root,
                "bpfloader",
                "load",
                *["--dir", "/tmp/objects", "--pin-root", "/tmp/bpffs"],
                *["--state-dir", "/tmp/state", "--log-target", "console"],
            )
        assert "1 loaded, 0 skipped, 0 failed" in out, out
        assert pins_in(pin_root) == {
            "map_myschedtp_cpu_pid_map",
            "prog_myschedtp_tracepoint_sched_sched_switch",
        }
        assert (pin_root / "map_myschedtp_cpu_pid_map").stat().st_gid == 4  # adm
    finally:
        subprocess.run(["umount", pin_root], check=True)


def test_remove_keeps_the_conffile_and_purge_leaves_nothing(
    deb: Path, fresh_root: Path, tmp_path: Path
) -> None:
    root = fresh_root
    install(root, deb, tmp_path)
    defaults = root / "etc/default/bpfloader"
    edited = 'BPFLOADER_OPTIONS="--lower-unprivileged-bpf-disabled"\n'
    defaults.write_text(edited)
    shutil.copy(deb, root / "tmp" / deb.name)
    chroot(root, "dpkg", "--install", f"/tmp/{deb.name}")  # reinstalled: the edit stays
    assert defaults.read_text() == edited
    cache = root / "var/cache/bpfloader"  # as the unit's CacheDirectory= makes it, filled
    cache.mkdir(mode=0o700)
    (cache / ("0" * 64)).write_bytes(b"an entry")
    chroot(root, "dpkg", "--remove", "bpfloader")
    assert not (root / "usr/bin/bpfloader").exists()
    assert not (root / UNIT_DIR / "bpfloader.service").exists()
    assert defaults.read_text() == edited
    assert (cache / ("0" * 64)).exists()  # a remove keeps it, as the conffile
    chroot(root, "dpkg", "--purge", "bpfloader")
    assert not defaults.exists()
    assert not cache.exists()
    assert [str(p) for p in (root / "etc/systemd").rglob("*bpfloader*")] == []
    assert not (root / "usr/lib/python3/dist-packages/bpfloader").exists()
