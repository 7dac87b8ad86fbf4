"""struct_ops maps against the running kernel: a TCP congestion control written in BPF
(tests/bpf/struct_ops/cc.c), loaded, selected by a TCP connection over the loopback of a
network namespace of the test's own (`setsockopt(TCP_CONGESTION)`, `ss -ti`), changed by a
reload while a connection runs on it, and unloaded; one the kernel refuses rolls back; bpftool
(libbpf) registering the same `.struct_ops` object is the oracle of the map and its programs.

Registering a congestion control is kernel-wide (the kernel has one list of them, not one per
network namespace): each test's algorithm has a name of its own, and every struct_ops map
holding one of those names is unregistered when the test ends, whatever happened."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import netns

from bpfloader.client import BpfMap
from bpfloader.errors import KernelError
from bpfloader.kernel import maps as kmaps
from bpfloader.kernel.syscall import Cmd, objects_by_id
from bpfloader.obj.bpftypes import MapType
from tests.client.test_attach_netdev import inside
from tests.core_support import core_flags, generate_vmlinux_h
from tests.libbpf_support import PROGRAM_FIELDS, bpftool, xlated

pytestmark = pytest.mark.kernel

AVAILABLE = Path("/proc/sys/net/ipv4/tcp_available_congestion_control")
TRANSFER = 1 << 20


@pytest.fixture(scope="session")
def vmlinux_dir(build_dir: Path) -> Path:
    directory = build_dir / "vmlinux_struct_ops"
    generate_vmlinux_h(directory)
    return directory


@pytest.fixture
def cc_name() -> Iterator[str]:
    """A congestion control name of this test's own (at most 15 bytes); unregistered after."""
    name = "bpfl_" + uuid.uuid4().hex[:8]
    yield name
    unregister_everywhere(name)


def unregister_everywhere(name: str) -> None:
    """Unregister every struct_ops map whose value carries `name` (a test that failed half
    way leaves none behind: a `.struct_ops` map holds itself registered until deleted)."""
    wanted = name.encode() + b"\0"
    for fd in objects_by_id(Cmd.MAP_GET_NEXT_ID, Cmd.MAP_GET_FD_BY_ID):
        with fd:
            info = kmaps.map_info(fd.number)
            if info.type != MapType.STRUCT_OPS:
                continue
            value = kmaps.lookup(fd.number, bytes(4), info.value_size)
            if value is not None and wanted in value:
                with contextlib.suppress(KernelError):
                    kmaps.delete(fd.number, bytes(4))


def available() -> list[str]:
    return AVAILABLE.read_text().split()


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"bpfl-so-{uuid.uuid4().hex[:8]}"
    netns.create(name)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        netns.remove(name)


class Connection:
    """A TCP connection over the namespace's loopback whose client selects `algorithm`."""

    def __init__(self, namespace: str, algorithm: str):
        with inside(namespace):
            self.listener = socket.socket()
            self.listener.bind(("127.0.0.1", 0))
            self.listener.listen()
            self.client = socket.socket()
            self.client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, algorithm.encode())
            self.client.connect(self.listener.getsockname())
            self.server, _ = self.listener.accept()
        self.port = self.client.getsockname()[1]

    @property
    def algorithm(self) -> str:
        raw = self.client.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
        return raw.rstrip(b"\0").decode()

    def exchange(self, size: int = TRANSFER) -> None:
        """`size` bytes each way, every one received."""
        for sender, receiver in ((self.client, self.server), (self.server, self.client)):
            sender.sendall(bytes(size))
            got = 0
            while got < size:
                chunk = receiver.recv(1 << 16)
                assert chunk, "the connection closed"
                got += len(chunk)

    def close(self) -> None:
        for s in (self.client, self.server, self.listener):
            s.close()


