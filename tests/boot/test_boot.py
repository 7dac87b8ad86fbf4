"""bpfloader at boot, in a real boot: a Debian bookworm guest under QEMU (software emulation),
with systemd as PID 1, bpfloader installed from its Debian package, and /etc/bpf filled with the
examples, a kprobe object and an object the verifier rejects.

Inside the guest, tests/boot/guest/check.py (run by a unit ordered after bpfloader.service) checks
the boot and writes one PASS/FAIL line per check to a serial port; each test below is one of those
lines. A second boot adds a failing critical object; a third boots the same image with Debian 11's
5.10 kernel, where the old-kernel policy has to lower kernel.unprivileged_bpf_disabled for the
consumer to read its map. The boots run side by side. The image is cached outside the repository
(tests/boot/image.py); a warm run takes a few minutes, a cold one a few more.

The main boot also measures bpfloader at boot against the strongest peer: once the boot has
finished, bpfloader and a one-process C loader on libbpf (bench/libbpf_loader.c) load the same
libbpf-style objects, one after the other, each from a unit of its own; the checker reports the
critical chains and blame times of bpfloader.service and of those units, bpfloader's time over the
peer's on that set, and bpfloader.service's share of the userspace boot. _record prints them (run
pytest with -s) beside every finding; they are figures for the note, not bounds.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.boot.image import CACHE, BootImage, ensure_image
from tests.boot.vm import Boot, boot

pytestmark = pytest.mark.boot

MAIN_CHECKS = [
    "loader_unit",  # bpfloader.service active (exited), status 0
    "bpffs",  # /sys/fs/bpf a bpffs that others may traverse
    "ordering",  # the loader finished before sysinit.target and the consumer
    "pins",  # every expected pin with its owner, group and mode; none of the rejected object
    "consumer",  # a non-root service in the map's group read the map through bpfloader.client
    "old_kernel_policy",  # the opt-in did what this kernel needs (here: nothing)
    "verifier_log",  # the rejected program's verifier log in this boot's journal
    "only_rejected_failed",  # every other object in /etc/bpf (all the examples) loaded
    "kprobe",  # the kprobe example attached and counting
    "memlock",  # with RLIMIT_MEMLOCK at 0 the loader loads; it raises the limit only before 5.11
    "ksyms",  # a module's kfunc (fd_array) and a typed per-CPU variable, loaded and run
    "declared_attachments",  # a policy's tracepoint and cgroup attachments, made at boot
    "bpfprogram_unit",  # a unit's own BPFProgram=egress:PIN counts its traffic
    "package",  # what booted is the .deb's: the unit runs its command, dpkg --verify is clean
    "catalog",  # the journal catalog is installed, and the package's trigger indexed it
    "units_verify",  # systemd-analyze verify is clean for our units
    "security",  # systemd-analyze security's exposure stays in bounds
    "blame",  # bpfloader.service appears in systemd-analyze blame
    "peer_reference",  # the C peer loaded the set bpfloader did (pins counted); figures collected
    "reload",  # `systemctl reload bpfloader` pins an added object
    "path_unit",  # bpfloader.path off by default; on, it reloads on a change in /etc/bpf
    "remount",  # with /sys/fs/bpf unmounted, a restart mounts it again and pins
]
CRITICAL_CHECKS = [
    "loader_unit_failed",  # a critical object's failure fails the unit with status 1
    "critical_logged",  # its rejection is a crit entry with the verifier log
    "others_loaded",  # the other objects' pins are there all the same
    "consumer_held_back",  # a consumer that Requires= the loader did not start
]
OLD_KERNEL_CHECKS = [
    "loader_unit",
    "pins",
    "consumer",
    "old_kernel_policy",  # on 5.10 the sysctl must be lowered, and the consumer reads all the same
    "kprobe",
    "memlock",  # on 5.10 a map create fails at memlock 0; the loader raises it and loads
]
CHECKS = {"main": MAIN_CHECKS, "critical": CRITICAL_CHECKS, "oldkernel": OLD_KERNEL_CHECKS}
VARIANTS = list(CHECKS)
BOOT_TIMEOUT = 600.0


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> BootImage:
    if os.geteuid() != 0:
        pytest.fail("the boot test needs root (debootstrap, chroot, mkfs.ext4 -d)")
    log = tmp_path_factory.mktemp("boot-image") / "build.log"
    started = time.monotonic()
    try:
        built = ensure_image(log)
    except Exception as e:
        pytest.fail(f"building the boot image failed: {e}\n--- build log ---\n{_tail(log, 60)}")
    print(f"boot image ready in {time.monotonic() - started:.0f} s: {built.disk}")
    return built


@pytest.fixture(scope="module")
def boots(image: BootImage) -> dict[str, Boot]:
    """Every variant at once, one emulated CPU each: the machine has two cores to share."""
    with ThreadPoolExecutor(len(VARIANTS)) as pool:
        futures = {
            name: pool.submit(
                boot,
                image.old_kernel if name == "oldkernel" else image.kernel,
                image.disk,
                append="" if name == "main" else f"bpfloader_boot_test={name}",
                timeout=BOOT_TIMEOUT,
                smp=1,
            )
            for name in VARIANTS
        }
        done = {name: future.result() for name, future in futures.items()}
    _record(done)
    return done


@pytest.mark.parametrize("variant", VARIANTS)
def test_guest_ran_its_checks_and_powered_off(boots: dict[str, Boot], variant: str) -> None:
    result = boots[variant]
    assert not result.timed_out, (
        f"{variant} boot did not power off within {BOOT_TIMEOUT:.0f} s\n{_console(result)}"
    )
    assert result.done == variant, f"{variant} boot: the checker never finished\n{_console(result)}"
    assert set(result.results) == set(CHECKS[variant]), "the guest's checks and these differ"


@pytest.mark.parametrize("check", MAIN_CHECKS)
def test_main_boot(boots: dict[str, Boot], check: str) -> None:
    _expect_pass(boots["main"], "main", check)


@pytest.mark.parametrize("check", CRITICAL_CHECKS)
def test_critical_boot(boots: dict[str, Boot], check: str) -> None:
    _expect_pass(boots["critical"], "critical", check)


@pytest.mark.parametrize("check", OLD_KERNEL_CHECKS)
def test_old_kernel_boot(boots: dict[str, Boot], check: str) -> None:
    _expect_pass(boots["oldkernel"], "oldkernel", check)


def _expect_pass(result: Boot, variant: str, check: str) -> None:
    if check not in result.results:
        pytest.fail(f"{variant} boot: the checker reported nothing for {check}\n{_console(result)}")
    kind, detail = result.results[check]
    assert kind == "PASS", f"{variant} boot: {check}: {detail}\n{_console(result)}"


def _console(result: Boot) -> str:
    return f"--- guest console, last lines ---\n{result.console_tail()}"


def _tail(path: Path, lines: int) -> str:
    return (
        "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
    )


def _record(boots: dict[str, Boot]) -> None:
    """What the note quotes (wall times, blame, exposure, critical chains, bpfloader over the C
    peer, the loader's share of the userspace boot) and every finding; printed (pytest -s) and
    kept in the cache directory as last-boot.txt."""
    lines = []
    for name, result in boots.items():
        lines.append(f"{name} boot: {result.seconds:.0f} s wall")
        lines += [f"  INFO {key}: {value}" for key, value in result.info.items()]
        lines += [f"  {kind} {key}: {detail}" for key, (kind, detail) in result.results.items()]
    print("\n".join(lines))
    (CACHE / "last-boot.txt").write_text("\n".join(lines) + "\n")
