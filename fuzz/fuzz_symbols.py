"""Fuzz the uprobe symbol reader (client/symbols.py: ELF headers, section and program headers,
symbol and string tables of a user binary) with atheris: every input gives each function of
fuzz/contract.py's SYMBOL_NAMES an offset inside the file, or is one line of error.

    PYTHONPATH=. .venv/bin/python fuzz/fuzz_symbols.py CORPUS_DIR SEED_DIR -max_total_time=600

`make fuzz-symbols` makes SEED_DIR first (`fuzz/build_seeds.py --binaries`: gcc's binaries and
ones of every ELF class and byte order). Each input has the object reader's time and memory
budgets (fuzz/harness.py).
"""

from __future__ import annotations

import atheris

with atheris.instrument_imports(include=["bpfloader"]):
    from fuzz.contract import check_symbols

from fuzz.harness import budgeted, elf_mutator, setup


def test_one(data: bytes) -> None:
    budgeted(check_symbols, data)


def main() -> None:
    setup(test_one, max_len=131072, mutator=elf_mutator)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
