"""libbpf's names and leniency through `bpfloader load`, in the real kernel, with libbpf
(bpftool prog loadall) as the oracle where it loads the same object: `NAME.bpf.o` objects and
sections with targets (`uprobe/libc.so.6:malloc`), an object without a license section, program
types from a policy file (bpftool's `type xdp`), and legacy `struct bpf_map_def` maps (which
libbpf 1.x refuses: compared with the same maps declared in `.maps`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import pins_in
from tests.libbpf_support import (
    assert_same_programs_and_maps,
    bpftool_loadall,
    libbpf_object,
    loaded_by_bpfloader,
    loaded_by_bpftool,
)

pytestmark = pytest.mark.kernel


def load_ours(bpfloader_cli, source_dir: Path, root: Path, obj: Path, policy: str | None = None):
    (source_dir / obj.name).write_bytes(obj.read_bytes())
    if policy is not None:
        (source_dir / obj.name.removesuffix(".o")).with_suffix(".policy").write_text(policy)
    root.mkdir(exist_ok=True)
    state = source_dir.parent / f"state-{root.name}"  # one state directory per pin root
    return bpfloader_cli("load", "--dir", source_dir, "--pin-root", root, "--state-dir", state)


def test_a_name_bpf_o_object_loads_with_libbpfs_names(
    compile_bpf, bpffs, source_dir, bpfloader_cli
):
    obj = libbpf_object(compile_bpf, "libbpf_names.c", "libbpf_names.bpf.o")
    done = load_ours(bpfloader_cli, source_dir, bpffs / "ours", obj)
    assert done.returncode == 0, done.stderr
    assert pins_in(bpffs / "ours") == {
        "map_libbpf_names_calls",
        "map_libbpf_names_bss",
        "prog_libbpf_names_uprobe_libc_so_6_malloc",
        "prog_libbpf_names_uretprobe_libc_so_6_malloc",
        "prog_libbpf_names_kprobe_do_sys_openat2_0x4",
        "prog_libbpf_names_usdt_libc_so_6_libc_setjmp",
        "prog_libbpf_names_xdp_pass",
    }
    loaded = bpftool_loadall(obj, bpffs)
    assert loaded.returncode == 0, loaded.stderr
    mine, libbpf = loaded_by_bpfloader(bpffs / "ours"), loaded_by_bpftool(bpffs)
    assert "libbpf_n.bss" in libbpf.maps  # libbpf's object name (cut to fit), not libbpf_names.bpf
    assert_same_programs_and_maps(mine, libbpf, btf=True)


UNLICENSED = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("socket") int plain(struct __sk_buff *skb) { return bpf_get_prandom_u32() & 1; }
"""
GPL_ONLY = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("kprobe/do_unlinkat") int reads(void *ctx) {
    long value = 0;
    bpf_probe_read_kernel(&value, sizeof(value), ctx);
    return value != 0;
}
"""


def test_an_object_without_a_license_loads_with_an_empty_one(
    compile_bpf, bpffs, source_dir, bpfloader_cli
):
    obj = compile_bpf(UNLICENSED, "unlicensed.bpf.o", "-g")
    done = load_ours(bpfloader_cli, source_dir, bpffs / "ours", obj)
    assert done.returncode == 0, done.stderr
    assert bpftool_loadall(obj, bpffs).returncode == 0
    mine, libbpf = loaded_by_bpfloader(bpffs / "ours"), loaded_by_bpftool(bpffs)
    assert mine.programs["plain"]["gpl_compatible"] is False
    assert_same_programs_and_maps(mine, libbpf, btf=True)


def test_a_gpl_only_helper_without_a_license_is_refused_saying_so(
    compile_bpf, bpffs, source_dir, bpfloader_cli
):
    obj = compile_bpf(GPL_ONLY, "gplonly.bpf.o", "-g")
    assert bpftool_loadall(obj, bpffs).returncode != 0  # libbpf: the kernel refuses it too
    done = load_ours(bpfloader_cli, source_dir, bpffs / "ours", obj)
    (line,) = [x for x in done.stderr.splitlines() if "gplonly.bpf.o" in x and "err" in x]
    assert "kprobe/do_unlinkat: rejected by the verifier at inline_" in line, done.stderr
    assert line.endswith(
        "cannot call GPL-restricted function from non-GPL compatible program "
        "(the object has no license section)"
    ), line
    assert pins_in(bpffs / "ours") == set()


UNTYPED = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("my_xdp") int first(struct xdp_md *ctx) { return XDP_PASS; }
SEC("mine/drop") int second(struct xdp_md *ctx) { return XDP_DROP; }
char LICENSE[] SEC("license") = "GPL";
"""


