"""Maps typed by their own BTF, against the kernel: client_typed.c loaded by the real loader, a
program that writes structs keyed by pid and comm, the client decoding what the kernel wrote
(bpftool's reading of the same map is the oracle) and writing values from dataclasses, dicts
and tuples; explicit types winning; and, as a process of another uid, what a reader without
CAP_SYS_ADMIN is told."""

from __future__ import annotations

import dataclasses
import enum
import errno
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from test_access import as_user

from bpfloader.client import BpfMap, Program
from bpfloader.client.dump import dump
from bpfloader.errors import KernelError, LoaderError, MapError, MapTypeError
from tests.libbpf_support import bpftool

pytestmark = pytest.mark.kernel

READER_UID, READER_GID = 1234, 4321  # client_typed.policy: the maps are root:4321 0640
SAMPLES = "map_client_typed_samples"
STATES = "map_client_typed_states"
PROG = "prog_client_typed_tp_syscalls_sys_enter_getpgid"
POLICY = """
[maps]
group = 4321
mode = "0640"
[programs]
group = 4321
"""


@pytest.fixture
def pins(compile_bpf, source_dir, bpffs, bpfloader_cli) -> Path:
    shutil.copy(compile_bpf("client_typed.c"), source_dir)
    (source_dir / "client_typed.policy").write_text(POLICY)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    return bpffs


def comm() -> bytes:
    with open("/proc/self/comm", "rb") as f:
        return f.read().strip()[:15]


def getpgid_calls(pins: Path, count: int) -> None:
    with BpfMap.open_named("client_typed", "watched", pin_root=str(pins)) as watched:
        watched[0] = os.getpid()
    with (
        Program.open(str(pins / PROG)) as prog,
        prog.attach_tracepoint("syscalls", "sys_enter_getpgid"),
    ):
        for _ in range(count):
            os.getpgid(0)


def test_what_the_kernel_wrote_reads_as_named_fields(pins):
    getpgid_calls(pins, 3)
    with BpfMap.open(str(pins / SAMPLES)) as m:
        key_type, value_type = m.key_type, m.value_type
        assert isinstance(key_type, type) and isinstance(value_type, type)
        assert (key_type.__name__, value_type.__name__) == ("task_key", "sample")
        ((key, value),) = m.items()
        assert key == key_type(pid=os.getpid(), comm=comm())
        assert m[key] == value and {key: 1}[key_type(os.getpid(), comm())] == 1  # hashable
    state = type(value.state)
    assert issubclass(state, enum.IntEnum) and state.__members__ == {
        "IDLE": 0,
        "RUNNING": 1,
        "STOPPED": 7,
    }
    assert dataclasses.asdict(value) == {
        "count": 3,
        "state": state.STOPPED,
        "delta": -2,
        "low": 5,
        "mid": 4000,
        "neg": -3,
        "flag": True,
        "addr": (10, 0, 0, 1),
        "name": b"kernel",
        "as_u32": 0x04030201,  # the anonymous union's members, each a field
        "as_bytes": (1, 2, 3, 4),
        "pair": {"a": 7, "b": 9},  # pair_t, the typedef's name
        "matrix": ((1, 2, 3), (4, 5, 6)),
        "from_": -1,  # `from`, a Python keyword
    }
    assert type(value.pair).__name__ == "pair_t"


