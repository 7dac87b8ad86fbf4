"""A CI-sized run of the reader fuzzer: deterministic ELF-aware mutations (fuzz/contract.py)
of compiled objects, each checked against read_object's contract (ObjectFormatError only, one
line naming the file, no hang) and against the catch-all: every malformed input must be named
by its own check, not turned into "malformed ELF (TypeName: ...)". The long run is `make fuzz`."""

from __future__ import annotations

import random

from fuzz.contract import check, mutate, time_limit
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
