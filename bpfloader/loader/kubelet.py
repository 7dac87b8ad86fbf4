"""A source directory the kubelet wrote: a ConfigMap (or projected) volume, as a pod sees it.

The kubelet's atomic writer keeps each version of a volume in a directory of its own, named
`..` and a timestamp (`..2026_12_07_10_00_00.123456789`), points the link `..data` at the
current one, and makes each visible name a link through it (`x.o -> ..data/x.o`; `net ->
..data/net` for items in a subdirectory). An update writes the new version's directory,
renames a new `..data` over the old link, then removes the old version. Names starting with
`..` are the writer's own: never an object or a location, in any source directory.

The loader reads such a volume as the writer means it to be read: through `..data`. The link
is read, the directory it names opened by that name in the volume's fd (`O_NOFOLLOW`), and the
objects and locations are listed and opened from that directory's fd: one version, whatever the
kubelet does meanwhile (the listing is made again when `..data` changed while it was made, for
the old version's files are removed right after). The visible links are not read; objects keep
their visible names (`/etc/bpf/x.o`), which the state, the journal and `status` use.

Trust. `..data` is followed only when root owns it, as every link (dirfd.py); one someone else
made is a writer's name like any other, skipped. It must name a `..` directory of the volume
itself, which then passes the directory check. The volume's own directory is the kubelet's
emptyDir: root's, mode 0777, not sticky (Kubernetes makes it so and no pod setting changes
it), which the trust rule refuses. It is accepted, for this layout only, where the loader sees
it through a read-only mount, as the kubelet mounts ConfigMap volumes in every container:
nothing in the pod can change it then, and on the node only root reaches it (the kubelet's
/var/lib/kubelet is 0750). That last fact is the node's, which the loader cannot see from the
pod: the one thing here taken on trust. Where the loader sees the volume writable it stays
refused.
"""

from __future__ import annotations

import errno
import os
import stat

from bpfloader.kernel.fd import Fd
from bpfloader.loader.trust import directory_problem

DATA = "..data"
# Versions read in turn before a volume the kubelet keeps updating is given up on (an update
# takes it milliseconds; it syncs a volume about once a minute).
TRIES = 5


def is_writers(name: str) -> bool:
    """Whether `name` is the atomic writer's own (`..data`, a version's directory, the
    `..data_tmp` of an update): never an object or a location."""
    return name.startswith("..")


def data_link(volume: Fd) -> str | None:
    """What root's `..data` link in the directory `volume` names; None where there is no such
    link (not a volume the kubelet wrote)."""
    try:
        st = os.stat(DATA, dir_fd=volume.number, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode) or st.st_uid != 0:
            return None
        return os.readlink(DATA, dir_fd=volume.number)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.EINVAL):  # none, or no link now
            return None
        raise


def version_name(target: str) -> str | None:
    """The name of the version directory `..data`'s target names (`..2026_...`, or with a
    trailing `/`); None for any other target."""
    name = target.removesuffix("/")
    if "/" in name or not is_writers(name) or name in ("..", DATA):
        return None
    return name


def volume_problem(volume: Fd, path: str) -> str | None:
    """Why the directory of a volume the kubelet wrote is not trusted, or None: the directory
    check, less its writable bits where the loader sees it through a read-only mount (root's
    still, and not the check of any other directory)."""
    st = os.fstat(volume.number)
    problem = directory_problem(st, path)
    if problem is not None and st.st_uid == 0 and read_only(volume):
        return None
    return problem


def read_only(directory: Fd) -> bool:
    """Whether the directory is on a read-only mount where this process sees it."""
    return bool(os.fstatvfs(directory.number).f_flag & os.ST_RDONLY)
