"""Attaching cgroup programs to a cgroup v2 directory: a cgroup link, or BPF_PROG_ATTACH on
kernels without links (5.7+ have them)."""

from __future__ import annotations

import errno
import os

from bpfloader.client.attachment import AttachableProgram, Attachment
from bpfloader.errors import AttachError, KernelError
from bpfloader.kernel import links as klinks
from bpfloader.kernel.syscall import statfs_type
from bpfloader.obj.bpftypes import AttachType as A
from bpfloader.obj.bpftypes import ProgType as P

CGROUP2_SUPER_MAGIC = 0x63677270
# Named as the loader's section prefixes are (README.md, "Writing programs").
ATTACH_TYPES: dict[str, tuple[A, P]] = {
    "ingress": (A.CGROUP_INET_INGRESS, P.CGROUP_SKB),
    "egress": (A.CGROUP_INET_EGRESS, P.CGROUP_SKB),
    "sockcreate": (A.CGROUP_INET_SOCK_CREATE, P.CGROUP_SOCK),
    "sockrelease": (A.CGROUP_INET_SOCK_RELEASE, P.CGROUP_SOCK),
    "postbind4": (A.CGROUP_INET4_POST_BIND, P.CGROUP_SOCK),
    "postbind6": (A.CGROUP_INET6_POST_BIND, P.CGROUP_SOCK),
    "bind4": (A.CGROUP_INET4_BIND, P.CGROUP_SOCK_ADDR),
    "bind6": (A.CGROUP_INET6_BIND, P.CGROUP_SOCK_ADDR),
    "connect4": (A.CGROUP_INET4_CONNECT, P.CGROUP_SOCK_ADDR),
    "connect6": (A.CGROUP_INET6_CONNECT, P.CGROUP_SOCK_ADDR),
    "recvmsg4": (A.CGROUP_UDP4_RECVMSG, P.CGROUP_SOCK_ADDR),
    "recvmsg6": (A.CGROUP_UDP6_RECVMSG, P.CGROUP_SOCK_ADDR),
    "sendmsg4": (A.CGROUP_UDP4_SENDMSG, P.CGROUP_SOCK_ADDR),
    "sendmsg6": (A.CGROUP_UDP6_SENDMSG, P.CGROUP_SOCK_ADDR),
    "getsockopt": (A.CGROUP_GETSOCKOPT, P.CGROUP_SOCKOPT),
    "setsockopt": (A.CGROUP_SETSOCKOPT, P.CGROUP_SOCKOPT),
    "sockops": (A.CGROUP_SOCK_OPS, P.SOCK_OPS),
    "sysctl": (A.CGROUP_SYSCTL, P.CGROUP_SYSCTL),
}
CGROUP_PROGRAM_TYPES = tuple(dict.fromkeys(p for _, p in ATTACH_TYPES.values()))


def attach_cgroup(
    prog: AttachableProgram, cgroup: str, attach_type: str | None = None
) -> Attachment:
    """Attach as `attach_type`, or, where it is None, as the one type the program was loaded
    for: the kernel accepts a CGROUP_SOCK, _SOCK_ADDR or _SOCKOPT program only as that type,
    which it does not report, so each type of the program's kind is offered in turn."""
    prog.require_type("a cgroup", *CGROUP_PROGRAM_TYPES)
    candidates = [name for name, (_, p) in ATTACH_TYPES.items() if p == prog.info.type]
    if attach_type is not None:
        if attach_type not in candidates:
            raise AttachError(
                f"a {prog.type_name} program attaches to a cgroup as"
                f" {' or '.join(candidates)}, not as {attach_type!r}",
                file=prog.path,
            )
        candidates = [attach_type]
    elif prog.info.type == P.CGROUP_SKB:
        raise AttachError(
            "a CGROUP_SKB program attaches to a cgroup as ingress or egress: say which",
            file=prog.path,
        )
    cgroup_fd = _open_cgroup(cgroup)
    try:
        for name in candidates:
            try:
                link = klinks.create_link(prog.fd, cgroup_fd, ATTACH_TYPES[name][0])
            except KernelError as e:
                if e.errno != errno.EINVAL:
                    raise
                continue  # not the type it was loaded for, or no links in this kernel
            return Attachment(f"cgroup:{cgroup}:{name}", links=[("", link)])
        if klinks.links_supported():
            raise AttachError(
                f"the kernel refused it on {cgroup} as {' and as '.join(candidates)}",
                file=prog.path,
            )
        return _attach_without_link(prog, cgroup, cgroup_fd, candidates)
    finally:
        os.close(cgroup_fd)


def _attach_without_link(
    prog: AttachableProgram, cgroup: str, cgroup_fd: int, candidates: list[str]
) -> Attachment:
    """BPF_PROG_ATTACH: the cgroup keeps the program until it is detached, by close()."""
    for name in candidates:
        attach_type = ATTACH_TYPES[name][0]
        try:
            klinks.attach_program(cgroup_fd, prog.fd, attach_type)
            break
        except KernelError as e:
            if e.errno != errno.EINVAL or name == candidates[-1]:
                raise
    # Own fds for the detach: the caller may close the program and the cgroup first.
    held_cgroup, held_prog = os.dup(cgroup_fd), os.dup(prog.fd)
    return Attachment(
        f"cgroup:{cgroup}:{name}",
        owned=[held_cgroup, held_prog],
        undo=lambda: klinks.detach_program(held_cgroup, held_prog, attach_type),
        unpinnable="this kernel has no cgroup links (5.7+): BPF_PROG_ATTACH attached it",
    )


def _open_cgroup(path: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise AttachError(f"not a cgroup v2 directory: {e.strerror}", file=path) from e
    if statfs_type(path) != CGROUP2_SUPER_MAGIC:
        os.close(fd)
        raise AttachError("not a cgroup v2 directory: not on a cgroup2 filesystem", file=path)
    return fd
