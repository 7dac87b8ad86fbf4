"""The pin naming contract (README.md, "Pin names") and the names refused before any syscall."""

from __future__ import annotations

import dataclasses

import pytest

from bpfloader.errors import PlanError
from bpfloader.loader.gates import Environment
from bpfloader.loader.naming import (
    check_component,
    check_subdir,
    map_pin_name,
    object_name,
    pin_path,
    program_pin_name,
)
from bpfloader.loader.plan import Planner, SourceObject
from bpfloader.loader.results import Action
from bpfloader.obj.reader import read_object

# A kernel on which every program of pure_every_field.c has its maps (kver_map: 5.10 <= k < 6.1).
ENV = Environment(kernel=(5, 15, 0), loader_version=48, arch="x86_64")


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("offload@mainline.o", "offload"),
        ("/etc/bpf/net_shared/offload@mainline.o", "offload"),
        ("myschedtp.o", "myschedtp"),
        ("a.b.o", "a.b"),  # cut at the LAST '.': the dot stays (and is refused later)
        ("x@y@z.o", "x@y"),  # cut at the LAST '@'
        ("a@b.c@d.o", "a@b.c"),  # '.' first, then '@'
        ("clatd@v2.1.o", "clatd"),  # '.' first: "clatd@v2.1" -> "clatd@v2" -> "clatd"
        ("plain", "plain"),
        ("/etc/bpf/dir.d/netd.o", "netd"),  # only the basename counts
    ],
)
def test_object_name(path, name):
    assert object_name(path) == name


@pytest.mark.parametrize("path", [".o", "/etc/bpf/.o", "@mainline.o", "/etc/bpf/@v2.o"])
def test_object_name_that_would_be_empty_is_refused(path):
    """An empty FILENAME would make `map__NAME`, the shared maps' names: refuse it."""
    with pytest.raises(PlanError, match="empty"):
        object_name(path)


def test_program_pin_name_strips_the_variant_and_replaces_slashes(compile_bpf):
    spec = read_object(compile_bpf("pure_every_field.c").read_bytes(), "clat.o")
    variant = next(p for p in spec.programs if p.section.endswith("$4_14"))
    assert variant.section == "schedcls/ingress6/clat_ether$4_14"
    assert program_pin_name("X", variant.base_section) == "prog_X_schedcls_ingress6_clat_ether"
    assert program_pin_name("myschedtp", "tracepoint/sched/sched_switch") == (
        "prog_myschedtp_tracepoint_sched_sched_switch"
    )
    assert program_pin_name("o", "sysctl") == "prog_o_sysctl"


def test_program_pin_name_refuses_an_unstripped_variant():
    with pytest.raises(PlanError, match=r"\$"):
        program_pin_name("X", "schedcls/a$5_10")


def test_map_pin_names():
    assert map_pin_name("myschedtp", "cpu_pid_map", shared=False) == "map_myschedtp_cpu_pid_map"
    assert map_pin_name("myschedtp", "cpu_pid_map", shared=True) == "map__cpu_pid_map"
    assert map_pin_name("", "x", shared=True) == "map__x"


def test_pin_path():
    assert pin_path("/sys/fs/bpf", "", "map_a_b") == "/sys/fs/bpf/map_a_b"
    assert pin_path("/sys/fs/bpf", "net_shared", "map_a_b") == "/sys/fs/bpf/net_shared/map_a_b"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("a.b", "contains '.', which bpffs refuses"),
        ("..", "contains '.', which bpffs refuses"),
        (".", "contains '.', which bpffs refuses"),
        ("a/b", "contains '/'"),
        ("", "is empty"),
        ("a\0b", "may hold only letters, digits, '_' and '-'"),
        ("café", "may hold only letters, digits, '_' and '-'"),
        ("ﬁle", "may hold only letters, digits, '_' and '-'"),
        ("a b", "may hold only letters, digits, '_' and '-'"),
        ("a\nb", "may hold only letters, digits, '_' and '-'"),
        ("x" * 256, "is longer than 255 characters"),
    ],
)
def test_refused_components(name, reason):
    with pytest.raises(PlanError) as caught:
        check_component(name, "map pin name")
    assert caught.value.reason == f"map pin name {name!r} {reason}"
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("name", ["a", "A-z_09", "x" * 255, "map_offload_tether_stats"])
def test_accepted_components(name):
    assert check_component(name, "pin") == name