def test_bpftool_reads_what_the_client_wrote(pins):
    """bpftool's BTF dump of the map is the oracle, in its own conventions: bitfields in hex
    (unsigned), an anonymous union under "", no floats."""
    with BpfMap.open(str(pins / SAMPLES)) as m:
        sample = m.value_type
        key = m.key_type(pid=77, comm="writer")
        m[key] = sample(
            count=2**40,
            state="RUNNING",
            delta=-300,
            low=7,
            mid=1,
            neg=-16,
            flag=True,
            addr=b"\x7f\x00\x00\x01",
            name="client",
            as_u32=None,
            as_bytes=[9, 8],
            pair={"a": 1, "b": 2},
            matrix=[[1], (2, 3)],
        )
        value = m[key]
    (element,) = bpftool("map", "dump", "pinned", pins / SAMPLES)
    theirs = element["formatted"]
    assert theirs["key"] == {"pid": 77, "comm": "writer"}
    v = theirs["value"]
    assert (v["count"], v["state"], v["delta"], v["flag"]) == (2**40, "RUNNING", -300, True)
    assert (int(v["low"], 16), int(v["mid"], 16), int(v["neg"], 16)) == (7, 1, 0x10)  # -16
    assert (v["addr"], v["name"], v["pair"]) == ([127, 0, 0, 1], "client", {"a": 1, "b": 2})
    assert v[""] == {"as_u32": 0x0809, "as_bytes": [9, 8, 0, 0]}
    assert v["matrix"] == [[1, 0, 0], [2, 3, 0]] and v["from"] == 0
    assert (value.neg, value.as_u32, value.matrix) == (-16, 0x0809, ((1, 0, 0), (2, 3, 0)))


def test_doubles_read_and_write_as_floats(pins):
    with BpfMap.open(str(pins / "map_client_typed_ratios")) as m:
        m[1] = -1.25
        assert (m[0], m[1], m.value_type) == (0.0, -1.25, float)
        with pytest.raises(MapTypeError) as e:
            m[0] = "1"
        assert str(e.value) == f"{m.path}: value takes a float, not str"
    with BpfMap.open(str(pins / "map_client_typed_ratios"), value=None) as raw:
        assert raw[1] == struct.pack("<d", -1.25)


def test_writing_takes_dataclasses_dicts_tuples_and_says_what_does_not_fit(pins):
    with BpfMap.open(str(pins / SAMPLES)) as m:
        key = m.key_type(pid=1, comm=b"a")
        m[key] = {"count": 5}  # every other member zero
        assert m[key] == m.value_type(count=5, as_u32=0, as_bytes=(0, 0, 0, 0))
        assert m.value_type().as_u32 is None  # a union's members: None, left unwritten
        m[(2, b"b")] = (6, 1)  # members in order: count, state
        assert m[m.key_type(2, b"b")].state.name == "RUNNING"
        value = m[key]
        m[key] = dataclasses.replace(value, as_u32=None, as_bytes=(0xFF,))
        assert m[key].as_u32 == 0xFF
        cases: list[tuple[Any, type[Exception], str]] = [
            ({"count": -1}, MapError, "value.count: -1 does not fit in a 64-bit unsigned integer"),
            ({"low": 8}, MapError, "value.low: 8 does not fit in a 3-bit unsigned integer"),
            ({"neg": 16}, MapError, "value.neg: 16 does not fit in a 5-bit signed integer"),
            ({"name": "too long!"}, MapError, "value.name holds 8 bytes, not 9"),
            ({"addr": (1, 2, 3, 4, 5)}, MapError, "value.addr holds 4 elements, not 5"),
            ({"state": "GONE"}, MapError, "value.state: 'GONE' is not a name of state"),
            ({"nope": 1}, MapError, "value: sample has no member 'nope'"),
            ({"count": "5"}, MapTypeError, "value.count takes an int, not str"),
            ({"name": 5}, MapTypeError, "value.name takes bytes, not int 5"),
            (
                {"pair": 5},
                MapTypeError,
                "value.pair takes a pair_t (or a dict of its members), not int 5",
            ),
            (5, MapTypeError, "value takes a sample (or a dict of its members), not int 5"),
        ]
        for given, error, message in cases:
            with pytest.raises(error) as e:
                m[key] = given
            assert str(e.value) == f"{m.path}: {message}"
        assert m[key].count == 5  # nothing was written


