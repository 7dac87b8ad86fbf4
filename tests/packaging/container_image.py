"""The Dockerfile's image, built by the tests with Debian's buildah (`--isolation=chroot`), offline.

- base (slow, once): a Debian bookworm tree made by debootstrap, as the boot test makes its own
  (tests/boot/image.py), with the Dockerfile's own package list (its `ARG PACKAGES`), imported
  into a private buildah storage as a local image (`buildah from scratch`, the tree copied in,
  committed): `localhost/bpfloader-test-base:KEY`, KEY from the suite, the mirror, the package
  list and the recipe. Kept in the boot test's cache (BPFLOADER_BOOT_CACHE, default
  /var/cache/bpfloader-boot: outside the repository) under its lock; an older base is removed.
- image (each run): the repository's Dockerfile built on that base (`--build-arg BASE=...`,
  `--pull=never`) by a buildah run in a network namespace of its own, whose only interface is a
  loopback that is down: nothing can be fetched, from a registry, Debian or PyPI.
- container: a working container of the image, where `run()` runs commands with chosen mounts
  (as a pod's container gets its volumes); removed by `remove()`.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.boot.image import CACHE, MIRROR, SUITE, Steps, _locked, _remove_others
from tests.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"
BASE_IMAGE = "localhost/bpfloader-test-base"
BASE_RECIPE = 1  # bump when the base recipe changes in a way the key's values do not show
STORAGE = CACHE / "containers"


def dockerfile_packages() -> list[str]:
    """The Debian packages the Dockerfile installs (its `ARG PACKAGES` default)."""
    text = DOCKERFILE.read_text().replace("\\\n", "")
    (packages,) = re.findall(r'^ARG PACKAGES="([^"]*)"$', text, re.MULTILINE)
    return packages.split()


def base_key() -> str:
    recipe = [SUITE, MIRROR, dockerfile_packages(), BASE_RECIPE]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:16]


def buildah(*args: str) -> list[str]:
    """A buildah command line on the tests' own storage (never the host's /var/lib/containers)."""
    storage = ["--root", str(STORAGE / "storage"), "--runroot", str(STORAGE / "run")]
    return ["buildah", *storage, "--storage-driver", "overlay", *args]


def ensure_base(log: Path) -> str:
    """The base image's name, made first if the cache does not hold it (output to `log`)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    name = f"{BASE_IMAGE}:{base_key()}"
    with _locked(CACHE / "lock"), open(log, "a") as out:
        steps = Steps(out)
        images = steps.run(*buildah("images", "--format", "{{.Name}}:{{.Tag}}"), capture=True)
        if name in images.split():
            return name
        for old in images.split():
            if old.startswith(f"{BASE_IMAGE}:"):
                steps.run(*buildah("rmi", "--force", old))
        _remove_others("building-container-base-", CACHE / "none")
        work = Path(tempfile.mkdtemp(prefix="building-container-base-", dir=CACHE))
        try:
            root = work / "rootfs"
            include = f"--include={','.join(dockerfile_packages())}"
            steps.run("debootstrap", "--variant=minbase", include, SUITE, str(root), MIRROR)
            steps.chroot(root, "apt-get", "clean")
            container = steps.run(*buildah("from", "scratch"), capture=True).strip()
            mounted = steps.run(*buildah("mount", container), capture=True).strip()
            steps.run("cp", "-a", f"{root}/.", mounted)
            steps.run(*buildah("umount", container))
            steps.run(*buildah("commit", "--rm", "--quiet", container, name))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return name


def build_image(base: str, tag: str, log: Path) -> None:
    """The Dockerfile built on `base` as `tag`, with no network (output to `log`)."""
    with open(log, "a") as out:
        command = buildah(
            "build",
            "--isolation=chroot",
            "--pull=never",
            f"--build-arg=BASE={base}",
            "--tag",
            tag,
            "--file",
            str(DOCKERFILE),
            str(REPO),
        )
        Steps(out).run("unshare", "--net", "--", *command)


def remove_image(tag: str) -> None:
    subprocess.run(buildah("rmi", "--force", tag), capture_output=True, check=False)


@dataclass(frozen=True)
class Container:
    """A working container of an image: commands run in it with `run`; its root on the host."""

    name: str
    root: Path

    @classmethod
    def of(cls, image: str) -> Container:
        name = _output(buildah("from", "--pull=never", "--quiet", image))
        return cls(name, Path(_output(buildah("mount", name))))

    def command(self, *argv: str, volumes: tuple[str, ...] = ()) -> list[str]:
        """The command line that runs `argv` in the container, with the capabilities of the
        systemd unit (the narrow set docs/kubernetes.md names) and the volumes
        `SOURCE:TARGET[:OPTIONS]`."""
        caps = [f"--cap-add={cap}" for cap in unit_capabilities()]
        mounts = [f"--volume={volume}" for volume in volumes]
        return buildah("run", "--isolation=chroot", *caps, *mounts, self.name, "--", *argv)

    def remove(self) -> None:
        subprocess.run(buildah("rm", self.name), capture_output=True, check=False)


def unit_capabilities() -> list[str]:
    """The capabilities bpfloader.service keeps (its CapabilityBoundingSet)."""
    text = (REPO / "systemd/bpfloader.service").read_text()
    (line,) = re.findall(r"^CapabilityBoundingSet=(.*)$", text, re.MULTILINE)
    return line.split()


def _output(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
