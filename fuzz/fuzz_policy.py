"""Fuzz the policy file's reader (loader/policy.py: TOML, owners, modes, program types,
declared attachments) with atheris, applied to a libbpf-style object built from
tests/bpf/libbpf_maps.c: every input parses and applies, or is one line of error.

    PYTHONPATH=. .venv/bin/python fuzz/fuzz_policy.py CORPUS_DIR SEED_DIR -max_total_time=600

The seeds are policy files (fuzz/policy_seeds/); each input has the object reader's time and
memory budgets (fuzz/fuzz_reader.py's FUZZ_TIMEOUT, FUZZ_INPUT_MEMORY_MB).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["bpfloader", "tomllib"]):
    import tomllib  # noqa: F401 (instrumented: the policy reader's parser)

    from bpfloader.loader import attachments, policy  # noqa: F401 (instrumented)
    from bpfloader.obj.reader import read_object
    from fuzz.contract import InputTimeout, check_policy, memory_budget, time_limit

TIMEOUT = float(os.environ.get("FUZZ_TIMEOUT", "2"))
INPUT_MEMORY_MB = float(os.environ.get("FUZZ_INPUT_MEMORY_MB", "64"))
ROOT = Path(__file__).resolve().parent.parent


def sample_object() -> bytes:
    with tempfile.TemporaryDirectory() as out:
        obj = Path(out) / "libbpf_maps.o"
        source = ROOT / "tests" / "bpf" / "libbpf_maps.c"
        flags = ["-O2", "-g", "-target", "bpf", "-idirafter", "/usr/include/x86_64-linux-gnu"]
        subprocess.run(["clang", *flags, "-c", str(source), "-o", str(obj)], check=True)
        return obj.read_bytes()


SPEC = read_object(sample_object(), "/etc/bpf/libbpf_maps.o")


def test_one(data: bytes) -> None:
    try:
        with memory_budget(INPUT_MEMORY_MB), time_limit(TIMEOUT):
            check_policy(data, SPEC)
    except InputTimeout as e:
        raise AssertionError(f"hang: {e}") from None


def main() -> None:
    args = list(sys.argv)
    if not any(a.startswith("-max_len=") for a in args):
        args.append("-max_len=4096")
    atheris.Setup(args, test_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