def test_explicit_types_win(pins):
    getpgid_calls(pins, 1)
    with BpfMap.open(str(pins / SAMPLES), key=None, value=None) as raw:
        ((key, value),) = raw.items()
        assert (raw.key_type, raw.value_type) == (bytes, bytes)
        assert key[:4] == os.getpid().to_bytes(4, "little") and len(value) == raw.info.value_size
    with BpfMap.open(str(pins / STATES), value="I") as states:  # the key from the BTF, still
        states[2] = 7
        assert (states[2], states.key_type, states.value_type) == (7, int, "I")
    with BpfMap.open(str(pins / STATES)) as states:
        assert states[2].name == "STOPPED" and states[1] == 0 and states[1].name == "IDLE"


def test_map_dump_is_typed_by_btf_unless_told(pins, bpfloader_cli):
    getpgid_calls(pins, 2)
    done = bpfloader_cli("map", "dump", pins / STATES, check=True)
    assert done.stdout.splitlines() == ["0: IDLE", "1: IDLE", "2: IDLE", "3: IDLE"]
    done = bpfloader_cli("map", "dump", pins / SAMPLES, "--json", check=True)
    ((element,),) = [json.loads(done.stdout)]
    assert element["key"] == {"pid": os.getpid(), "comm": comm().decode()}
    assert element["value"]["state"] == "STOPPED" and element["value"]["name"] == "kernel"
    assert element["value"]["matrix"] == [[1, 2, 3], [4, 5, 6]] and element["value"]["from_"] == -1
    done = bpfloader_cli("map", "dump", pins / SAMPLES, check=True)
    assert done.stdout.startswith(f'{{pid: {os.getpid()}, comm: "{comm().decode()}"}}: {{count: 2,')
    assert 'state: "STOPPED"' in done.stdout and "pair: {a: 7, b: 9}" in done.stdout
    done = bpfloader_cli("map", "dump", pins / STATES, "--value-type", "hex", check=True)
    assert done.stdout.splitlines()[0] == "0: 00000000"


def test_a_reader_without_cap_sys_admin_is_told_to_give_types(pins):
    """The kernel gives a BTF by id only to CAP_SYS_ADMIN: a group member reading the map
    without types is told so; with types it reads as before."""
    getpgid_calls(pins, 1)

    def work() -> dict[str, Any]:
        found: dict[str, Any] = {}
        try:
            BpfMap.open(SAMPLES, readonly=True)
        except OSError as e:
            found["open"] = [errno.errorcode[e.errno or 0], str(e)]
        try:
            dump(STATES)
        except KernelError as e:
            found["dump"] = str(e)
        with BpfMap.open(STATES, key="I", value="I", readonly=True) as m:
            found["typed"] = m[2]
        return found

    with BpfMap.open(str(pins / SAMPLES), key=None, value=None) as m:
        btf_id = m.info.btf_id
    assert as_user(pins, READER_UID, READER_GID, [], work) == {
        "open": [
            "EPERM",
            f"{SAMPLES}: the map's key and value types are in its BTF (id {btf_id}), which the"
            " kernel shows only to CAP_SYS_ADMIN: give key= and value= types (None for raw"
            " bytes)",
        ],
        "dump": f"{STATES}: the map's types are in its BTF, which the kernel shows only to"
        " CAP_SYS_ADMIN: name them with --key-type and --value-type (hex for raw bytes)",
        "typed": 0,
    }


def test_program_info_type_and_the_sizes_a_reader_is_not_shown(pins):
    with Program.open(str(pins / PROG)) as prog:
        info = prog.info
    assert info.type is info.type.TRACEPOINT and prog.type_name == "TRACEPOINT"
    assert info.xlated_size and info.xlated_size > 0 and info.jited_size and info.jited_size > 0

    def work() -> dict[str, Any]:
        with Program.open(PROG, readonly=True) as prog:
            return {
                "xlated": prog.info.xlated_size,
                "jited": prog.info.jited_size,
                "id": prog.info.id,
            }

    assert as_user(pins, READER_UID, READER_GID, [], work) == {
        "xlated": None,
        "jited": None,
        "id": info.id,
    }


def test_refusals_say_what_the_pin_allows_and_how_the_map_was_opened(pins):
    group = _group_name(READER_GID)

    def member() -> dict[str, Any]:
        found: dict[str, Any] = {}
        try:
            BpfMap.open(STATES, key="I", value="I")
        except OSError as e:  # PinOpenError: an OSError with the kernel's errno
            found["read_write"] = [errno.errorcode[e.errno or 0], str(e)]
        with BpfMap.open(STATES, key="I", value="I", readonly=True) as m:
            try:
                m[1] = 1
            except OSError as e:
                found["write"] = [errno.errorcode[e.errno or 0], str(e)]
            try:
                del m[1]
            except MapError as e:
                found["delete"] = str(e)
        return found

    assert as_user(pins, READER_UID + 1, READER_GID, [], member) == {
        "read_write": [
            "EACCES",
            f"{STATES}: BPF_OBJ_GET refused read-write (EACCES): the pin is root:{group} mode"
            " 0640, which lets its group (one of yours) only read it: open it with readonly=True",
        ],
        "write": [
            "EPERM",
            f"{STATES}: BPF_MAP_UPDATE_ELEM failed: EPERM: the map was opened read-only"
            " (readonly=True): open it read-write to change it",
        ],
        "delete": f"{STATES}: elements of a ARRAY map cannot be deleted",
    }

    def stranger() -> dict[str, Any]:
        found: dict[str, Any] = {}
        for name, path in (("read_only", STATES), ("hidden", "private/map_x_y")):
            try:
                BpfMap.open(path, key="I", value="I", readonly=True)
            except OSError as e:
                found[name] = [errno.errorcode[e.errno or 0], str(e)]
        return found

    (pins / "private").mkdir(mode=0o700)

    assert as_user(pins, READER_UID + 1, READER_GID + 1, [], stranger) == {
        "read_only": [
            "EACCES",
            f"{STATES}: BPF_OBJ_GET refused read-only (EACCES): the pin is root:{group} mode"
            " 0640, which lets others (not its owner, not in its group) neither read nor write it",
        ],
        "hidden": [
            "EACCES",
            "private/map_x_y: BPF_OBJ_GET refused (EACCES): a directory on the way to the pin"
            " does not let you search it (x)",
        ],
    }
    rodata = str(pins / "map_client_typed_rodata")
    with BpfMap.open(rodata, key="I", value=None) as frozen, pytest.raises(KernelError) as e:
        frozen[0] = bytes(frozen.info.value_size)
    assert e.value.errno == errno.EPERM and str(e.value) == (
        f"{rodata}: BPF_MAP_UPDATE_ELEM failed: EPERM: the map is frozen: read-only to user"
        " space (BPF_MAP_FREEZE; .rodata is)"
    )


def _group_name(gid: int) -> str:
    import grp

    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def test_open_named_applies_the_pin_names_of_both_formats(
    compile_bpf, source_dir, bpffs, bpfloader_cli
):
    """An Android-format object (client_maps.o), a libbpf-style one named like libbpf's tools
    (typed.bpf.o: FILENAME `typed`), one with a map in a pin_subdir (k_access.o) and one with
    a shared map (k_shared.o)."""
    shutil.copy(compile_bpf("client_maps.c"), source_dir)
    shutil.copy(compile_bpf("client_typed.c", "typed.bpf.o"), source_dir)
    shutil.copy(compile_bpf("k_access.c"), source_dir)
    shutil.copy(compile_bpf("k_shared.c"), source_dir)
    bpfloader_cli("load", "--dir", source_dir, "--pin-root", bpffs, check=True)
    root = str(bpffs)
    opened = [
        (BpfMap.open_named("client_maps", "hash", pin_root=root), "map_client_maps_hash"),
        (BpfMap.open_named("client_maps.o", "array", pin_root=root), "map_client_maps_array"),
        (BpfMap.open_named("typed.bpf.o", "states", pin_root=root), "map_typed_states"),
        (BpfMap.open_named("typed", "samples", pin_root=root), "map_typed_samples"),
        (
            BpfMap.open_named("k_access", "acc_sub_gro", pin_root=root, subdir="acc_sub"),
            "acc_sub/map_k_access_acc_sub_gro",
        ),
        (BpfMap.open_named(None, "shared_counts", pin_root=root), "map__shared_counts"),
    ]
    for m, pin in opened:
        with m:
            assert m.path == f"{root}/{pin}"
    programs = [
        ("client_maps", "tracepoint/syscalls/sys_enter_getpgid"),
        ("typed.bpf.o", "tp/syscalls/sys_enter_getpgid"),
        ("k_shared", "tracepoint/sched/sched_switch$5_10"),  # a variant's pin is the program's
    ]
    for obj, section in programs:
        with Program.open_named(obj, section, pin_root=root) as prog:
            assert prog.path is not None and os.path.exists(prog.path)
    assert Path(prog.path).name == "prog_k_shared_tracepoint_sched_sched_switch"
    with pytest.raises(OSError) as missing:
        BpfMap.open_named("client_maps", "nope", pin_root=root)
    assert missing.value.errno == errno.ENOENT
    assert str(missing.value) == f"{root}/map_client_maps_nope: no such pin"
    with pytest.raises(LoaderError) as bad:
        BpfMap.open_named("client_maps", "a.b", pin_root=root)
    assert str(bad.value) == "map pin name 'map_client_maps_a.b' contains '.', which bpffs refuses"
    with pytest.raises(LoaderError) as bad:
        Program.open_named("my-obj!.o", "xdp", pin_root=root)
    assert str(bad.value) == "object name 'my-obj!' may hold only letters, digits, '_' and '-'"


def test_raw_bytes_refuse_ints_and_sizes_and_types_must_be_types(pins):
    path = str(pins / STATES)
    with BpfMap.open(path, key=None, value=None) as raw:
        cases: list[tuple[Any, type[Exception], str]] = [
            (9, MapTypeError, "a raw-bytes map key takes 4 bytes, not the int 9: give the map a"
             " key type (key='I', say) to use ints"),
            (2**40, MapTypeError, "a raw-bytes map key takes 4 bytes, not the int 1099511627776:"
             " give the map a key type (key='I', say) to use ints"),
            ("abcd", MapTypeError, "a raw-bytes map key takes 4 bytes, not str"),
            (b"\0" * 5, MapError, "5 bytes given where the map's key is 4"),
        ]  # fmt: skip
        for key, error, message in cases:
            with pytest.raises(error) as e:
                raw[key]
            assert str(e.value) == f"{path}: {message}"
        huge = memoryview(bytearray(1 << 20))  # refused by its size, never copied
        with pytest.raises(MapError, match="1048576 bytes given where the map's key is 4"):
            raw[huge] = b"\0" * 4
        assert raw.lookup_batch(batch_size=2**40)[:1] == [(bytes(4), bytes(4))]  # bounded
    types: list[tuple[dict[str, Any], str]] = [
        ({"key": b"1234"}, "key= takes a type (a struct format such as 'I', a ctypes type, or"
         " None for raw bytes), not the bytes value b'1234'"),
        ({"value": int}, "value= takes a type (a struct format such as 'I', a ctypes type, or"
         " None for raw bytes), not the class int, which is not a ctypes type"),
        ({"key": "Z"}, "key='Z' is not a struct format: bad char in struct format"),
    ]  # fmt: skip
    for given, message in types:
        with pytest.raises(MapTypeError) as e:
            BpfMap.open(path, **given)
        assert str(e.value) == f"{path}: {message}" and isinstance(e.value, TypeError)
