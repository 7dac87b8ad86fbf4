"""Planner decisions (pure): gates, variants, optional programs, locations, claims and reuse.

Objects are compiled from tests/bpf/pure_plan.c; the environment is given explicitly, and the
pins that "exist" come from a fake pin_exists.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from bpfloader.errors import PlanError
from bpfloader.loader.gates import Environment, skip_reason
from bpfloader.loader.plan import ObjectPlan, Planner, SourceObject
from bpfloader.loader.results import Action
from bpfloader.obj.kver import kver
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.reader import read_object
from bpfloader.obj.spec import Gates, ObjectSpec

ROOT = "/sys/fs/bpf"


def env(
    kernel: tuple[int, int, int] = (5, 15, 0),
    loader: int = 48,
    arch: str = "x86_64",
    build_type: str | None = None,
) -> Environment:
    return Environment(kernel=kernel, loader_version=loader, arch=arch, build_type=build_type)


def nothing_pinned(path: str) -> bool:
    return False


def load_spec(compile_bpf, path: str, *flags: str, source: str = "pure_plan.c") -> ObjectSpec:
    return read_object(compile_bpf(source, None, *flags).read_bytes(), path)


def plan_one(
    spec: ObjectSpec,
    environment: Environment | None = None,
    location: str = "",
    pin_exists=nothing_pinned,
) -> ObjectPlan:
    planner = Planner(environment or env(), ROOT, pin_exists)
    return planner.plan(SourceObject(spec.path, location), spec)


def rows(plan: ObjectPlan) -> list[tuple[str, str, str, str, str]]:
    """(kind, name, pin path under ROOT, action, owner or skip reason) for every item."""
    assert plan.error is None, str(plan.error)
    out = []
    for m in plan.maps:
        detail = m.reason if m.action is Action.SKIP else str(m.owner)
        out.append(
            ("map", m.spec.name, m.pin_path.removeprefix(ROOT + "/"), m.action.value, detail)
        )
    for p in plan.programs:
        detail = p.reason if p.action is Action.SKIP else str(p.owner)
        out.append(
            ("prog", p.spec.section, p.pin_path.removeprefix(ROOT + "/"), p.action.value, detail)
        )
    return out


def action(plan: ObjectPlan, name: str) -> tuple[str, str]:
    """The action and reason of the map named `name`, or of the program in section `name`."""
    items = [(m.spec.name, m) for m in plan.maps] + [(p.spec.section, p) for p in plan.programs]
    for item_name, item in items:
        if item_name == name:
            return item.action.value, item.reason
    raise AssertionError(f"{name} not in the plan")


@pytest.fixture(scope="module")
def plan_spec(compile_bpf) -> ObjectSpec:
    return load_spec(compile_bpf, "/etc/bpf/plan.o")


# -- the whole plan -----------------------------------------------------------------------------


def test_whole_plan(plan_spec):
    plan = plan_one(plan_spec)
    assert plan.skip_reason is None
    assert plan.critical is False
    assert rows(plan) == [
        ("map", "new_map", "map_plan_new_map", "create", "0:0 0600"),
        ("map", "always_map", "map_plan_always_map", "create", "0:1234 0640"),
        ("map", "common_map", "map__common_map", "create", "0:1235 0660"),
        ("map", "subdir_map", "elsewhere/map_plan_subdir_map", "create", "0:0 0600"),
        ("map", "not_x86_map", "map_plan_not_x86_map", "skip", "ignored on this platform (x86_64)"),
        ("map", "not_user_map", "map_plan_not_user_map", "create", "0:0 0600"),
        (
            "map",
            "new_loader_map",
            "map_plan_new_loader_map",
            "skip",
            "needs loader version >= 49 and < 65536, this loader is 48",
        ),
        (
            "prog",
            "tracepoint/opt/uses_new",
            "prog_plan_tracepoint_opt_uses_new",
            "load",
            "0:0 0440",
        ),
        (
            "prog",
            "tracepoint/always/uses_always",
            "prog_plan_tracepoint_always_uses_always",
            "load",
            "0:1234 0440",
        ),
        (
            "prog",
            "schedcls/clat$4_14",
            "prog_plan_schedcls_clat",
            "skip",
            "needs kernel >= 4.14.0 and < 5.10.0, running 5.15.0",
        ),
        ("prog", "schedcls/clat$5_10", "prog_plan_schedcls_clat", "load", "0:0 0440"),
        (
            "prog",
            "xdp/old_loader",
            "prog_plan_xdp_old_loader",
            "skip",
            "needs loader version >= 0 and < 48, this loader is 48",
        ),
        ("prog", "xdp/pinned", "prog_dir/prog_plan_xdp_pinned", "load", "7:8 0440"),
        ("prog", "skfilter/not_userdebug", "prog_plan_skfilter_not_userdebug", "load", "0:0 0440"),
    ]


# -- gates --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "expected"),
    [
        ((5, 9, 255), "skip"),
        ((5, 10, 0), "create"),  # min is inclusive
        ((6, 0, 300), "create"),
        ((6, 1, 0), "skip"),  # max is exclusive
        ((6, 18, 44), "skip"),
    ],
)
def test_kernel_version_gate_on_a_map(plan_spec, kernel, expected):
    plan = plan_one(plan_spec, env(kernel=kernel))
    got, reason = action(plan, "new_map")
    assert got == expected
    if expected == "skip":
        running = ".".join(map(str, kernel))
        assert reason == f"needs kernel >= 5.10.0 and < 6.1.0, running {running}"


def test_gates_directly():
    g = Gates(min_kver=kver(5, 10, 0), max_kver=kver(6, 1, 0), min_loader=3, max_loader=9)
    assert skip_reason(g, env(kernel=(5, 10, 0), loader=3)) is None
    assert skip_reason(g, env(kernel=(6, 0, 65535), loader=8)) is None
    assert skip_reason(g, env(kernel=(6, 1, 0), loader=3)) is not None
    assert skip_reason(g, env(kernel=(5, 10, 0), loader=9)) == (
        "needs loader version >= 3 and < 9, this loader is 9"
    )
    assert skip_reason(g, env(kernel=(5, 10, 0), loader=2)) == (
        "needs loader version >= 3 and < 9, this loader is 2"
    )
    assert skip_reason(Gates(), env(kernel=(255, 255, 65534), loader=0xFFFF)) is None
    assert skip_reason(Gates(), env(loader=0x10000)) is not None


def test_optional_program_using_a_gated_out_map_is_skipped(plan_spec):
    plan = plan_one(plan_spec, env(kernel=(6, 1, 0)))
    assert plan.error is None
    assert action(plan, "tracepoint/opt/uses_new") == (
        "skip",
        "uses map 'new_map', skipped here (needs kernel >= 5.10.0 and < 6.1.0, running 6.1.0)",
    )
    assert action(plan, "tracepoint/always/uses_always") == ("load", "")


def test_mandatory_program_using_a_gated_out_map_fails_the_object(compile_bpf):
    spec = load_spec(compile_bpf, "/etc/bpf/plan.o", "-DMANDATORY_USES_GATED")
    assert action(plan_one(spec, env(kernel=(5, 15, 0))), "tracepoint/mand/uses_new") == (
        "load",
        "",
    )
    plan = plan_one(spec, env(kernel=(6, 1, 0)))
    assert isinstance(plan.error, PlanError)
    assert plan.error.section == "tracepoint/mand/uses_new"
    assert str(plan.error) == (
        "/etc/bpf/plan.o: tracepoint/mand/uses_new: uses map 'new_map', skipped here "
        "(needs kernel >= 5.10.0 and < 6.1.0, running 6.1.0)"
    )
    assert (plan.maps, plan.programs, plan.skip_reason) == ((), (), None)


def test_object_level_loader_version_gate(compile_bpf, plan_spec):
    assert (plan_spec.min_loader, plan_spec.max_loader) == (0, 0x10000)
    plan = plan_one(plan_spec, env(loader=0x10000))  # max is exclusive
    assert plan.skip_reason == "needs loader version >= 0 and < 65536, this loader is 65536"
    assert (plan.maps, plan.programs, plan.error) == ((), (), None)

    newer = load_spec(compile_bpf, "/etc/bpf/plan.o", "-DBPFLOADER_MIN_VER=49u")
    assert plan_one(newer, env(loader=48)).skip_reason == (
        "needs loader version >= 49 and < 65536, this loader is 48"
    )
    plan = plan_one(newer, env(loader=49))  # min is inclusive
    assert plan.skip_reason is None
    assert action(plan, "always_map") == ("create", "")


def test_per_def_loader_version_gates(plan_spec):
    at_47 = plan_one(plan_spec, env(loader=47))
    assert action(at_47, "xdp/old_loader") == ("load", "")
    assert action(at_47, "new_loader_map")[0] == "skip"
    at_49 = plan_one(plan_spec, env(loader=49))
    assert action(at_49, "xdp/old_loader") == (
        "skip",
        "needs loader version >= 0 and < 48, this loader is 49",
    )
    assert action(at_49, "new_loader_map") == ("create", "")


@pytest.mark.parametrize(
    ("arch", "expected"), [("x86_64", "skip"), ("aarch64", "create"), ("i686", "create")]
)
def test_ignore_on_arch_bit(plan_spec, arch, expected):
    assert action(plan_one(plan_spec, env(arch=arch)), "not_x86_map")[0] == expected


def test_ignore_on_arch_reason_names_the_platform(plan_spec):
    assert action(plan_one(plan_spec, env(arch="x86_64")), "not_x86_map")[1] == (
        "ignored on this platform (x86_64)"
    )


@pytest.mark.parametrize(
    ("build_type", "not_user_map", "not_userdebug"),
    [
        (None, "create", "load"),  # no build type configured: build-type bits mean nothing
        ("eng", "create", "load"),
        ("user", "skip", "load"),
        ("userdebug", "create", "skip"),
    ],
)
def test_ignore_on_build_type_bits(plan_spec, build_type, not_user_map, not_userdebug):
    plan = plan_one(plan_spec, env(arch="aarch64", build_type=build_type))
    assert action(plan, "not_user_map")[0] == not_user_map
    assert action(plan, "skfilter/not_userdebug")[0] == not_userdebug
    if build_type == "user":
        assert action(plan, "not_user_map")[1] == "ignored on this platform (aarch64/user)"


def test_environment_bits():
    assert env(arch="x86_64").ignore_bits == 0x40
    assert env(arch="x86_64", build_type="userdebug").ignore_bits == 0x44
    assert env(arch="aarch64", build_type="eng").ignore_bits == 0x11
    assert env(arch="riscv64").ignore_bits == 0x80
    assert env(arch="armv7l", build_type="user").ignore_bits == 0x0A
    assert env(kernel=(6, 18, 44)).kver == (6 << 24) + (18 << 16) + 44


# -- variants -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kernel", "old", "new"),
    [((4, 19, 0), "load", "skip"), ((5, 10, 0), "skip", "load"), ((6, 18, 0), "skip", "load")],
)
def test_exactly_one_variant_passes_and_is_pinned_at_the_base_name(plan_spec, kernel, old, new):
    plan = plan_one(plan_spec, env(kernel=kernel))
    variants = [p for p in plan.programs if p.spec.base_section == "schedcls/clat"]
    assert [(p.spec.section, p.action.value) for p in variants] == [
        ("schedcls/clat$4_14", old),
        ("schedcls/clat$5_10", new),
    ]
    assert {p.pin_path for p in variants} == {f"{ROOT}/prog_plan_schedcls_clat"}


def test_no_variant_passing_skips_them_all(plan_spec):
    plan = plan_one(plan_spec, env(kernel=(4, 9, 0)))
    assert plan.error is None
    assert action(plan, "schedcls/clat$4_14") == (
        "skip",
        "needs kernel >= 4.14.0 and < 5.10.0, running 4.9.0",
    )
    assert action(plan, "schedcls/clat$5_10") == (
        "skip",
        "needs kernel >= 5.10.0 and < inf, running 4.9.0",
    )


def test_of_two_variants_passing_the_first_in_section_order_is_pinned(compile_bpf):
    spec = load_spec(compile_bpf, "/etc/bpf/plan.o", "-DOVERLAP")
    plan = plan_one(spec, env(kernel=(5, 10, 0)))  # only $5_10 passes there
    assert action(plan, "schedcls/clat$5_10") == ("load", "")
    plan = plan_one(spec, env(kernel=(5, 5, 0)))  # both pass: Android pins the first
    assert plan.error is None
    assert action(plan, "schedcls/clat$4_14") == ("load", "")
    assert action(plan, "schedcls/clat$5_10") == (
        "skip",
        "'schedcls/clat$4_14' was pinned first",
    )
    (later,) = [p for p in plan.programs if p.spec.section == "schedcls/clat$5_10"]
    assert later.variant_of == "schedcls/clat$4_14" and not later.is_fallback


def test_a_variant_behind_an_optional_one_is_its_fallback(compile_bpf):
    source = (
        "#include <bpf_helpers.h>\n"
        'DEFINE_OPTIONAL_BPF_PROG("xdp/x$opt", 0, 0, x_opt)(struct xdp_md *c) { return 1; }\n'
        'DEFINE_BPF_PROG("xdp/x$plain", 0, 0, x_plain)(struct xdp_md *c) { return 2; }\n'
        'DEFINE_BPF_PROG("xdp/x$late", 0, 0, x_late)(struct xdp_md *c) { return 3; }\n'
        'LICENSE("GPL");\n'
    )
    plan = plan_one(read_object(compile_bpf(source, "fb.o").read_bytes(), "/etc/bpf/fb.o"))
    assert plan.error is None
    first, fallback, late = plan.programs
    assert (first.action, first.variant_of, first.is_fallback) == (Action.LOAD, "", False)
    assert (fallback.action, fallback.variant_of, fallback.is_fallback) == (
        Action.LOAD,
        "xdp/x$opt",
        True,
    )
    # Behind a variant that is not optional: it can never be pinned.
    assert (late.action, late.reason) == (
        Action.SKIP,
        "'xdp/x$opt' was pinned first",
    )
    assert {p.pin_path for p in plan.programs} == {f"{ROOT}/prog_fb_xdp_x"}


def test_two_programs_at_one_pin_that_are_not_variants_fail_naming_both(compile_bpf):
    source = (
        "#include <bpf_helpers.h>\n"
        'DEFINE_BPF_PROG("xdp/a_b", 0, 0, one)(struct xdp_md *c) { return 1; }\n'
        'DEFINE_BPF_PROG("xdp/a/b$v", 0, 0, two)(struct xdp_md *c) { return 2; }\n'
        'LICENSE("GPL");\n'
    )
    plan = plan_one(read_object(compile_bpf(source, "ab.o").read_bytes(), "/etc/bpf/ab.o"))
    assert isinstance(plan.error, PlanError)
    assert str(plan.error) == (
        "/etc/bpf/ab.o: xdp/a/b$v: sections 'xdp/a_b' and 'xdp/a/b$v' are not variants of one "
        f"program but would both be pinned at {ROOT}/prog_ab_xdp_a_b"
    )


def test_the_variant_suffix_is_cut_at_the_last_dollar_as_android_cuts_it(compile_bpf):
    plan = plan_one(load_spec(compile_bpf, "/etc/bpf/plan.o"))
    clat = [p for p in plan.programs if p.spec.section.startswith("schedcls/clat$")]
    assert {p.spec.base_section for p in clat} == {"schedcls/clat"}
    assert replace(clat[0].spec, section="schedcls/a$b$c").base_section == "schedcls/a$b"


# -- where pins go ------------------------------------------------------------------------------


def test_location_subdirectory_and_pin_subdir_override(compile_bpf):
    spec = load_spec(compile_bpf, "/etc/bpf/net_shared/plan.o")
    plan = plan_one(spec, location="net_shared")
    paths = {name: path for _, name, path, _, _ in rows(plan)}
    assert paths["new_map"] == "net_shared/map_plan_new_map"
    assert paths["common_map"] == "net_shared/map__common_map"
    assert paths["subdir_map"] == "elsewhere/map_plan_subdir_map"  # pin_subdir overrides
    assert paths["xdp/pinned"] == "prog_dir/prog_plan_xdp_pinned"
    assert paths["schedcls/clat$5_10"] == "net_shared/prog_plan_schedcls_clat"
    assert paths["tracepoint/always/uses_always"] == (
        "net_shared/prog_plan_tracepoint_always_uses_always"
    )


# -- claims between objects ---------------------------------------------------------------------


def test_a_shared_map_may_be_claimed_by_two_objects(compile_bpf):
    planner = Planner(env(), ROOT, nothing_pinned)
    a = load_spec(compile_bpf, "/etc/bpf/a.o")
    b = load_spec(compile_bpf, "/etc/bpf/b.o")
    plan_a = planner.plan(SourceObject(a.path), a)
    plan_b = planner.plan(SourceObject(b.path), b)
    assert (plan_a.error, plan_b.error) == (None, None)
    assert action(plan_a, "common_map") == ("create", "")
    assert action(plan_b, "common_map") == ("reuse", "")  # made by a.o earlier in the run
    shared = [m.pin_path for m in (*plan_a.maps, *plan_b.maps) if m.spec.name == "common_map"]
    assert shared == [f"{ROOT}/map__common_map"] * 2
    assert action(plan_b, "always_map") == ("create", "")


def test_two_objects_claiming_one_pin_fail_the_second(compile_bpf):
    planner = Planner(env(), ROOT, nothing_pinned)
    first = load_spec(compile_bpf, "/etc/bpf/x@1.o")
    second = load_spec(compile_bpf, "/etc/bpf/x@2.o")
    third = load_spec(compile_bpf, "/etc/bpf/x@3.o")
    assert planner.plan(SourceObject(first.path), first).error is None
    plan = planner.plan(SourceObject(second.path), second)
    assert isinstance(plan.error, PlanError)
    assert str(plan.error) == (
        f"/etc/bpf/x@2.o: maps: pin {ROOT}/map_x_new_map is already made by /etc/bpf/x@1.o"
    )
    # The failed object claimed nothing: the third one still collides with the first.
    plan = planner.plan(SourceObject(third.path), third)
    assert plan.error is not None and str(plan.error).endswith("already made by /etc/bpf/x@1.o")


def test_two_objects_claiming_one_program_pin(compile_bpf):
    planner = Planner(env(), ROOT, nothing_pinned)
    one = load_spec(compile_bpf, "/etc/bpf/p@1.o", source="pure_prefixes.c")
    two = load_spec(compile_bpf, "/etc/bpf/p@2.o", source="pure_prefixes.c")
    elsewhere = load_spec(compile_bpf, "/etc/bpf/other/p@2.o", source="pure_prefixes.c")
    assert planner.plan(SourceObject(one.path), one).error is None
    plan = planner.plan(SourceObject(two.path), two)
    assert isinstance(plan.error, PlanError)
    assert plan.error.section == "kprobe/do_unlinkat"
    assert str(plan.error) == (
        f"/etc/bpf/p@2.o: kprobe/do_unlinkat: pin {ROOT}/prog_p_kprobe_do_unlinkat "
        "is already made by /etc/bpf/p@1.o"
    )
    # In another location the same names are other pins.
    assert planner.plan(SourceObject(elsewhere.path, "other"), elsewhere).error is None


# -- reuse --------------------------------------------------------------------------------------


def test_reuse_when_the_pin_exists(plan_spec):
    existing = {
        f"{ROOT}/map_plan_always_map",
        f"{ROOT}/prog_plan_schedcls_clat",
        f"{ROOT}/map_plan_not_x86_map",  # gated out: stays skipped whatever is pinned
    }
    asked: list[str] = []

    def pin_exists(path: str) -> bool:
        asked.append(path)
        return path in existing

    plan = plan_one(plan_spec, pin_exists=pin_exists)
    assert action(plan, "always_map") == ("reuse", "")
    assert action(plan, "schedcls/clat$5_10") == ("reuse", "")
    assert action(plan, "not_x86_map")[0] == "skip"
    assert action(plan, "new_map") == ("create", "")
    assert action(plan, "xdp/pinned") == ("load", "")
    reused = [i.pin_path for i in (*plan.maps, *plan.programs) if i.action is Action.REUSE]
    assert sorted(reused) == [f"{ROOT}/map_plan_always_map", f"{ROOT}/prog_plan_schedcls_clat"]
    assert f"{ROOT}/map_plan_always_map" in asked


def test_owner_of_the_plan_items(plan_spec):
    plan = plan_one(plan_spec)
    owners = {i.pin_path.removeprefix(ROOT + "/"): i.owner for i in (*plan.maps, *plan.programs)}
    assert owners["map_plan_always_map"] == Ownership(0, 1234, 0o640)
    assert owners["prog_dir/prog_plan_xdp_pinned"] == Ownership(7, 8, 0o440)
