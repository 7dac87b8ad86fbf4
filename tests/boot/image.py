"""The boot test's Debian image, built once and cached outside the repository in two layers.

- base (slow, ~2 min): debootstrap bookworm minbase with systemd, Python and the Debian packages
  bpfloader needs (and libbpf1, for the C peer), plus the Debian kernel; keyed by the recipe
  below.
- project (fast, ~30 s): a copy of the base with bpfloader's Debian package installed (built by
  scripts/build-deb, what `make deb` runs; its maintainer scripts enable bpfloader.service and
  update the journal catalog), the guest side of the test, and /etc/bpf filled with objects
  compiled on the host with our header; beside them the reference set (libbpf-style objects of
  the benchmark corpus) and the C peer that loads it (bench/libbpf_loader.c, compiled on the host
  against libbpf 1.1, the guest's); made into an ext4 image; keyed by the base, the package's
  bytes (the build is reproducible: the same tree gives the same .deb) and every other input.

Both live under BPFLOADER_BOOT_CACHE (default /var/cache/bpfloader-boot); a changed project
rebuilds only its layer, and older project images are removed. A lock serializes builders.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bench.corpus import heavy_source, tiny_source
from bpfloader.build import build

REPO = Path(__file__).resolve().parents[2]
GUEST = Path(__file__).parent / "guest"
CACHE = Path(os.environ.get("BPFLOADER_BOOT_CACHE", "/var/cache/bpfloader-boot"))

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# debootstrap --include: what the guest needs at boot (it has no network then).
BASE_PACKAGES = [
    "systemd",
    "systemd-sysv",
    "udev",
    "python3",
    "kmod",
    "libbpf1",  # the C peer's library (bench/libbpf_loader.c): bookworm's 1.1, as on the host
]
KERNEL_PACKAGES = ["linux-image-amd64", "initramfs-tools"]
# A second kernel, older than 5.19: there kernel.unprivileged_bpf_disabled refuses every bpf()
# call to processes without CAP_BPF, so the old-kernel policy has something to do.
OLD_KERNEL_SUITE, OLD_KERNEL_SERIES = "bullseye", "5.10."
# A small initramfs: the modules to mount a virtio disk formatted ext4, nothing else.
INITRAMFS_MODULES = ["virtio_pci", "virtio_blk", "ext4"]
BASE_RECIPE = 1  # bump when the base recipe changes in a way the values above do not show

# Objects for the image: (source, where in the guest), compiled on the host with our header:
# every example, the kprobe example, a rejected object, and those the checks add later.
OBJECTS = [
    *((source, f"etc/bpf/{source.stem}.o") for source in sorted(REPO.glob("etc/bpf/*.c"))),
    (REPO / "tests/bpf/boot_kprobe.c", "etc/bpf/boot_kprobe.o"),
    (REPO / "tests/bpf/bad_verifier.c", "etc/bpf/bad_verifier.o"),  # rejected by the verifier
    (REPO / "tests/bpf/boot_attached.c", "etc/bpf/boot_attached.o"),  # with boot_attached.policy
    (REPO / "tests/bpf/good_last.c", "usr/share/bpfloader-boot-test/added/good_last.o"),
    (
        REPO / "tests/bpf/bad_critical_verifier.c",
        "usr/share/bpfloader-boot-test/critical/bad_critical.o",
    ),
]
# libbpf-style objects for the image, compiled on the host with libbpf's headers against the
# host's vmlinux.h (their CO-RE relocations fit them to the guest's kernel).
LIBBPF_OBJECTS = [
    (
        REPO / "tests/bpf/ksyms/ksyms_module.c",
        "usr/share/bpfloader-boot-test/ksyms/ksyms_module.o",
    ),
]
# The reference set: libbpf-style objects of the benchmark corpus, from its generator
# (bench/corpus.py): small ones (8 programs of distinct types, BTF-defined maps and global data
# each) and verifier-heavier ones (bounded loops, 10^4..10^5 instructions verified each). Once the
# boot has finished, the checker has bpfloader and the C peer load exactly this set, one after
# the other (bpfloader-boot-same.service, bpfloader-boot-peer.service).
REFERENCE_TINY, REFERENCE_HEAVY = 4, 2
REFERENCE_DIR = "usr/share/bpfloader-boot-test/reference"
REFERENCE_LIST = "usr/share/bpfloader-boot-test/reference.env"  # the peer's OBJECTS
PEER_SOURCE = REPO / "bench/libbpf_loader.c"
PEER = "usr/share/bpfloader-boot-test/libbpf_loader"
GUEST_UNITS = [
    "bpfloader-boot-reader.service",
    "bpfloader-boot-bpfprogram.service",
    "bpfloader-boot-check.service",
    "bpfloader-boot-critical.service",
]
# Installed, not enabled: the checker starts them after the boot.
REFERENCE_UNITS = ["bpfloader-boot-same.service", "bpfloader-boot-peer.service"]
# The old-kernel policy, opted into as an administrator would.
DEFAULTS = 'BPFLOADER_OPTIONS="--lower-unprivileged-bpf-disabled"\n'


@dataclass(frozen=True)
class Kernel:
    release: str
    image: Path
    initrd: Path


@dataclass(frozen=True)
class BootImage:
    kernel: Kernel  # bookworm's
    old_kernel: Kernel  # bullseye's 5.10
    disk: Path  # ext4, booted with snapshot=on: never written


def ensure_image(log: Path) -> BootImage:
    """The current image, built first if the cache does not hold it. Build output goes to `log`."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE / "lock"), open(log, "a") as out:
        steps = Steps(out)
        base = _ensure_base(steps)
        with tempfile.TemporaryDirectory(prefix="deb-", dir=CACHE) as packages:
            deb = build_deb(Path(packages), steps)
            disk = _ensure_project(base, deb, steps)
    kernels = _kernels(base / "rootfs" / "boot")
    (old,) = (k for k in kernels if k.release.startswith(OLD_KERNEL_SERIES))
    (current,) = (k for k in kernels if k is not old)
    return BootImage(current, old, disk)