def test_pin_names_with_refused_characters():
    with pytest.raises(PlanError, match=r"contains '\.'"):
        map_pin_name("obj", "a.b", shared=False)
    with pytest.raises(PlanError, match=r"contains '\.'"):
        map_pin_name("a.b", "m", shared=False)
    with pytest.raises(PlanError, match=r"contains '\.'"):
        program_pin_name("obj", "tracepoint/a.b")
    with pytest.raises(PlanError, match="only letters"):
        program_pin_name("obj", "tracepoint/é")


@pytest.mark.parametrize(
    ("subdir", "result"),
    [("", ""), ("net_shared", "net_shared"), ("net_shared/", "net_shared"), ("a//b", "a/b")],
)
def test_accepted_subdirs(subdir, result):
    assert check_subdir(subdir, "pin_subdir") == result


@pytest.mark.parametrize("subdir", ["..", "../etc", "a/../b", "a/./b", "a.d", "a b", "ü"])
def test_refused_subdirs(subdir):
    with pytest.raises(PlanError):
        check_subdir(subdir, "pin_subdir")


class NoSyscalls:
    """A pin_exists that records every path it is asked about."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, path: str) -> bool:
        self.asked.append(path)
        return False


@pytest.fixture(scope="module")
def every_spec(compile_bpf):
    path = compile_bpf("pure_every_field.c")
    return read_object(path.read_bytes(), "/etc/bpf/every.o")


def test_bad_map_name_fails_the_object_before_any_pin_lookup(every_spec):
    bad_map = dataclasses.replace(every_spec.maps[0], name="bad.name")
    spec = dataclasses.replace(every_spec, maps=(bad_map, *every_spec.maps[1:]))
    pin_exists = NoSyscalls()
    plan = Planner(ENV, "/sys/fs/bpf", pin_exists).plan(SourceObject(spec.path), spec)
    assert isinstance(plan.error, PlanError)
    assert str(plan.error) == (
        "/etc/bpf/every.o: maps: map pin name 'map__bad.name' contains '.', which bpffs refuses"
    )
    assert (plan.maps, plan.programs) == ((), ())
    assert pin_exists.asked == []


def test_location_that_bpffs_would_refuse_fails_the_object(every_spec):
    pin_exists = NoSyscalls()
    plan = Planner(ENV, "/sys/fs/bpf", pin_exists).plan(
        SourceObject(every_spec.path, location="dir.d"), every_spec
    )
    assert isinstance(plan.error, PlanError)
    # first_map has its own pin_subdir; plain_map is the first to need the location.
    assert "location directory 'dir.d' contains '.'" in str(plan.error)
    assert all("dir.d" not in p for p in pin_exists.asked)


def test_pin_subdir_escaping_the_pin_root_fails_the_object(every_spec):
    escaping = dataclasses.replace(every_spec.programs[0], pin_subdir="../../etc")
    spec = dataclasses.replace(every_spec, programs=(escaping,))
    pin_exists = NoSyscalls()
    plan = Planner(ENV, "/sys/fs/bpf", pin_exists).plan(SourceObject(spec.path), spec)
    assert isinstance(plan.error, PlanError)
    assert str(plan.error).startswith(
        "/etc/bpf/every.o: schedcls/every_field: pin_subdir '../../etc' "
    )
    assert "'..'" in str(plan.error)
    assert all("etc" not in p.split("/sys/fs/bpf/", 1)[1] for p in pin_exists.asked)


def test_empty_file_name_fails_the_object(every_spec):
    spec = dataclasses.replace(every_spec, path="/etc/bpf/@v2.o")
    plan = Planner(ENV, "/sys/fs/bpf", NoSyscalls()).plan(SourceObject(spec.path), spec)
    assert isinstance(plan.error, PlanError)
    assert str(plan.error) == (
        "/etc/bpf/@v2.o: maps: object file name '@v2.o' gives an empty FILENAME"
    )


def test_good_names_plan_as_the_contract_says(compile_bpf):
    path = compile_bpf("myschedtp.c")
    spec = read_object(path.read_bytes(), "/etc/bpf/myschedtp.o")
    plan = Planner(ENV, "/sys/fs/bpf", NoSyscalls()).plan(SourceObject(spec.path), spec)
    assert plan.error is None
    assert [(m.pin_path, m.action) for m in plan.maps] == [
        ("/sys/fs/bpf/map_myschedtp_cpu_pid_map", Action.CREATE)
    ]
    assert [(p.pin_path, p.action) for p in plan.programs] == [
        ("/sys/fs/bpf/prog_myschedtp_tracepoint_sched_sched_switch", Action.LOAD)
    ]
