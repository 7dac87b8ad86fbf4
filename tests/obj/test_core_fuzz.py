"""A CI-sized run of the fuzz contract on CO-RE objects: deterministic mutations of compiled
CO-RE objects (ELF-aware ones, and bytes of their .BTF and .BTF.ext: the records, the access
strings, the types they walk), each read and then relocated against its own BTF (fuzz/
contract.py's check_core): ObjectFormatError / CoreError of one line, nothing else, no hang."""

from __future__ import annotations

import random

from bpfloader.obj.elf import ElfObject
from fuzz.contract import check, findings_of_mutations
from tests.core_support import with_relocation_kind

SEED = 17
MUTATIONS = 400
PER_INPUT_SECONDS = 5


def _btf_mutation(data: bytes, rng: random.Random) -> bytes:
    """A random 4-byte word of .BTF or .BTF.ext set to a value relocation code looks at."""
    elf = ElfObject(data)
    section = elf.section(rng.choice((".BTF", ".BTF.ext", ".BTF.ext")))
    assert section is not None
    out = bytearray(data)
    at = section.offset + rng.randrange(0, max(section.size - 4, 1)) // 4 * 4
    value = rng.choice((0, 1, 2, 3, 8, 12, 13, 0x7F, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF))
    out[at : at + 4] = value.to_bytes(4, "little")
    return bytes(out)


def test_mutated_core_objects_keep_the_contract(compile_bpf, build_dir):
    elsewhere = compile_bpf("core/core_elsewhere.c")
    matches = with_relocation_kind(elsewhere, 8, 12, build_dir / "fuzz_matches.o")
    seeds = [elsewhere.read_bytes(), matches.read_bytes()]
    seeds.append(compile_bpf("libbpf_bad.c", "core_bad.o", "-g", "-DCORE").read_bytes())
    findings = findings_of_mutations(seeds, _btf_mutation, MUTATIONS, SEED, PER_INPUT_SECONDS)
    assert findings == {}, "inputs that only the catch-all turned into ObjectFormatError"


def test_the_seeds_relocate(compile_bpf):
    assert check(compile_bpf("core/core_elsewhere.c").read_bytes()) is None
