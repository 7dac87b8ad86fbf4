"""Fixtures of the loader's tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.client.test_attach_cgroup import cgroup  # noqa: F401 (a fixture: a cgroup of its own)
from tests.client.test_attach_netdev import veth  # noqa: F401 (a fixture: two namespaces, a veth)
from tests.conftest import TESTS, Compile

# How Android builds its objects: -g, then BTF kept and the rest of the debug data stripped
# (its build rules run llvm-strip so on every bpf object).
ANDROID_STRIP = (
    "--strip-unneeded",
    "--remove-section=.rel.BTF",
    "--remove-section=.rel.BTF.ext",
    "--remove-section=.BTF.ext",
)


@pytest.fixture(scope="session")
def compile_android(compile_bpf: Compile, build_dir: Path) -> Compile:
    """compile_android(source, name=None, *flags) -> an object built as Android builds its
    own: compiled with -g like compile_bpf, then stripped as Android's build strips it."""
    cache: dict[tuple[str, str | None, tuple[str, ...]], Path] = {}

    def build_one(source: str, name: str | None = None, *flags: str) -> Path:
        key = (source, name, flags)
        if key not in cache:
            built = compile_bpf(source, name, *flags)
            out_dir = build_dir / f"android_{len(cache)}"
            out_dir.mkdir()
            stripped = out_dir / built.name
            subprocess.run(
                ["llvm-strip", *ANDROID_STRIP, str(built), "-o", str(stripped)], check=True
            )
            cache[key] = stripped
        return cache[key]

    return build_one


@pytest.fixture(scope="session")
def libbpf_oracle(build_dir: Path) -> Path:
    """tests/obj/libbpf_oracle.c built: libbpf's relocated instructions of an object."""
    binary = build_dir / "libbpf_oracle"
    source = TESTS / "obj" / "libbpf_oracle.c"
    subprocess.run(
        ["gcc", "-O1", "-Wall", "-Werror", "-o", binary, source, "-lbpf"], check=True, timeout=120
    )
    return binary


def libbpf_relocated(
    oracle: Path, obj: Path, target: Path | None, *, refused: bool = False
) -> dict[str, bytes]:
    """Each program's instructions as libbpf relocated them, against `target`'s BTF (None:
    the running kernel's); the kernel took them, or with `refused` it refused them."""
    done = subprocess.run(
        [oracle, obj, str(target) if target else "-"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == (3 if refused else 0), done.stderr
    return {
        name: bytes.fromhex(code)
        for name, code in (line.split() for line in done.stdout.split("\n") if line)
    }
