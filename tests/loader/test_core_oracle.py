"""CO-RE against a target BTF of our own (tests/bpf/core/core_target.c: the fields elsewhere),
relocated by bpfloader (`check --target-btf`'s engine) and by libbpf (tests/obj/core_oracle.c:
btf_custom_path, then a load, as libbpf 1.1 relocates only when loading): every program's
instructions identical, map fds aside."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bpfloader.obj import core
from bpfloader.obj.reader import read_object
from bpfloader.obj.relocate import relocate
from tests.conftest import TESTS
from tests.core_support import with_relocation_kind, without_map_fds

pytestmark = pytest.mark.kernel  # libbpf loads what it relocated


@pytest.fixture(scope="session")
def core_oracle(build_dir: Path) -> Path:
    binary = build_dir / "core_oracle"
    subprocess.run(
        ["gcc", "-O1", "-Wall", "-Werror", "-o", binary, TESTS / "obj" / "core_oracle.c", "-lbpf"],
        check=True,
        timeout=120,
    )
    return binary


def libbpf_relocated(oracle: Path, obj: Path, target: Path) -> dict[str, bytes]:
    done = subprocess.run(
        [oracle, obj, target], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return {
        name: bytes.fromhex(code)
        for name, code in (line.split() for line in done.stdout.split("\n") if line)
    }


def bpfloader_relocated(obj: Path, target: Path) -> dict[str, bytes]:
    spec = read_object(obj.read_bytes(), str(obj))
    assert spec.core is not None
    results = core.resolve(spec.core, core.read_target_btf(target.read_bytes(), str(target)))
    fds = {m.name: 0 for m in spec.maps}
    return {
        p.name: relocate(p, fds, core.apply(p.instructions, p.core_relos, results))
        for p in spec.programs
    }


@pytest.mark.parametrize("matches", [False, True], ids=["type_exists", "type_matches"])
def test_relocated_as_libbpf_relocates(compile_bpf, core_oracle, build_dir, matches):
    obj = compile_bpf("core/core_elsewhere.c")
    if matches:
        obj = with_relocation_kind(obj, 8, 12, build_dir / "core_elsewhere_matches.o")
    target = compile_bpf("core/core_target.c")
    theirs = libbpf_relocated(core_oracle, obj, target)
    ours = bpfloader_relocated(obj, target)
    assert sorted(ours) == sorted(theirs) == ["elsewhere_one", "elsewhere_two"]
    for name, code in theirs.items():
        assert without_map_fds(ours[name]) == without_map_fds(code), name
    assert ours != bpfloader_relocated(obj, obj)  # against its own BTF: the compiler's values
