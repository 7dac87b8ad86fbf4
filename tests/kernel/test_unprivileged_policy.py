"""The old-kernel policy (`--lower-unprivileged-bpf-disabled`): the decision, the kernel probe
against an independent measurement, and the option on this host, where it must change nothing.

The lowering itself needs a kernel older than 5.19; the boot test proves it on Debian 11's 5.10
(tests/boot/test_boot.py, the `oldkernel` variant).
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bpfloader.errors import KernelError
from bpfloader.kernel import pins as kpins
from bpfloader.kernel import unprivileged as kunpriv
from bpfloader.loader.unprivileged import Decision, decide
from tests.conftest import Compile, Run, mounted_bpffs

NOBODY = 65534


@pytest.mark.parametrize(
    "setting, refused, decision",
    [
        (2, True, Decision.LOWER),  # an old kernel, Debian's default: lower it
        (1, True, Decision.LOCKED),  # an old kernel, locked until reboot: say so
        (2, False, Decision.NOT_NEEDED),  # a kernel from 5.19 on: leave it
        (1, False, Decision.NOT_NEEDED),
        (0, False, Decision.NOT_NEEDED),  # nothing to lower
        (0, True, Decision.NOT_NEEDED),  # refused for another reason (an LSM): not ours
        (None, False, Decision.NOT_NEEDED),  # no such sysctl
    ],
)
def test_decision(setting: int | None, refused: bool, decision: Decision) -> None:
    assert decide(setting, refused) is decision


def obj_get_as_nobody(path: Path) -> str:
    """Open a pin read-only from a child switched to nobody: "opened" or the errno's name."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            os.close(kpins.open_pinned(str(path), readonly=True))
            result = "opened"
        except KernelError as e:
            result = errno.errorcode.get(e.errno, str(e.errno))
        except BaseException as e:
            result = f"error: {e}"
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        result = f.read()
    os.waitpid(pid, 0)
    return result


@pytest.fixture
def open_bpffs() -> Iterator[Path]:
    """A private bpffs on a path every user may traverse (pytest's own tmp is root's only)."""
    parent = Path(tempfile.mkdtemp(prefix="bpfloader-unpriv-"))
    parent.chmod(0o711)
    try:
        with mounted_bpffs(parent / "bpffs") as path:
            yield path
    finally:
        shutil.rmtree(parent)


@pytest.mark.kernel
def test_probe_agrees_with_a_non_root_process(
    compile_bpf: Compile, source_dir: Path, open_bpffs: Path, bpfloader_cli: Callable[..., Run]
) -> None:
    """The probe (a child without effective capabilities) answers what nobody actually meets
    opening a pin that its mode lets everyone read."""
    os.link(compile_bpf("myschedtp.c"), source_dir / "myschedtp.o")
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", open_bpffs, check=True)
    pin = open_bpffs / "map_myschedtp_cpu_pid_map"
    pin.chmod(0o644)
    seen = obj_get_as_nobody(pin)
    assert seen in ("opened", "EPERM"), seen
    refused = kunpriv.refuses_unprivileged_obj_get()
    assert refused == (seen == "EPERM"), f"probe says refused={refused}, nobody got {seen}"


@pytest.mark.kernel
def test_option_on_this_kernel_changes_nothing(
    compile_bpf: Compile, source_dir: Path, bpffs: Path, bpfloader_cli: Callable[..., Run]
) -> None:
    """Where the kernel lets processes without CAP_BPF reach pins (5.19 on, as here), the option
    leaves the sysctl as it is and says why."""
    if kunpriv.refuses_unprivileged_obj_get():
        pytest.fail("this host's kernel gates BPF_OBJ_GET on the sysctl: the boot test covers it")
    before = kunpriv.read_setting()
    os.link(compile_bpf("myschedtp.c"), source_dir / "myschedtp.o")
    run = bpfloader_cli(
        "load", "--dir", source_dir, "--pin-root", bpffs, "--lower-unprivileged-bpf-disabled"
    )
    assert run.returncode == 0, run.stderr
    assert f"kernel.unprivileged_bpf_disabled left at {before}" in run.stderr
    assert kunpriv.read_setting() == before


def test_capabilities_dropped_in_the_probe_child_only() -> None:
    """The probe drops effective capabilities in its child; the caller keeps its own."""

    def effective() -> str:
        return Path("/proc/self/status").read_text().split("CapEff:")[1].split()[0]

    before = effective()
    kunpriv.refuses_unprivileged_obj_get()
    assert effective() == before
