"""Android's rule for `$` variants, in the kernel: of the code sections sharing one pin, the
first in section order whose gates pass is pinned, every later one is skipped, and an optional
variant that fails to load leaves the pin to the next one (Android's loadCodeSections).

Objects come from tests/bpf/k_variant_rules.c, each built twice: as `bpfloader build` builds
(-g) and as Android builds (-g, then stripped of .BTF.ext and the debug sections). Which
variant holds a pin is read from the kernel twice over: the program's name (bpftool) and what
it returns when run (BPF_PROG_TEST_RUN).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bpfloader.client import Program
from tests.libbpf_support import bpftool

pytestmark = pytest.mark.kernel

OBJECT = "k_variant_rules.o"
PREFIX = "prog_k_variant_rules_skfilter_"
PACKET = bytes(64)  # a socket filter's test run needs at least an Ethernet header


@pytest.fixture(params=["bpfloader-build", "android-build"])
def build(request, compile_bpf, compile_android):
    return compile_bpf if request.param == "bpfloader-build" else compile_android


def load_rules(build, source_dir: Path, bpffs: Path, cli, *flags: str, extra: tuple = ()):
    shutil.copy(build("k_variant_rules.c", OBJECT, *flags), source_dir / OBJECT)
    run = cli("load", "--dir", source_dir, "--pin-root", bpffs, *extra)
    assert run.returncode == 0, run.stderr
    return run


def pinned(bpffs: Path, program: str) -> tuple[str, int]:
    """(kernel name, return value on a test run) of the program pinned for `program`."""
    path = bpffs / f"{PREFIX}{program}"
    name = bpftool("prog", "show", "pinned", path)["name"]
    with Program.open(str(path)) as prog:
        return name, prog.test_run(PACKET).retval


def skipped(cli, source_dir: Path, bpffs: Path, *extra: str) -> dict[str, str]:
    """function -> reason of every program the status lists as skipped (a program is named
    by its function; a variant's reason says which variant it is)."""
    status = cli("status", "--pin-root", bpffs, "--dir", source_dir, "--json", *extra)
    report = json.loads(status.stdout)
    assert report["state"] == "recorded"
    (obj,) = report["objects"]
    return {s["name"]: s["reason"] for s in obj["skipped"] if s["kind"] == "program"}


@pytest.mark.parametrize(
    ("flags", "winner", "loser"),
    [((), ("order_new", 2), "order$old"), (("-DOLD_FIRST",), ("order_old", 1), "order$new")],
    ids=["new-first", "old-first"],
)
def test_of_two_passing_variants_the_first_in_section_order_is_pinned(
    build, source_dir, bpffs, bpfloader_cli, flags, winner, loser
):
    run = load_rules(build, source_dir, bpffs, bpfloader_cli, *flags)
    assert pinned(bpffs, "order") == winner
    first = f"skfilter/order${winner[0].removeprefix('order_')}"
    reason = f"variant 'skfilter/{loser}': '{first}' was pinned first"
    function = loser.replace("$", "_")
    assert skipped(bpfloader_cli, source_dir, bpffs)[function] == reason
    # The run's log says it too, naming the object, the program and why.
    assert f"{source_dir / OBJECT}: program {function} skipped: {reason}" in run.stderr


def test_only_the_passing_one_of_three_variants_is_pinned(build, source_dir, bpffs, bpfloader_cli):
    load_rules(build, source_dir, bpffs, bpfloader_cli)
    assert pinned(bpffs, "middle") == ("middle_b", 11)
    reasons = skipped(bpfloader_cli, source_dir, bpffs)
    assert reasons["middle_a"].startswith(
        "variant 'skfilter/middle$a': needs kernel >= 0.0.0 and < 4.0.0, running "
    )
    assert reasons["middle_c"].startswith(
        "variant 'skfilter/middle$c': needs kernel >= 200.0.0 and < inf, running "
    )


def test_a_variant_gated_out_by_loader_version_leaves_the_pin_to_the_next(
    build, source_dir, bpffs, bpfloader_cli
):
    load_rules(build, source_dir, bpffs, bpfloader_cli)
    assert pinned(bpffs, "loader") == ("loader_now", 21)
    assert skipped(bpfloader_cli, source_dir, bpffs)["loader_future"] == (
        "variant 'skfilter/loader$future': needs loader version >= 4096 and < 65536, this "
        "loader is 48"
    )


@pytest.mark.parametrize(
    ("build_type", "winner", "reason"),
    [
        (
            (),
            ("build_no_ud", 30),
            "'skfilter/build$no_ud' was pinned first",
        ),
        (
            ("--build-type", "userdebug"),
            ("build_any", 31),
            "ignored on this platform (x86_64/userdebug)",
        ),
    ],
    ids=["no-build-type", "userdebug"],
)
def test_a_variant_gated_out_by_build_type_leaves_the_pin_to_the_next(
    build, source_dir, bpffs, bpfloader_cli, build_type, winner, reason
):
    load_rules(build, source_dir, bpffs, bpfloader_cli, extra=build_type)
    assert pinned(bpffs, "build") == winner
    loser = "skfilter/build$any" if not build_type else "skfilter/build$no_ud"
    function = loser.removeprefix("skfilter/").replace("$", "_")
    # status shows the state as recorded, whatever build type the load was told
    assert skipped(bpfloader_cli, source_dir, bpffs)[function] == (f"variant '{loser}': {reason}")


def test_an_optional_variant_that_fails_to_load_leaves_the_pin_to_the_next(
    build, source_dir, bpffs, bpfloader_cli
):
    load_rules(build, source_dir, bpffs, bpfloader_cli)
    assert pinned(bpffs, "fallback") == ("fallback_plain", 41)
    assert pinned(bpffs, "optok") == ("optok_opt", 50)
    reasons = skipped(bpfloader_cli, source_dir, bpffs)
    assert reasons["fallback_opt"].startswith(
        "variant 'skfilter/fallback$opt': optional program failed to load: rejected by the "
        "verifier at "
    )
    assert reasons["optok_plain"] == (
        "variant 'skfilter/optok$plain': 'skfilter/optok$opt' was pinned first"
    )


def test_dry_run_check_and_status_name_the_variant_pinned_and_each_skip(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    obj = compile_bpf("k_variant_rules.c", OBJECT)
    shutil.copy(obj, source_dir / OBJECT)
    order = f"{bpffs}/{PREFIX}order"
    dry = bpfloader_cli("load", "--dry-run", "--dir", source_dir, "--pin-root", bpffs)
    assert dry.returncode == 0, dry.stderr
    assert f"  load   prog {order}  0:0 0440  variant 'skfilter/order$new'" in dry.stdout
    assert (
        f"  skip   prog {order}: variant 'skfilter/order$old': 'skfilter/order$new' was pinned "
        "first"
    ) in dry.stdout
    assert (
        f"  skip   prog {bpffs}/{PREFIX}middle: variant 'skfilter/middle$a': needs kernel "
        ">= 0.0.0 and < 4.0.0, running "
    ) in dry.stdout
    assert (
        f"  load   prog {bpffs}/{PREFIX}optok  0:0 0440  variant 'skfilter/optok$plain', loaded "
        "only if the optional variants ahead of it fail to load"
    ) in dry.stdout

    check = bpfloader_cli("check", "--kernel", "--pin-root", bpffs, obj)
    assert check.returncode == 0, check.stdout
    lines = check.stdout.splitlines()
    assert f"  prog {order}  0:0 0440  variant 'skfilter/order$new'" in lines
    # Only the kernel can tell which of an optional variant and its fallback is pinned.
    assert (
        f"  skip prog {bpffs}/{PREFIX}optok: variant 'skfilter/optok$plain': 'skfilter/optok$opt' "
        "was pinned first"
    ) in lines
    assert not [line for line in lines if "variant 'skfilter/fallback$plain':" in line]

    load = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert load.returncode == 0, load.stderr
    status = bpfloader_cli("status", "--dir", source_dir, "--pin-root", bpffs)
    text = status.stdout.splitlines()
    (line,) = [x for x in text if x.startswith(f"  program {order}  ")]
    assert line.endswith("  (variant 'skfilter/order$new')")
    assert (
        "  skipped program order_old: variant 'skfilter/order$old': 'skfilter/order$new' was "
        "pinned first"
    ) in text


def test_reload_of_a_reordered_object_swaps_in_the_new_first_variant(
    build, source_dir, bpffs, bpfloader_cli
):
    load_rules(build, source_dir, bpffs, bpfloader_cli)
    assert pinned(bpffs, "order") == ("order_new", 2)
    shutil.copy(build("k_variant_rules.c", OBJECT, "-DOLD_FIRST"), source_dir / OBJECT)
    run = bpfloader_cli("reload", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    assert pinned(bpffs, "order") == ("order_old", 1)
    assert skipped(bpfloader_cli, source_dir, bpffs)["order_new"] == (
        "variant 'skfilter/order$new': 'skfilter/order$old' was pinned first"
    )


def test_two_programs_that_are_not_variants_of_one_name_but_share_a_pin_fail_naming_both(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    clash = compile_bpf(
        "#include <bpf_helpers.h>\n"
        'DEFINE_BPF_PROG("skfilter/a_b", 0, 0, first)(struct __sk_buff *skb) { return 1; }\n'
        'DEFINE_BPF_PROG("skfilter/a/b", 0, 0, second)(struct __sk_buff *skb) { return 2; }\n'
        'LICENSE("GPL");\n',
        "clash.o",
    )
    shutil.copy(clash, source_dir / "clash.o")
    shutil.copy(compile_bpf("k_variant_rules.c", OBJECT), source_dir / OBJECT)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr  # not critical: the other object loads
    assert (
        f"{source_dir / 'clash.o'}: skfilter/a/b: sections 'skfilter/a_b' and 'skfilter/a/b' "
        "are not variants of one program but would both be pinned at "
        f"{bpffs}/prog_clash_skfilter_a_b"
    ) in run.stderr
    assert not (bpffs / "prog_clash_skfilter_a_b").exists()
    assert (bpffs / f"{PREFIX}order").exists()
