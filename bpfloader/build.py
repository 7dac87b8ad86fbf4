"""Compiling BPF C for the loader: the flags, and clang run over sources (Android's `bpf {}`)."""

from __future__ import annotations

import glob
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Sequence

from bpfloader.errors import LoaderError


def include_dir() -> str:
    """The package's include directory: bpf_helpers.h and an empty gnu/stubs-32.h.

    glibc's <gnu/stubs.h> picks stubs-32.h whenever __x86_64__ is not defined, which is the
    case for -target bpf; the empty file stops that include from failing.
    """
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "include")


def _multiarch_include() -> str | None:
    """Where <asm/types.h> lives on Debian (/usr/include/<triplet>); -target bpf doesn't look."""
    for candidate in (
        f"/usr/include/{platform.machine()}-linux-gnu",
        *glob.glob("/usr/include/*-linux-gnu*"),
    ):
        if os.path.exists(os.path.join(candidate, "asm", "types.h")):
            return candidate
    return None


def cflags(*, btf: bool = True) -> list[str]:
    """The flags for compiling BPF C for this loader. With `btf` (the default, as
    libbpf-bootstrap builds), -g: the object carries BTF, which gives maps their key and value
    types (some maps need them) and the verifier's complaints their C source lines."""
    flags = ["-target", "bpf", "-O2", "-Wall", *(["-g"] if btf else []), "-I", include_dir()]
    multiarch = _multiarch_include()
    if multiarch:
        flags += ["-idirafter", multiarch]
    return flags


def find_clang() -> str:
    """$CLANG, else `clang`, else the newest `clang-N` on PATH."""
    wanted = os.environ.get("CLANG")
    if wanted:
        found = shutil.which(wanted)
        if found is None:
            raise LoaderError(
                f"$CLANG={wanted} was not found"
                + ("" if os.sep in wanted else " on PATH")
                + " (unset CLANG to use clang, or the newest clang-N, on PATH)"
            )
        return found
    found = shutil.which("clang")
    if found:
        return found
    versions = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        for path in glob.glob(os.path.join(directory, "clang-[0-9]*")):
            match = re.fullmatch(r"clang-(\d+)", os.path.basename(path))
            if match:
                versions.append((int(match.group(1)), path))
    if not versions:
        raise LoaderError("no clang found (apt-get install clang)")
    return max(versions)[1]


class BuildError(LoaderError):
    """clang refused a source; `output` is what it said."""

    def __init__(self, source: str, returncode: int, output: str):
        super().__init__(f"clang failed (exit {returncode})", file=source)
        self.output = output


def build(
    sources: Sequence[str], out_dir: str, extra_flags: Sequence[str] = (), *, btf: bool = True
) -> list[str]:
    """Compile each source to OUT_DIR/<name>.o (with BTF unless `btf` is false)."""
    os.makedirs(out_dir, exist_ok=True)
    clang = find_clang()
    outputs = []
    for source in sources:
        stem = os.path.splitext(os.path.basename(source))[0]
        output = os.path.join(out_dir, f"{stem}.o")
        command = [clang, *cflags(btf=btf), *extra_flags, "-c", source, "-o", output]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError(source, done.returncode, done.stderr)
        outputs.append(output)
    return outputs
