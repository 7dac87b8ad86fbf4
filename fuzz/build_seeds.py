"""Compile every object the tests build into one (flat) seed directory for the reader fuzzer.

Usage: python fuzz/build_seeds.py OUT_DIR
       python fuzz/build_seeds.py --binaries OUT_DIR   (the uprobe symbol reader's seeds)
Android-format sources go through `bpfloader build`; libbpf-style ones (tests/bpf/libbpf_*.c,
the CO-RE ones, tests/bpf/core/*.c, the `__ksym` ones, tests/bpf/ksyms/*.c, and the struct_ops
ones, tests/bpf/struct_ops/*.c, named struct_ops_*.o) through plain clang with -g and a vmlinux.h
of this kernel, as the tests build them. A seed longer than the fuzzer's -max_len (those
compiled against vmlinux.h: most of their bytes are DWARF) loses its DWARF (llvm-strip
--strip-debug; .BTF and .BTF.ext stay): libFuzzer would cut it at -max_len, before its section
headers. A source that does not compile (some are meant not to) is skipped. The reader bombs
(tests/obj/bombs.py) are added in small copies of their shapes (under -max_len), so that
mutations start from them too.

The symbol reader's seeds (`--binaries`, for fuzz/fuzz_symbols.py) are gcc's binaries of
tests/binary_support.py under 128 KiB, and binaries of every ELF class and byte order written
there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from fuzz.contract import MAX_LEN  # noqa: E402
from tests.binary_support import (  # noqa: E402
    STB_WEAK,
    TEXT_ADDRESS,
    Sym,
    build_binaries,
    elf_binary,
)
from tests.obj.bombs import BOMBS  # noqa: E402

# Each bomb's scale for a seed of about 30-90 KiB (the fuzzer's -max_len is 128 KiB).
BOMB_SEED_SCALES = {"android_symbols": 0.01, "btf_types": 0.002, "btf_members": 0.001}
BOMB_SEED_SCALE = 0.001
LIBBPF_CFLAGS = ["-O2", "-g", "-target", "bpf", "-idirafter", "/usr/include/x86_64-linux-gnu"]
# More builds of a libbpf-style source, each a seed of its own: legacy map defs of another
# header's size (28 bytes), with and without the fields libbpf 0.x refused.
LIBBPF_VARIANTS = {
    "libbpf_legacy_maps": (["-DDEF_WORDS=7"], ["-DDEF_WORDS=7", "-DNONZERO_EXTRA"]),
    # in .struct_ops.link rather than .struct_ops; without a member the kernel requires
    "struct_ops_cc": (["-DLINK"], ["-DNO_UNDO_CWND"]),
}
LIBBPF_PREFIXES = ("libbpf_", "core_", "ksyms_")
STRUCT_OPS = "struct_ops"  # tests/bpf/struct_ops/NAME.c: seed struct_ops_NAME.o


def _vmlinux_h(include: Path) -> list[str]:
    """Flags to compile against a vmlinux.h of this kernel (the CO-RE and `__ksym` sources
    include it), made in INCLUDE; none where bpftool or the kernel's BTF is missing."""
    with (include / "vmlinux.h").open("w") as f:
        command = ["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux", "format", "c"]
        if subprocess.run(command, stdout=f, check=False).returncode != 0:
            return []
    return ["-I", str(include), "-D__TARGET_ARCH_x86"]


def build_seeds(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as include:
        return _build_seeds(out, _vmlinux_h(Path(include)))


def _build_seeds(out: Path, vmlinux: list[str]) -> list[Path]:
    bpfloader = ROOT / ".venv" / "bin" / "bpfloader"
    sources = sorted((ROOT / "tests" / "bpf").glob("*.c")) + sorted(
        (ROOT / "etc" / "bpf").glob("*.c")
    )
    sources += sorted((ROOT / "tests" / "bpf" / "core").glob("*.c"))
    sources += sorted((ROOT / "tests" / "bpf" / "ksyms").glob("*.c"))
    sources += sorted((ROOT / "tests" / "bpf" / "android2026").glob("*.c"))
    sources += sorted((ROOT / "tests" / "bpf" / STRUCT_OPS).glob("*.c"))
    built = []
    for src in sources:
        struct_ops = src.parent.name == STRUCT_OPS
        if struct_ops or src.name.startswith(LIBBPF_PREFIXES):
            stem = f"{STRUCT_OPS}_{src.stem}" if struct_ops else src.stem
            for i, extra in enumerate(([], *LIBBPF_VARIANTS.get(stem, ()))):
                obj = out / (f"{stem}.o" if not i else f"{stem}_{i}.o")
                cmd = ["clang", *LIBBPF_CFLAGS, *extra, *vmlinux, "-c", str(src), "-o", str(obj)]
                done = subprocess.run(cmd, capture_output=True)
                if done.returncode == 0:
                    _strip_if_long(obj)
                    built.append(obj)
            continue
        for flags in ([], ["-g"]):  # -g adds .BTF and .BTF.ext to Android-format objects
            sub = out / (src.stem + ("_g" if flags else ""))
            cmd = [str(bpfloader), "build", str(src), "-o", str(sub)]
            cmd += [f"--cflag={f}" for f in flags] if flags else []
            done = subprocess.run(cmd, capture_output=True)
            if done.returncode == 0:
                for obj in sorted(sub.glob("*.o")):  # flat: libFuzzer reads one directory
                    built.append(obj.rename(out / f"{sub.name}__{obj.name}"))
            shutil.rmtree(sub, ignore_errors=True)
    for name, build in BOMBS.items():
        obj = out / f"bomb_{name}.o"
        obj.write_bytes(build(BOMB_SEED_SCALES.get(name, BOMB_SEED_SCALE)))
        built.append(obj)
    return built


def _strip_if_long(obj: Path) -> None:
    """OBJ without its DWARF if it is longer than the fuzzer's -max_len; a warning if it still
    is (or llvm-strip is missing): libFuzzer will cut it."""
    if obj.stat().st_size > MAX_LEN:
        subprocess.run(["llvm-strip", "--strip-debug", str(obj)], capture_output=True)
    if obj.stat().st_size > MAX_LEN:
        print(f"{obj.name}: {obj.stat().st_size} bytes, over -max_len {MAX_LEN}", file=sys.stderr)


def build_binary_seeds(out: Path) -> list[Path]:
    built = list(build_binaries(out, ("pie", "no_pie", "stripped", "library.so")).values())
    for c_file in out.glob("*.c"):
        c_file.unlink()  # libFuzzer reads every file of the directory
    for bits in (32, 64):
        for order, name in (("<", "lsb"), (">", "msb")):
            binary = out / f"elf{bits}_{name}"
            functions = [Sym("f", TEXT_ADDRESS + 16), Sym("f", TEXT_ADDRESS + 32, bind=STB_WEAK)]
            binary.write_bytes(
                elf_binary(functions, [Sym("main", TEXT_ADDRESS)], bits=bits, order=order)
            )
            built.append(binary)
    return built


if __name__ == "__main__":
    if sys.argv[1] == "--binaries":
        binaries = build_binary_seeds(Path(sys.argv[2]))
        print(f"{len(binaries)} seed binaries in {sys.argv[2]}")
    else:
        objects = build_seeds(Path(sys.argv[1]))
        print(f"{len(objects)} seed objects in {sys.argv[1]}")
