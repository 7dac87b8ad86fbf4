"""Fuzz bpfloader's object reader with atheris (libFuzzer), seeded with every test object.

    make fuzz [FUZZ_RUNS=1000000]
    .venv/bin/python fuzz/fuzz_reader.py CORPUS_DIR SEED_DIR -runs=N [libFuzzer flags]

Each input has a time and a memory budget (fuzz/harness.py: FUZZ_TIMEOUT seconds of CPU time,
default 2, libFuzzer's own -timeout backing it up; FUZZ_INPUT_MEMORY_MB it may add to the
process's peak resident memory, default 64; inputs are at most 128 KiB, -max_len), the process
as a whole under RLIMIT_AS (FUZZ_MEMORY_MB, default 2048); the kernel's BTF, which struct_ops
maps are laid out against (fuzz/contract.py `check_struct_ops`), is parsed once before the first
input. An input over either budget, and any other contract violation (an exception other than
ObjectFormatError, an error that is not one line naming the file), crashes the run and libFuzzer
saves the input. Inputs that only read_object's catch-all turned into ObjectFormatError are
findings, not crashes: each distinct place is logged once to stderr, with the input saved under
FUZZ_FINDINGS (default fuzz/findings/), and the counts per place are rewritten to
FUZZ_FINDINGS/counts.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["bpfloader"]):
    from fuzz.contract import MAX_LEN, check, kernel_btf

from fuzz.harness import budgeted, elf_mutator, setup

FINDINGS = Path(os.environ.get("FUZZ_FINDINGS", Path(__file__).parent / "findings"))

counts: Counter[str] = Counter()
executions = 0
last_dump = time.monotonic()


def dump_counts() -> None:
    FINDINGS.mkdir(parents=True, exist_ok=True)
    summary = {"executions": executions, "catch_all": dict(counts.most_common())}
    (FINDINGS / "counts.json").write_text(json.dumps(summary, indent=1) + "\n")


def test_one(data: bytes) -> None:
    global executions, last_dump
    executions += 1
    finding = budgeted(check, data)
    if finding is not None:
        if finding not in counts:
            FINDINGS.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha1(data).hexdigest()[:16]
            (FINDINGS / f"catchall-{name}").write_bytes(data)
            print(f"\nFINDING catch-all: {finding} (input catchall-{name})", file=sys.stderr)
        counts[finding] += 1
        if counts[finding] == 1:
            dump_counts()
    if time.monotonic() - last_dump > 30:
        last_dump = time.monotonic()
        dump_counts()


def main() -> None:
    kernel_btf()  # once, outside every input's budgets
    setup(test_one, max_len=MAX_LEN, mutator=elf_mutator)
    try:
        atheris.Fuzz()
    finally:
        dump_counts()


if __name__ == "__main__":
    main()
