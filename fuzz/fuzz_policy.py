"""Fuzz the policy file's reader (loader/policy.py: TOML, owners, modes, program types,
declared attachments) with atheris, applied to a libbpf-style object built from
tests/bpf/libbpf_maps.c: every input parses and applies, or is one line of error.

    PYTHONPATH=. .venv/bin/python fuzz/fuzz_policy.py CORPUS_DIR SEED_DIR -max_total_time=600

The seeds are policy files (fuzz/policy_seeds/); each input has the object reader's time and
memory budgets (fuzz/harness.py).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["bpfloader", "tomllib"]):
    import tomllib  # noqa: F401 (instrumented: the policy reader's parser)

    from bpfloader.loader import attachments, policy  # noqa: F401 (instrumented)
    from bpfloader.obj.reader import read_object
    from fuzz.contract import check_policy

from fuzz.harness import budgeted, setup

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
    budgeted(lambda policy: check_policy(policy, SPEC), data)


def main() -> None:
    setup(test_one, max_len=4096)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
