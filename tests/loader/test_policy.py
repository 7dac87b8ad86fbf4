"""Policy files: the owner, group and mode of an object's pins, from a TOML file next to it;
what is most specific wins; anything unknown or impossible is an error, never ignored. Pure,
but for how a policy file is read from the source directory (last: as root) and what a run
does with one the trust policy refuses (kernel)."""

from __future__ import annotations

import grp
import os
import pwd
import stat
from pathlib import Path

import pytest

from bpfloader.loader.policy import (
    PolicyError,
    PolicyRead,
    apply_policy,
    parse_policy,
    policy_path,
    read_policy_in,
)
from bpfloader.loader.scan import scan
from bpfloader.obj.bpftypes import MapType, ProgType
from bpfloader.obj.ownership import Ownership
from bpfloader.obj.spec import MapSpec, ObjectSpec, ProgramSpec

PATH = "/etc/bpf/netmon.policy"


def spec() -> ObjectSpec:
    maps = tuple(
        MapSpec(name, MapType.ARRAY, 4, 4, 1, 0, Ownership()) for name in ("counters", "bss")
    )
    programs = tuple(
        ProgramSpec("socket", fn, ProgType.SOCKET_FILTER, 0, b"", (), Ownership(mode=0o440))
        for fn in ("count_packets", "drop")
    )
    return ObjectSpec("/etc/bpf/netmon.o", "GPL", maps, programs)


def owners(obj: ObjectSpec) -> dict[str, Ownership]:
    return {m.name: m.owner for m in obj.maps} | {p.name: p.owner for p in obj.programs}


def test_the_policy_file_is_named_after_the_object():
    assert policy_path("/etc/bpf/netmon.o") == "/etc/bpf/netmon.policy"
    assert policy_path("/etc/bpf/net/offload@mainline.o") == "/etc/bpf/net/offload@mainline.policy"


def test_no_policy_changes_nothing():
    assert apply_policy(spec(), None) == spec()


def test_the_most_specific_table_wins_field_by_field():
    root_group = grp.getgrgid(0).gr_name
    policy = parse_policy(
        b"""
[maps]
group = 1234
mode = "0640"
[programs]
group = "%s"
[map.bss]
user = 4321
mode = 0o660
[program.drop]
group = 77
"""
        % root_group.encode(),
        PATH,
    )
    assert owners(apply_policy(spec(), policy)) == {
        "counters": Ownership(0, 1234, 0o640),
        "bss": Ownership(4321, 1234, 0o660),
        "count_packets": Ownership(0, 0, 0o440),
        "drop": Ownership(0, 77, 0o440),
    }


def test_names_are_looked_up():
    name = pwd.getpwuid(65534).pw_name
    policy = parse_policy(f'[maps]\nuser = "{name}"\n'.encode(), PATH)
    assert {o.uid for o in owners(apply_policy(spec(), policy)).values()} == {0, 65534}


@pytest.mark.parametrize(
    "text, reason",
    [
        (b"[maps\n", "not valid TOML"),
        (b"[mapz]\nmode = 1\n", "unknown table [mapz]"),
        (b'[maps]\nmdoe = "0640"\n', "[maps]: unknown key 'mdoe'"),
        (b'[maps]\nmode = "0999"\n', "[maps]: mode '0999' is not an octal number"),
        (b'[maps]\nmode = "01777"\n', "[maps]: mode 0o1777 has bits beyond 0777"),
        (b"[maps]\nmode = true\n", "mode must be octal"),
        (b'[programs]\nuser = "no-such-user-here"\n', "no user named 'no-such-user-here'"),
        (b"[programs]\ngroup = -1\n", "group -1 is not a valid id"),
        (b"map = 3\n", "[map] must hold tables [map.NAME]"),
        (b"[map.x]\n[map.x.y]\n", "[map.x]: unknown key 'y'"),
    ],
)
def test_impossible_policies_are_refused(text, reason):
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, PATH)
    assert str(caught.value).startswith(f"policy {PATH}: ")
    assert reason in str(caught.value)


@pytest.mark.parametrize("table, name", [("map", "nonesuch"), ("program", "counters")])
def test_a_policy_naming_what_the_object_lacks_is_refused(table, name):
    policy = parse_policy(f'[{table}.{name}]\nmode = "0600"\n'.encode(), PATH)
    with pytest.raises(PolicyError, match=f"the object has no {table} '{name}'"):
        apply_policy(spec(), policy)


# -- read from the source directory -----------------------------------------------------------


def test_policy_file_that_is_not_trusted_is_not_applied(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    obj = src / "ok.o"
    obj.write_bytes(b"x")
    policy = Path(policy_path(str(obj)))

    def read() -> PolicyRead:
        with scan(str(src)) as tree:
            return read_policy_in(tree.directory(""), str(obj), tree.within)

    assert read() == PolicyRead(None)  # none
    policy.write_text('[maps]\nmode = "0640"\n')
    assert read().policy is not None and read().ignored is None
    os.chmod(policy, 0o666)
    writable = f"writable by group root and everyone (gid 0, mode 0666; fix: chmod go-w {policy})"
    assert read() == PolicyRead(None, ignored=f"policy {policy}: not applied: {writable}")
    with scan(str(src)) as tree:  # insecure: applied, and said to be untrusted
        insecure = read_policy_in(tree.directory(""), str(obj), tree.within, insecure=True)
    assert insecure.policy is not None
    assert insecure.untrusted == f"its policy file {policy}: {writable}"
    policy.unlink()
    policy.symlink_to("ok.o")
    os.chown(policy, 1000, 1000, follow_symlinks=False)
    assert read() == PolicyRead(
        None, ignored=f"policy {policy}: not applied: a symbolic link owned by uid 1000"
    )


@pytest.mark.kernel
def test_a_run_does_not_apply_an_untrusted_policy_file(
    compile_bpf, source_dir: Path, bpffs: Path, bpfloader_cli
):
    """The object loads as it declares (root 0600 maps for a libbpf object), with a warning
    naming the policy file and why; a trusted one is applied again on reload."""
    obj = source_dir / "libbpf_globals.o"
    obj.write_bytes(compile_bpf("libbpf_globals.c").read_bytes())
    policy = source_dir / "libbpf_globals.policy"
    policy.write_text('[maps]\nmode = "0644"\n')
    os.chown(policy, 65534, 65534)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    warning = (
        f"bpfloader: warning: {obj}: policy {policy}: not applied: owned by uid 65534, not root "
        f"(mode 0644; fix: chown root {policy}); only root's own policy files are applied: its "
        "pins get the owners and modes the object declares"
    )
    assert warning in run.stderr.splitlines(), run.stderr
    assert stat.S_IMODE((bpffs / "map_libbpf_globals_bss").stat().st_mode) == 0o600
    os.chown(policy, 0, 0)
    run = bpfloader_cli("reload", "--dir", source_dir, "--pin-root", bpffs)
    assert run.returncode == 0, run.stderr
    assert "not applied" not in run.stderr
    assert stat.S_IMODE((bpffs / "map_libbpf_globals_bss").stat().st_mode) == 0o644
