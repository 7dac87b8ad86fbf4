"""What the atheris harnesses (fuzz_reader.py, fuzz_symbols.py, fuzz_policy.py) share: each
input's time and memory budgets, the process's memory ceiling and libFuzzer's flags, and the
ELF-aware mutator.

Budgets, from the environment: FUZZ_TIMEOUT seconds of CPU time per input (default 2;
libFuzzer's wall-clock -timeout, twice that and a second, backs it up for an input that waits),
FUZZ_INPUT_MEMORY_MB an input may add to the process's peak resident memory (default 64), and
FUZZ_MEMORY_MB for the process as a whole under RLIMIT_AS (default 2048). An input over a budget
fails as a crash, which libFuzzer saves."""

from __future__ import annotations

import os
import random
import resource
import sys
from collections.abc import Callable
from typing import TypeVar

import atheris

from fuzz.contract import InputTimeout, memory_budget, mutate, time_limit

TIMEOUT = float(os.environ.get("FUZZ_TIMEOUT", "2"))
INPUT_MEMORY_MB = float(os.environ.get("FUZZ_INPUT_MEMORY_MB", "64"))
MEMORY_MB = int(os.environ.get("FUZZ_MEMORY_MB", "2048"))

T = TypeVar("T")


def budgeted(check: Callable[[bytes], T], data: bytes) -> T:
    """`check(data)` within the input's time and memory budgets; over one, a crash."""
    try:
        with memory_budget(INPUT_MEMORY_MB), time_limit(TIMEOUT):
            return check(data)
    except InputTimeout as e:
        raise AssertionError(f"hang: {e}") from None  # libFuzzer saves the input as a crash


def elf_mutator(data: bytes, max_size: int, seed: int) -> bytes:
    """Half libFuzzer's own byte mutations, half ELF-aware ones (fuzz/contract.py)."""
    rng = random.Random(seed)
    if rng.random() < 0.5:
        return bytes(atheris.Mutate(data, max_size))
    return mutate(data, rng)[:max_size]


def setup(
    test_one: Callable[[bytes], None],
    max_len: int,
    mutator: Callable[[bytes, int, int], bytes] | None = None,
) -> None:
    """atheris set up with the command line's libFuzzer flags, -max_len and -timeout defaulted,
    the process under its memory ceiling."""
    limit = MEMORY_MB * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    args = list(sys.argv)
    if not any(a.startswith("-max_len=") for a in args):
        args.append(f"-max_len={max_len}")
    if not any(a.startswith("-timeout=") for a in args):
        args.append(f"-timeout={int(TIMEOUT) * 2 + 1}")
    if mutator is None:
        atheris.Setup(args, test_one)
    else:
        atheris.Setup(args, test_one, custom_mutator=mutator)
