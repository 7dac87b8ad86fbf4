"""Gates: does a def apply on this kernel, this loader version, this platform? (pure)"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bpfloader.obj.kver import format_kver, kver
from bpfloader.version import ANDROID_API_LEVEL

if TYPE_CHECKING:
    from bpfloader.obj.spec import Gates, MapSpec

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
    android_api_level: int = ANDROID_API_LEVEL  # what Android's 2026 defs gate on

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
    if not gates.min_api_level <= env.android_api_level < gates.max_api_level:
        return (
            f"needs Android API level >= {gates.min_api_level} and < {gates.max_api_level}, "
            f"this loader claims {env.android_api_level} (--android-api-level)"
        )
    if gates.ignore_on & env.ignore_bits:
        platform = env.arch + (f"/{env.build_type}" if env.build_type else "")
        return f"ignored on this platform ({platform})"
    return None


def loader_skip_reason(min_ver: int, max_ver: int, env: Environment) -> str | None:
    if min_ver <= env.loader_version < max_ver:
        return None
    return f"needs loader version >= {min_ver} and < {max_ver}, this loader is {env.loader_version}"


# Android's loader makes a map of a type or with a flag an old kernel lacks into one it has
# (both generations of its format: createMaps, and prepareLoadMaps for libbpf): by its own
# thresholds, which are Android's kernel branches, not the mainline releases.
_ANDROID_DEVMAP = (4, 14)  # DEVMAP -> ARRAY before
_ANDROID_DEVMAP_HASH = (5, 4)  # DEVMAP_HASH -> HASH before
_ANDROID_MMAPABLE = (5, 10)  # BPF_F_MMAPABLE cleared before


def android_map_for_kernel(spec: MapSpec, env: Environment) -> MapSpec:
    """An Android object's map as Android's loader makes it on this kernel: a DEVMAP an
    ARRAY before 4.14, a DEVMAP_HASH a HASH before 5.4, without BPF_F_MMAPABLE before 5.10.
    (A ring buffer of less than a page is made a page long on every kernel: kernel_objects.)"""
    from dataclasses import replace

    from bpfloader.obj.bpftypes import BPF_F_MMAPABLE, MapType

    kind, flags, kernel = spec.type, spec.flags, env.kernel[:2]
    if kind == MapType.DEVMAP and kernel < _ANDROID_DEVMAP:
        kind = MapType.ARRAY
    elif kind == MapType.DEVMAP_HASH and kernel < _ANDROID_DEVMAP_HASH:
        kind = MapType.HASH
    if kernel < _ANDROID_MMAPABLE:
        flags &= ~BPF_F_MMAPABLE
    return (
        spec if (kind, flags) == (spec.type, spec.flags) else replace(spec, type=kind, flags=flags)
    )
