"""Fuzz the uprobe symbol reader (client/symbols.py: ELF headers, section and program headers,
symbol and string tables of a user binary) with atheris: every input gives each function of
fuzz/contract.py's SYMBOL_NAMES an offset inside the file, or is one line of error.

    PYTHONPATH=. .venv/bin/python fuzz/fuzz_symbols.py CORPUS_DIR SEED_DIR -max_total_time=600

`make fuzz-symbols` makes SEED_DIR first (`fuzz/build_seeds.py --binaries`: gcc's binaries and
ones of every ELF class and byte order). Each input has the object reader's time and memory
budgets (fuzz/fuzz_reader.py's FUZZ_TIMEOUT, FUZZ_INPUT_MEMORY_MB).
"""

from __future__ import annotations

import os
import random
import sys

import atheris

with atheris.instrument_imports(include=["bpfloader"]):
    from fuzz.contract import InputTimeout, check_symbols, memory_budget, mutate, time_limit

TIMEOUT = float(os.environ.get("FUZZ_TIMEOUT", "2"))
INPUT_MEMORY_MB = float(os.environ.get("FUZZ_INPUT_MEMORY_MB", "64"))


def test_one(data: bytes) -> None:
    try:
        with memory_budget(INPUT_MEMORY_MB), time_limit(TIMEOUT):
            check_symbols(data)
    except InputTimeout as e:
        raise AssertionError(f"hang: {e}") from None


def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """Half libFuzzer's own byte mutations, half ELF-aware ones (fuzz/contract.py)."""
    rng = random.Random(seed)
    if rng.random() < 0.5:
        return bytes(atheris.Mutate(data, max_size))
    return mutate(data, rng)[:max_size]


def main() -> None:
    args = list(sys.argv)
    if not any(a.startswith("-max_len=") for a in args):
        args.append("-max_len=131072")
    atheris.Setup(args, test_one, custom_mutator=custom_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
