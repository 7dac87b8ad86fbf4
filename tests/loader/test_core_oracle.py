"""CO-RE against a target BTF of our own (tests/bpf/core/core_target.c: the fields elsewhere),
relocated by bpfloader (`check --target-btf`'s engine) and by libbpf (tests/obj/libbpf_oracle.c:
btf_custom_path, then a load, as libbpf 1.1 relocates only when loading): every program's
instructions identical, map fds aside."""

from __future__ import annotations

from pathlib import Path

import pytest

from bpfloader.obj import core
from bpfloader.obj.reader import read_object
from bpfloader.obj.relocate import relocate
from tests.core_support import with_relocation_kind, without_map_fds
from tests.loader.conftest import libbpf_relocated

pytestmark = pytest.mark.kernel  # libbpf loads what it relocated


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
def test_relocated_as_libbpf_relocates(compile_bpf, libbpf_oracle, build_dir, matches):
    obj = compile_bpf("core/core_elsewhere.c")
    if matches:
        obj = with_relocation_kind(obj, 8, 12, build_dir / "core_elsewhere_matches.o")
    target = compile_bpf("core/core_target.c")
    theirs = libbpf_relocated(libbpf_oracle, obj, target)
    ours = bpfloader_relocated(obj, target)
    assert sorted(ours) == sorted(theirs) == ["elsewhere_one", "elsewhere_two"]
    for name, code in theirs.items():
        assert without_map_fds(ours[name]) == without_map_fds(code), name
    assert ours != bpfloader_relocated(obj, obj)  # against its own BTF: the compiler's values
