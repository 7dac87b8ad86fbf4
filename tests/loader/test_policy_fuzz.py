"""A CI-sized run of the policy file's fuzz contract (fuzz/contract.py check_policy; the long
runs are fuzz/fuzz_policy.py): deterministic mutations of the seed policy files (bytes
changed, lines dropped, doubled, swapped), each parsed and applied to a libbpf-style object:
a one-line error or success, nothing else, within the per-input time budget."""

from __future__ import annotations

import random

from bpfloader.obj.reader import read_object
from fuzz.contract import check_policy, time_limit
from tests.conftest import REPO
from tests.libbpf_support import libbpf_object

SEEDS = sorted((REPO / "fuzz" / "policy_seeds").glob("*.policy"))
MUTATIONS = 600
PER_INPUT_SECONDS = 2
INTERESTING = [b'"', b"[", b"]", b"=", b"{", b"}", b",", b"\n", b"0o7777", b'"auto"', b"\xff", b":"]


def _mutate(text: bytes, rng: random.Random) -> bytes:
    lines = text.split(b"\n")
    choice = rng.randrange(4)
    if choice == 0 and lines:
        del lines[rng.randrange(len(lines))]
    elif choice == 1 and lines:
        line = rng.choice(lines)
        lines.insert(rng.randrange(len(lines) + 1), line)
    elif choice == 2 and len(lines) > 1:
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
    else:
        out = bytearray(b"\n".join(lines))
        at = rng.randrange(len(out) + 1)
        out[at:at] = rng.choice(INTERESTING)
        return bytes(out)
    return b"\n".join(lines)


def test_mutated_policy_files_keep_the_contract(compile_bpf):
    spec = read_object(libbpf_object(compile_bpf, "libbpf_maps.c").read_bytes(), "/etc/bpf/x.o")
    seeds = [seed.read_bytes() for seed in SEEDS]
    assert len(seeds) >= 3
    rng = random.Random(29)
    for _ in range(MUTATIONS):
        text = rng.choice(seeds)
        for _ in range(rng.randrange(1, 4)):
            text = _mutate(text, rng)
        with time_limit(PER_INPUT_SECONDS):
            check_policy(text, spec)  # raises ContractViolation on any other outcome


def test_the_seeds_apply(compile_bpf):
    from bpfloader.loader.policy import apply_policy, parse_policy

    spec = read_object(libbpf_object(compile_bpf, "libbpf_maps.c").read_bytes(), "/etc/bpf/x.o")
    for seed in SEEDS:
        applied = apply_policy(spec, parse_policy(seed.read_bytes(), str(seed)))
        assert applied != spec, seed  # each says something of this object
