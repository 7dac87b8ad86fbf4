"""Gates: does a def apply on this kernel, this loader version, this platform? (pure)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bpfloader.obj.kver import format_kver, kver

if TYPE_CHECKING:
    from bpfloader.obj.spec import Gates

ARCH_BITS = {
    "armv7l": 0x08,
    "armv8l": 0x08,
    "aarch64": 0x10,
    "i386": 0x20,
    "i686": 0x20,
    "x86_64": 0x40,
    "riscv64": 0x80,
}
BUILD_TYPE_BITS = {"eng": 0x01, "user": 0x02, "userdebug": 0x04}


@dataclass(frozen=True)
class Environment:
    """What gates are checked against. Android build types mean nothing on a plain Linux
    system, so their ignore_on bits apply only when a build type is configured."""

    kernel: tuple[int, int, int]
    loader_version: int
    arch: str
    build_type: str | None = None

    @property
    def kver(self) -> int:
        return kver(*self.kernel)

    @property
    def linux_version_code(self) -> int:
        """LINUX_VERSION_CODE, what BPF_PROG_LOAD's kern_version expects (kprobes on old
        kernels); not Android's KVER, which `kver` is."""
        major, minor, patch = self.kernel
        return (major << 16) + (minor << 8) + min(patch, 255)

    @property
    def ignore_bits(self) -> int:
        return ARCH_BITS.get(self.arch, 0) | BUILD_TYPE_BITS.get(self.build_type or "", 0)


def skip_reason(gates: Gates, env: Environment) -> str | None:
    """Why a def does not apply here, or None when it does."""
    if not gates.min_kver <= env.kver < gates.max_kver:
        return (
            f"needs kernel >= {format_kver(gates.min_kver)} and < {format_kver(gates.max_kver)}, "
            f"running {format_kver(env.kver)}"
        )
    reason = loader_skip_reason(gates.min_loader, gates.max_loader, env)
    if reason:
        return reason
    if gates.ignore_on & env.ignore_bits:
        platform = env.arch + (f"/{env.build_type}" if env.build_type else "")
        return f"ignored on this platform ({platform})"
    return None


def loader_skip_reason(min_ver: int, max_ver: int, env: Environment) -> str | None:
    if min_ver <= env.loader_version < max_ver:
        return None
    return f"needs loader version >= {min_ver} and < {max_ver}, this loader is {env.loader_version}"