def ss_algorithm(namespace: str, port: int) -> str:
    """What `ss -ti` says the connection from `port` runs (the word before `wscale:`...)."""
    out = subprocess.run(
        ["ip", "netns", "exec", namespace, "ss", "-tin", "sport", f"= :{port}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    details = out.strip().splitlines()[-1].split()
    return details[0]


def build(compile_bpf, vmlinux_dir: Path, name: str, *flags: str) -> Path:
    return compile_bpf(
        "struct_ops/cc.c", None, *core_flags(vmlinux_dir), f'-DCC_NAME="{name}"', *flags
    )


def inits(bpffs: Path) -> list[int]:
    with BpfMap.open(str(bpffs / "map_cc_inits"), key="I", value="Q") as m:
        return [m[0], m[1]]


def pin_id(kind: str, pin: Path) -> int:
    return int(bpftool(kind, "show", "pinned", pin)["id"])


def status(bpfloader_cli, bpffs: Path) -> dict:
    run = bpfloader_cli("status", "--json", "--pin-root", bpffs, check=True)
    (obj,) = json.loads(run.stdout)["objects"]
    return obj


def install(obj: Path, source_dir: Path) -> None:
    shutil.copy(obj, source_dir / "cc.o")


def test_a_linked_congestion_control_is_updated_in_place_by_a_reload(
    compile_bpf, vmlinux_dir, cc_name, namespace, source_dir, bpffs, bpfloader_cli
):
    first = build(compile_bpf, vmlinux_dir, cc_name, "-DLINK")
    second = build(compile_bpf, vmlinux_dir, cc_name, "-DLINK", "-DVERSION=1")
    install(first, source_dir)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    assert "registered struct_ops map cc as struct_ops:tcp_congestion_ops (link" in run.stderr
    assert cc_name in available()
    link_pin, map_pin = bpffs / "link_cc_cc", bpffs / "map_cc_cc"
    link_id, first_map = pin_id("link", link_pin), pin_id("map", map_pin)

    old = Connection(namespace, cc_name)
    try:
        assert old.algorithm == cc_name
        assert ss_algorithm(namespace, old.port) == cc_name
        old.exchange()
        assert inits(bpffs) == [1, 0]

        install(second, source_dir)
        run = bpfloader_cli("reload", "--dir", source_dir, "--pin-root", bpffs, check=True)
        assert f"updated link {link_id} in place" in run.stderr
        assert pin_id("link", link_pin) == link_id  # the same link: never unregistered
        second_map = pin_id("map", map_pin)
        assert second_map != first_map
        (link,) = status(bpfloader_cli, bpffs)["links"]
        assert link["target"] == "struct_ops:tcp_congestion_ops"
        assert (link["map_id"], link["program_id"], link["stale"]) == (second_map, None, False)

        old.exchange()  # the connection that selected the first version goes on working
        assert old.algorithm == cc_name
        new = Connection(namespace, cc_name)
        try:
            new.exchange()
            assert ss_algorithm(namespace, new.port) == cc_name
        finally:
            new.close()
        assert inits(bpffs) == [1, 1]  # the new connection got the new programs
    finally:
        old.close()

    bpfloader_cli("unload", "--pin-root", bpffs, check=True)
    assert cc_name not in available()


def test_a_congestion_control_without_a_link_is_registered_by_its_value(
    compile_bpf, vmlinux_dir, cc_name, namespace, source_dir, bpffs, bpfloader_cli
):
    install(build(compile_bpf, vmlinux_dir, cc_name), source_dir)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    assert f"registered struct_ops map cc (id {pin_id('map', bpffs / 'map_cc_cc')})" in run.stderr
    assert not (bpffs / "link_cc_cc").exists()
    assert cc_name in available()
    connection = Connection(namespace, cc_name)
    try:
        connection.exchange()
        assert inits(bpffs) == [1, 0]
        install(build(compile_bpf, vmlinux_dir, cc_name, "-DVERSION=1"), source_dir)
        bpfloader_cli("reload", "--dir", source_dir, "--pin-root", bpffs, check=True)
        assert cc_name in available()
        connection.exchange()
        again = Connection(namespace, cc_name)
        again.close()
        assert inits(bpffs) == [1, 1]
    finally:
        connection.close()
    (obj,) = [status(bpfloader_cli, bpffs)]
    assert obj["links"] == []

    bpfloader_cli("unload", "--pin-root", bpffs, check=True)
    assert cc_name not in available()  # unpinning alone would have left it registered


@pytest.mark.parametrize("link", [True, False], ids=["struct_ops.link", "struct_ops"])
def test_a_struct_ops_map_the_kernel_refuses_rolls_its_object_back(
    compile_bpf, vmlinux_dir, cc_name, source_dir, bpffs, bpfloader_cli, link
):
    flags = ("-DNO_UNDO_CWND", *(("-DLINK",) if link else ()))
    install(build(compile_bpf, vmlinux_dir, cc_name, *flags), source_dir)
    run = bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs)
    section = ".struct_ops.link" if link else ".struct_ops"
    (line,) = [x for x in run.stdout.splitlines() if x.startswith("failed:")]
    assert line.startswith(
        f"failed: {source_dir}/cc.o: {section}: struct_ops map 'cc': the kernel refused it as a "
        "struct tcp_congestion_ops (BPF_MAP_UPDATE_ELEM failed: EINVAL"
    ), line
    assert sorted(p.name for p in bpffs.iterdir()) == ["maps.debug", "progs.debug"]
    assert cc_name not in available()
    for fd in objects_by_id(Cmd.MAP_GET_NEXT_ID, Cmd.MAP_GET_FD_BY_ID):
        with fd:
            info = kmaps.map_info(fd.number)
            if info.type == MapType.STRUCT_OPS:
                value = kmaps.lookup(fd.number, bytes(4), info.value_size) or b""
                assert cc_name.encode() not in value  # nothing of it is left in the kernel


def test_bpftool_registers_the_same_map_and_programs(
    compile_bpf, vmlinux_dir, cc_name, source_dir, bpffs, bpfloader_cli
):
    """libbpf (bpftool struct_ops register) and bpfloader register one `.struct_ops` object
    (two names, so that both can be registered at once): the same map, the same members set,
    each to the same program (its instructions as the kernel holds them)."""
    theirs_name = cc_name[:-1] + ("x" if cc_name[-1] != "x" else "y")
    try:
        theirs_obj = build(compile_bpf, vmlinux_dir, theirs_name)
        done = subprocess.run(
            ["bpftool", "struct_ops", "register", theirs_obj], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        # "Registered tcp_congestion_ops cc id N" (on stderr, with libbpf's own lines)
        theirs_id = int(done.stderr.split("Registered tcp_congestion_ops cc id ")[1].split()[0])
        install(build(compile_bpf, vmlinux_dir, cc_name), source_dir)
        bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
        ours_id = pin_id("map", bpffs / "map_cc_cc")
        theirs, ours = struct_ops_dump(theirs_id), struct_ops_dump(ours_id)
        for info in (theirs[0], ours[0]):
            for varying in ("id", "btf_id"):
                info.pop(varying)
        assert ours[0] == theirs[0]
        assert ours[1].pop("name") == cc_name and theirs[1].pop("name") == theirs_name
        assert set(ours[1]) == set(theirs[1])
        for member, value in ours[1].items():
            assert without_prog_id(value) == without_prog_id(theirs[1][member]), member
            if isinstance(value, str) and "prog_id:" in value:
                assert program(value) == program(theirs[1][member]), member
    finally:
        unregister_everywhere(theirs_name)


def struct_ops_dump(map_id: int) -> tuple[dict, dict]:
    out = subprocess.run(
        ["bpftool", "-j", "struct_ops", "dump", "id", str(map_id)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # By id, bpftool 7.1 prints the list's two items without its brackets.
    info, value = json.loads(f"[{out}]")
    (data,) = [v["data"] for k, v in value.items() if k.startswith("bpf_struct_ops_")]
    return info["bpf_map_info"], data


def without_prog_id(value: object) -> object:
    return value.split("/prog_id:")[0] if isinstance(value, str) else value


def program(value: str) -> tuple[dict, str]:
    """What the kernel holds of the program a member's dump names: its fields and code."""
    prog_id = int(value.split("/prog_id:")[1])
    shown = bpftool("prog", "show", "id", prog_id)
    return {f: shown.get(f) for f in PROGRAM_FIELDS}, xlated(prog_id)


def test_check_says_how_each_struct_ops_map_is_registered(compile_bpf, vmlinux_dir, bpfloader_cli):
    obj = build(compile_bpf, vmlinux_dir, "bpfl_check", "-DLINK")
    run = bpfloader_cli("check", obj, "--target-btf", "/sys/kernel/btf/vmlinux", check=True)
    lines = run.stdout.splitlines()
    assert (
        "  register cc as struct tcp_congestion_ops (by a link): ssthresh=cc_ssthresh, "
        "cong_avoid=cc_cong_avoid, undo_cwnd=cc_undo_cwnd, init=cc_init"
    ) in lines, run.stdout
    size = bpftool("btf", "dump", "file", "/sys/kernel/btf/vmlinux")
    (value,) = [t for t in size["types"] if t["name"] == "bpf_struct_ops_tcp_congestion_ops"]
    assert (
        f"  struct_ops cc: bpf_struct_ops_tcp_congestion_ops of {value['size']} bytes in "
        "/sys/kernel/btf/vmlinux"
    ) in lines, run.stdout


def test_a_lost_state_still_updates_the_link_in_place(
    compile_bpf, vmlinux_dir, cc_name, source_dir, bpffs, state_dir, bpfloader_cli
):
    """A state rebuilt from the pins knows no link target: the link at the map's link pin is
    still the one to update (making a second one would collide with the name it registers)."""
    install(build(compile_bpf, vmlinux_dir, cc_name, "-DLINK"), source_dir)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    link_id = pin_id("link", bpffs / "link_cc_cc")
    (state_dir / "state.json").unlink()
    install(build(compile_bpf, vmlinux_dir, cc_name, "-DLINK", "-DVERSION=1"), source_dir)
    run = bpfloader_cli("reload", "--dir", source_dir, "--pin-root", bpffs, check=True)
    assert f"updated link {link_id} in place" in run.stderr, run.stderr
    assert pin_id("link", bpffs / "link_cc_cc") == link_id
    assert cc_name in available()
    bpfloader_cli("unload", "--pin-root", bpffs, check=True)
    assert cc_name not in available()
