"""Helpers for the CO-RE tests: a vmlinux.h of the running kernel, objects compiled against it
with libbpf's headers, and instructions compared with their map fds left out."""

from __future__ import annotations

import platform
import struct
import subprocess
from pathlib import Path

from tests.conftest import Compile

_ARCH = {"x86_64": "x86", "aarch64": "arm64", "s390x": "s390", "ppc64le": "powerpc"}


def generate_vmlinux_h(directory: Path) -> Path:
    """`bpftool btf dump file /sys/kernel/btf/vmlinux format c` into DIRECTORY/vmlinux.h."""
    directory.mkdir(parents=True, exist_ok=True)
    header = directory / "vmlinux.h"
    with header.open("w") as f:
        subprocess.run(
            ["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"],
            stdout=f,
            check=True,
            timeout=120,
        )
    return header


def core_flags(vmlinux_dir: Path) -> tuple[str, ...]:
    return ("-I", str(vmlinux_dir), f"-D__TARGET_ARCH_{_ARCH[platform.machine()]}")


def core_object(
    compile_bpf: Compile, vmlinux_dir: Path, source: str, name: str | None = None
) -> Path:
    return compile_bpf(source, name, *core_flags(vmlinux_dir))


_LD_IMM64 = 0x18
_PSEUDO_MAP = (1, 2, 5, 6)  # BPF_PSEUDO_MAP_FD, _VALUE, _IDX, _IDX_VALUE


def without_map_fds(code: bytes) -> bytes:
    """The instructions with each map-referencing ld_imm64's immediate zeroed (fds differ)."""
    out = bytearray(code)
    i = 0
    while i + 8 <= len(out):
        if out[i] == _LD_IMM64 and out[i + 1] >> 4 in _PSEUDO_MAP:
            struct.pack_into("<i", out, i + 4, 0)
            i += 16
        else:
            i += 8
    return bytes(out)


def with_relocation_kind(obj: Path, old: int, new: int, out: Path) -> Path:
    """OBJ with every CO-RE record of kind `old` made kind `new` in its .BTF.ext, written to
    OUT: clang 14 cannot emit TYPE_MATCHES (12), whose instruction is that of TYPE_EXISTS (8)."""
    from elftools.elf.elffile import ELFFile

    data = bytearray(obj.read_bytes())
    with obj.open("rb") as f:
        section = ELFFile(f).get_section_by_name(".BTF.ext")
        start = section["sh_offset"]
    hdr_len, core_off, core_len = (
        struct.unpack_from("<I", data, start + 4)[0],
        *struct.unpack_from("<II", data, start + 24),
    )
    pos = start + hdr_len + core_off
    end = pos + core_len
    record_size = struct.unpack_from("<I", data, pos)[0]
    pos += 4
    changed = 0
    while pos < end:
        _, count = struct.unpack_from("<II", data, pos)
        pos += 8
        for i in range(count):
            at = pos + i * record_size + 12
            if struct.unpack_from("<I", data, at)[0] == old:
                struct.pack_into("<I", data, at, new)
                changed += 1
        pos += count * record_size
    assert changed, f"no CO-RE record of kind {old} in {obj}"
    out.write_bytes(data)
    return out