def test_a_policy_type_loads_what_bpftools_type_loads(
    compile_bpf, bpffs, source_dir, bpfloader_cli
):
    obj = compile_bpf(UNTYPED, "untyped.o", "-g")
    refused = load_ours(bpfloader_cli, source_dir, bpffs / "refused", obj)
    assert "untyped.o: my_xdp: not a program section libbpf knows" in refused.stderr
    (source_dir / obj.name).unlink()
    done = load_ours(bpfloader_cli, source_dir, bpffs / "ours", obj, 'type = "xdp"\n')
    assert done.returncode == 0, done.stderr
    assert pins_in(bpffs / "ours") == {"prog_untyped_my_xdp_first", "prog_untyped_mine_drop_second"}
    (bpffs / "libbpf").mkdir()
    command = ["bpftool", "prog", "loadall", obj, bpffs / "libbpf" / "progs", "type", "xdp"]
    loaded = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    mine, libbpf = loaded_by_bpfloader(bpffs / "ours"), loaded_by_bpftool(bpffs)
    assert {p["type"] for p in mine.programs.values()} == {"xdp"}
    assert_same_programs_and_maps(mine, libbpf, btf=True)


def test_a_programs_own_policy_type_wins(compile_bpf, bpffs, source_dir, bpfloader_cli):
    obj = compile_bpf(UNTYPED, "untyped.o", "-g")
    policy = 'type = "xdp"\n[program.second]\ntype = "tc"\n'
    done = load_ours(bpfloader_cli, source_dir, bpffs, obj, policy)
    assert done.returncode == 0, done.stderr
    loaded = loaded_by_bpfloader(bpffs)
    assert {n: p["type"] for n, p in loaded.programs.items()} == {
        "first": "xdp",
        "second": "sched_cls",
    }


def test_an_unknown_policy_type_fails_the_object_on_one_line(
    compile_bpf, bpffs, source_dir, bpfloader_cli
):
    obj = compile_bpf(UNTYPED, "untyped.o", "-g")
    done = load_ours(bpfloader_cli, source_dir, bpffs, obj, 'type = "xpd"\n')
    policy = source_dir / "untyped.policy"
    lines = [x for x in done.stderr.splitlines() if f"policy {policy}: type: 'xpd'" in x]
    assert len(lines) == 1, done.stderr
    assert "is not a program type this loader knows (valid: socket, " in lines[0]
    assert pins_in(bpffs) == set()


def test_legacy_maps_load_as_the_same_maps_declared_in_btf(
    compile_bpf, bpffs, source_dir, bpfloader_cli
):
    legacy = libbpf_object(compile_bpf, "libbpf_legacy_maps.c", "legacy.bpf.o")
    assert bpftool_loadall(legacy, bpffs).returncode != 0  # libbpf 1.x refuses legacy maps
    done = load_ours(bpfloader_cli, source_dir, bpffs / "ours", legacy)
    assert done.returncode == 0, done.stderr
    assert pins_in(bpffs / "ours") == {
        "map_legacy_counts",
        "map_legacy_slots",
        "map_legacy_events",
        "prog_legacy_socket_count_packets",
        "prog_legacy_kprobe_do_unlinkat",
    }
    btf_maps = compile_bpf("libbpf_legacy_maps.c", "legacy.bpf.o", "-g", "-DBTF_MAPS")
    shutil.rmtree(bpffs / "libbpf", ignore_errors=True)  # what the refused load left, if any
    loaded = bpftool_loadall(btf_maps, bpffs)
    assert loaded.returncode == 0, loaded.stderr
    mine, libbpf = loaded_by_bpfloader(bpffs / "ours"), loaded_by_bpftool(bpffs)
    assert libbpf.maps["events"]["max_entries"] > 0  # one slot per possible CPU, in both
    assert_same_programs_and_maps(mine, libbpf)


def test_legacy_defs_with_fields_libbpf_cannot_say_fail_on_one_line(
    compile_bpf, bpffs, source_dir, bpfloader_cli
):
    obj = compile_bpf(
        "libbpf_legacy_maps.c", "legacy_x.o", "-g", "-DDEF_WORDS=7", "-DNONZERO_EXTRA"
    )
    done = load_ours(bpfloader_cli, source_dir, bpffs, obj)
    assert (
        f"{source_dir / 'legacy_x.o'}: maps: map 'counts': its 28-byte def has a non-zero byte"
    ) in done.stderr
    assert pins_in(bpffs) == set()
