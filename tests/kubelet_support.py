"""A ConfigMap volume as the kubelet writes it, and as a pod sees it (a read-only bind mount).

The kubelet's atomic writer (Kubernetes' pkg/volume/util/atomic_writer.go), step by step:
the volume's directory is an emptyDir (root's, mode 0777, not sticky); each version of the
payload is written in a directory of its own, `..YYYY_MM_DD_HH_MM_SS.DIGITS` (made 0755), its
files given their mode (the ConfigMap's defaultMode, 0644); a link `..data_tmp` to that
directory is renamed over `..data`; each top name of the payload is a link `NAME -> ..data/NAME`
(made once, kept across versions); names gone from the payload are removed; then the previous
version's directory is removed. The tests build exactly this, with the same names and modes.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

DATA = "..data"
FILE_MODE = 0o644  # a ConfigMap volume's defaultMode
_versions = itertools.count(100000000)


def version_name() -> str:
    """A version directory's name as os.MkdirTemp makes it from the writer's pattern."""
    stamp = time.strftime("%Y_%m_%d_%H_%M_%S", time.gmtime())
    return f"..{stamp}.{next(_versions)}"


def make_volume(volume: Path) -> Path:
    """The volume's directory, as the kubelet's emptyDir makes it."""
    volume.mkdir()
    volume.chmod(0o777)
    return volume


@contextlib.contextmanager
def node_tmpfs(where: Path) -> Iterator[Path]:
    """A tmpfs mounted at `where` (made here) to hold volumes: the kubelet's writes there take
    microseconds, not the milliseconds of this machine's disk, so updates race with readers
    as often as a test needs. Unmounted when the block ends."""
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def write(volume: Path, payload: dict[str, bytes]) -> str:
    """One write of the atomic writer: `payload` (path in the volume -> content) becomes the
    volume's current version; the previous one is removed. The new version's name."""
    old = os.readlink(volume / DATA) if (volume / DATA).is_symlink() else None
    version = version_name()
    os.mkdir(volume / version)
    os.chmod(volume / version, 0o755)
    for path, data in payload.items():
        target = volume / version / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(FILE_MODE)
    os.symlink(version, volume / "..data_tmp")
    os.rename(volume / "..data_tmp", volume / DATA)
    tops = {path.split("/")[0] for path in payload}
    for top in tops:
        if not (volume / top).is_symlink():
            os.symlink(f"{DATA}/{top}", volume / top)
    for entry in os.listdir(volume):
        if not entry.startswith("..") and entry not in tops:
            os.unlink(volume / entry)
    if old is not None:
        shutil.rmtree(volume / old)
    return version


@contextlib.contextmanager
def read_only_view(volume: Path, where: Path) -> Iterator[Path]:
    """`volume` bind-mounted read-only at `where` (made here), as a pod's container sees a
    ConfigMap volume; unmounted when the block ends."""
    where.mkdir()
    subprocess.run(["mount", "--bind", str(volume), str(where)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(where)], check=True)
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)