@contextlib.contextmanager
def base_rootfs(log: Path) -> Iterator[Path]:
    """The base layer's root file system, built first if need be, held (no builder replaces it)
    while in use. Never write to it: mount an overlay on it (tests/packaging/test_deb.py)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with _locked(CACHE / "lock"), open(log, "a") as out:
        yield _ensure_base(Steps(out)) / "rootfs"


def build_deb(outdir: Path, steps: Steps) -> Path:
    """bpfloader_VERSION_all.deb, built from this checkout into `outdir` by scripts/build-deb."""
    steps.run(str(REPO / "scripts/build-deb"), str(outdir))
    (deb,) = outdir.glob("bpfloader_*_all.deb")
    return deb


def base_key() -> str:
    recipe = [SUITE, MIRROR, BASE_PACKAGES, KERNEL_PACKAGES, INITRAMFS_MODULES, BASE_RECIPE]
    recipe += [OLD_KERNEL_SUITE, OLD_KERNEL_SERIES]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]


def project_key(base: Path, deb: Path) -> str:
    digest = hashlib.sha256(base.name.encode())
    digest.update(hashlib.sha256(deb.read_bytes()).digest())
    files = [GUEST, Path(__file__), REPO / "bench/corpus.py", PEER_SOURCE]
    files += [source for source, _ in (*OBJECTS, *LIBBPF_OBJECTS)]
    for path in sorted(_files_under(files)):
        digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    digest.update(DEFAULTS.encode())
    return digest.hexdigest()[:16]


def _files_under(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from (p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
        else:
            yield path


def _kernels(boot: Path) -> list[Kernel]:
    found = []
    for image in sorted(boot.glob("vmlinuz-*")):
        release = image.name.removeprefix("vmlinuz-")
        found.append(Kernel(release, image, boot / f"initrd.img-{release}"))
    return found


class Steps:
    """Build steps as processes, their output appended to the build log."""

    def __init__(self, out: TextIO):
        self.out = out

    def run(self, *command: str, capture: bool = False) -> str:
        self.out.write(f"$ {' '.join(command)}\n")
        self.out.flush()
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        done = subprocess.run(
            command,
            stdout=subprocess.PIPE if capture else self.out,
            stderr=self.out,
            env=env,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"image build step failed (exit {done.returncode}): {command}")
        return done.stdout or ""

    def chroot(self, root: Path, *command: str, capture: bool = False) -> str:
        return self.run("chroot", str(root), *command, capture=capture)


# -- the base layer ------------------------------------------------------------------------


def _ensure_base(steps: Steps) -> Path:
    final = CACHE / f"base-{base_key()}"
    if (final / "rootfs" / "boot").is_dir():
        return final
    _remove_others("base-", final)
    work = Path(tempfile.mkdtemp(prefix="building-base-", dir=CACHE))
    try:
        root = work / "rootfs"
        include = f"--include={','.join(BASE_PACKAGES)}"
        steps.run("debootstrap", "--variant=minbase", include, SUITE, str(root), MIRROR)
        _write(root / "etc/initramfs-tools/conf.d/bpfloader-boot", "MODULES=list\nCOMPRESS=gzip\n")
        _write(
            root / "usr/share/initramfs-tools/modules.d/bpfloader-boot",
            "\n".join(INITRAMFS_MODULES) + "\n",
        )
        with chroot_mounts(root):
            steps.chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends",
                         *KERNEL_PACKAGES)  # fmt: skip
            _install_old_kernel(root, steps)
        steps.chroot(root, "apt-get", "clean")
        os.rename(work, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _install_old_kernel(root: Path, steps: Steps) -> None:
    """The old suite's kernel image, from that suite's archive, enabled for this install only."""
    sources = root / "etc/apt/sources.list.d/old-kernel.list"
    _write(sources, f"deb {MIRROR} {OLD_KERNEL_SUITE} main\n")
    try:
        steps.chroot(root, "apt-get", "update", "-q")
        shown = steps.chroot(
            root, "apt-cache", "show", f"linux-image-amd64/{OLD_KERNEL_SUITE}", capture=True
        )
        depends = next(line for line in shown.splitlines() if line.startswith("Depends:"))
        package = depends.split(":", 1)[1].split(",")[0].split("(")[0].strip()
        steps.chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends", package)
    finally:
        sources.unlink()
        steps.chroot(root, "apt-get", "update", "-q")


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[None]:
    mounts = [
        (root / "proc", ["-t", "proc", "proc"]),
        (root / "sys", ["-t", "sysfs", "sysfs"]),
        (root / "dev", ["--bind", "/dev"]),
    ]
    done: list[Path] = []
    try:
        for target, args in mounts:
            subprocess.run(["mount", *args, str(target)], check=True)
            done.append(target)
        yield
    finally:
        for target in reversed(done):
            subprocess.run(["umount", "-l", str(target)], check=False)


# -- the project layer ---------------------------------------------------------------------


def _ensure_project(base: Path, deb: Path, steps: Steps) -> Path:
    final = CACHE / f"project-{project_key(base, deb)}.ext4"
    if final.exists():
        return final
    _remove_others("project-", final)
    work = Path(tempfile.mkdtemp(prefix="building-project-", dir=CACHE))
    try:
        root = work / "rootfs"
        steps.run("cp", "-a", str(base / "rootfs"), str(root))
        _install_project(root, deb, work / "objects", steps)
        size = f"{int(sum(_sizes(root)) / 2**20 * 1.3) + 256}M"
        image = work / "disk.ext4"
        steps.run("mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(image), size)
        os.rename(image, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _install_project(root: Path, deb: Path, objects: Path, steps: Steps) -> None:
    install_deb(root, deb, steps)
    _write(root / "etc/default/bpfloader", DEFAULTS)
    vmlinux = objects / "vmlinux"
    vmlinux.mkdir(parents=True)
    with open(vmlinux / "vmlinux.h", "w") as header:
        dump = ["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"]
        subprocess.run(dump, stdout=header, check=True, timeout=120)
    libbpf_flags = ["-I", str(vmlinux), "-D__TARGET_ARCH_x86"]
    for source, target, flags in (
        *((source, target, []) for source, target in OBJECTS),
        *((source, target, libbpf_flags) for source, target in LIBBPF_OBJECTS),
    ):
        (built,) = build([str(source)], str(objects), flags)
        (root / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.move(built, root / target)
    _install_reference(root, objects / "reference", steps)
    for script in ("check.py", "reader.py"):
        shutil.copy(GUEST / script, root / "usr/share/bpfloader-boot-test" / script)
    shutil.copy(GUEST / "boot_attached.policy", root / "etc/bpf/boot_attached.policy")
    for unit in (*GUEST_UNITS, *REFERENCE_UNITS):
        shutil.copy(GUEST / unit, root / "etc/systemd/system" / unit)
    steps.run("systemctl", f"--root={root}", "enable", *GUEST_UNITS)
    _write(root / "etc/fstab", "/dev/vda / ext4 rw 0 1\n")
    _write(root / "etc/hostname", "bpfloader-boot\n")


def _install_reference(root: Path, work: Path, steps: Steps) -> None:
    """The reference set, generated and compiled as the benchmark's corpus is (with BTF), the
    list of its objects for the peer's unit, and the peer itself, linked against the host's
    libbpf 1.1 (the guest's libbpf1 is the same release)."""
    sources = []
    for name, count, make in (
        ("tiny", REFERENCE_TINY, tiny_source),
        ("heavy", REFERENCE_HEAVY, heavy_source),
    ):
        for index in range(count):
            source = work / f"{name}_{index:02d}.c"
            _write(source, make(index)[0])
            sources.append(str(source))
    target = root / REFERENCE_DIR
    target.mkdir(parents=True)
    for built in build(sources, str(work / "objects")):
        shutil.move(built, target)
    guest = sorted(f"/{REFERENCE_DIR}/{obj.name}" for obj in target.glob("*.o"))
    _write(root / REFERENCE_LIST, f'OBJECTS="{" ".join(guest)}"\n')
    steps.run("cc", "-O2", "-Wall", "-o", str(root / PEER), str(PEER_SOURCE), "-lbpf", "-lpthread")


def install_deb(root: Path, deb: Path, steps: Steps) -> None:
    """`apt install ./bpfloader_*_all.deb` in the root, as the README says, needing nothing from
    the network: the base holds the package's dependencies, and its recommends (clang, llvm) are
    left out (the objects are built on the host)."""
    inside = Path("/tmp") / deb.name
    shutil.copy(deb, root / inside.relative_to("/"))
    try:
        with chroot_mounts(root):
            steps.chroot(root, "apt-get", "install", "-y", "-q", "--no-install-recommends",
                         str(inside))  # fmt: skip
    finally:
        (root / inside.relative_to("/")).unlink()


def _sizes(root: Path) -> Iterator[int]:
    for directory, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                yield os.lstat(os.path.join(directory, name)).st_size


# -- helpers -------------------------------------------------------------------------------


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _remove_others(prefix: str, keep: Path) -> None:
    for old in CACHE.glob(f"{prefix}*"):
        if old != keep:
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield
