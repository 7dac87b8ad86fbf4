"""A CI-sized run of the reader fuzzer: deterministic ELF-aware mutations (fuzz/contract.py)
of compiled objects, each checked against read_object's contract (ObjectFormatError only, one
line naming the file, no hang) and against the catch-all: every malformed input must be named
by its own check, not turned into "malformed ELF (TypeName: ...)". The struct_ops objects
(tests/bpf/struct_ops/cc.c) get a run of their own, its mutations aimed at what the struct_ops
reader and its layout against the kernel's BTF look at (`check_struct_ops`). The long run is
`make fuzz`."""

from __future__ import annotations

import functools
import random
import struct
import time
from pathlib import Path

import pytest

from bpfloader.obj.btf import parse_btf
from bpfloader.obj.elf import ElfObject
from bpfloader.obj.struct_ops import SECTIONS as STRUCT_OPS_SECTIONS
from fuzz.contract import (
    InputTimeout,
    check,
    findings_of_mutations,
    kernel_btf,
    mutate,
    time_limit,
)
from tests.core_support import core_flags, generate_vmlinux_h
from tests.libbpf_support import libbpf_object

MUTATIONS = 2000
SEED = 20261122
PER_INPUT_SECONDS = 5

ANDROID_SOURCES = ("pure_every_field.c", "pure_layouts.c", "execsnoop.c", "xdp_drop_port.c")
LIBBPF_SOURCES = (
    "libbpf_maps.c",
    "libbpf_globals.c",
    "libbpf_subprogs.c",
    "libbpf_sections.c",
    "libbpf_legacy_maps.c",  # libbpf 0.x's `struct bpf_map_def`s in `maps`
    "libbpf_kconfig.c",  # `__kconfig` externs of every type
    "client_typed.c",  # maps whose BTF types the client lays out (client/layouts.py)
)


def test_mutated_objects_keep_the_reader_contract(compile_bpf):
    seeds = [compile_bpf(s).read_bytes() for s in ANDROID_SOURCES]
    seeds += [compile_bpf(s, None, "-g").read_bytes() for s in ANDROID_SOURCES[:2]]  # with .BTF
    seeds += [libbpf_object(compile_bpf, s).read_bytes() for s in LIBBPF_SOURCES]
    rng = random.Random(SEED)
    findings: dict[str, int] = {}
    for _ in range(MUTATIONS):
        data = mutate(rng.choice(seeds), rng)
        with time_limit(PER_INPUT_SECONDS):
            finding = check(data)  # raises ContractViolation on any other exception
        if finding is not None:
            findings[finding] = findings.get(finding, 0) + 1
    assert findings == {}, "inputs that only the catch-all turned into ObjectFormatError"


def test_the_seeds_themselves_parse_or_fail_cleanly(compile_bpf):
    for source in ANDROID_SOURCES:
        assert check(compile_bpf(source).read_bytes()) is None


STRUCT_OPS_SOURCE = "struct_ops/cc.c"
# In .struct_ops, in .struct_ops.link, and without a member the kernel requires (which the
# layout leaves to the kernel to refuse).
STRUCT_OPS_VARIANTS = ((), ("-DLINK",), ("-DNO_UNDO_CWND",))
STRUCT_OPS_MUTATIONS = 1200
STRUCT_OPS_SEED = 20261207


@pytest.fixture(scope="module")
def vmlinux_dir(build_dir: Path) -> Path:
    directory = build_dir / "vmlinux_reader_fuzz"
    generate_vmlinux_h(directory)
    return directory


@pytest.fixture(scope="module")
def struct_ops_seeds(compile_bpf, vmlinux_dir: Path) -> list[bytes]:
    flags = core_flags(vmlinux_dir)
    return [
        compile_bpf(STRUCT_OPS_SOURCE, None, *flags, *v).read_bytes() for v in STRUCT_OPS_VARIANTS
    ]


def test_the_struct_ops_seeds_lay_out_against_this_kernel(struct_ops_seeds):
    assert kernel_btf() is not None  # what check_struct_ops lays them out against
    for seed in struct_ops_seeds:
        assert check(seed) is None


def test_mutated_struct_ops_objects_keep_the_contract(struct_ops_seeds):
    """Every other input mutated by `_struct_ops_word`, in the struct_ops sections' BTF."""
    kernel_btf()  # parsed once, before the first input's time limit
    findings = findings_of_mutations(
        struct_ops_seeds,
        _struct_ops_word,
        STRUCT_OPS_MUTATIONS,
        STRUCT_OPS_SEED,
        PER_INPUT_SECONDS,
    )
    assert findings == {}, "inputs that only the catch-all turned into ObjectFormatError"


def _struct_ops_word(data: bytes, rng: random.Random) -> bytes:
    """A 4-byte word that the struct_ops reader or the layout reads, set to a value it looks
    at: of the struct_ops variable's bytes, of its section's relocations, of the BTF records of
    its struct (size, vlen, each member's name, type and offset) and of its DATASEC."""
    targets = _struct_ops_targets(data)
    kind, at, near = rng.choice(targets)
    old = struct.unpack_from("<I", data, at)[0]
    choices = [0, 1, 8, 0xFFFF, 0xFFFFFFFF, old + 1, old - 1, old + 8, old - 8, old * 2, old >> 1]
    choices += [rng.choice(near)] if near else []
    if kind == "offset":  # past the struct, in bits or bytes
        choices += [old + 64 * rng.randrange(1, 8), 0x800, 0x1000, 0x01000000 | old]
    value = rng.choice(choices) & 0xFFFFFFFF
    out = bytearray(data)
    struct.pack_into("<I", out, at, value)
    return bytes(out)


@functools.lru_cache(maxsize=8)
def _struct_ops_targets(data: bytes) -> list[tuple[str, int, list[int]]]:
    """(what, file offset, other values of its kind) of each word `_struct_ops_word` sets."""
    elf = ElfObject(data)
    btf_section = elf.section(".BTF")
    assert btf_section is not None
    btf = parse_btf(bytes(btf_section.data))
    types_at = btf_section.offset + btf.header_len + btf.type_off
    targets: list[tuple[str, int, list[int]]] = []
    for name in STRUCT_OPS_SECTIONS:
        section = elf.section(name)
        if section is None:
            continue
        targets += [("data", section.offset + i, []) for i in range(0, section.size - 3, 4)]
        for rel in elf.sections:
            if rel.name == ".rel" + name:
                targets += [("rel", rel.offset + i, []) for i in range(0, rel.size - 3, 4)]
        datasec = btf.datasec(name)
        assert datasec is not None
        body = types_at + datasec.record + 12
        targets += [("datasec", types_at + datasec.record + 4 * i, []) for i in range(3)]
        targets += [("datasec", body + 4 * i, []) for i in range(3 * datasec.vlen)]
        for var in datasec.sec_vars:
            struct_type = btf.resolve(btf.type(var.type).size_or_type)
            start = types_at + struct_type.record
            targets += [("struct", start + 4 * i, []) for i in range(3)]
            members = list(struct_type.members)
            words = [
                struct.unpack_from("<III", data, start + 12 + 12 * i) for i in range(len(members))
            ]
            for i in range(len(members)):
                for field, what in enumerate(("name", "type", "offset")):
                    near = [w[field] for w in words]
                    targets.append((what, start + 12 + 12 * i + 4 * field, near))
    return targets


def test_the_per_input_budget_is_cpu_time():
    """A busy input is stopped at its budget; time the process spends waiting (a busy machine
    leaving it unscheduled, as a sleep here) is not charged to the input."""
    started = time.process_time()
    with pytest.raises(InputTimeout), time_limit(0.2):
        while True:
            pass
    # About the budget: the kernel checks process CPU timers at its ticks, against the runtime
    # it last accounted, so the signal may come a few ms before clock_gettime's 0.2 s (a CI
    # run saw 0.1977 s): not early by more than a tick or two, nor late.
    assert 0.15 <= time.process_time() - started < 1.0
    with time_limit(0.2):
        time.sleep(0.4)
