"""Shared fixtures: BPF C compiled during the run, private bpffs mounts, the CLI as a process.

Kernel tests (marked `kernel`) need root and the real kernel. They never skip: on a machine
where they cannot run, they fail, because a loader whose kernel side went untested is untested.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bpfloader.build import build
from bpfloader.kernel import pins as kpins

TESTS = Path(__file__).parent
REPO = TESTS.parent
BPF_SOURCES = TESTS / "bpf"
EXAMPLES = REPO / "etc" / "bpf"


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("kernel") and os.geteuid() != 0:
        pytest.fail("kernel test needs root (bpf(2), bpffs mounts); run the suite as root")


@pytest.fixture(scope="session")
def build_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="bpfloader-build-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


Compile = Callable[..., Path]


@pytest.fixture(scope="session")
def compile_bpf(build_dir: Path) -> Compile:
    """compile_bpf(source, name=None, *flags, btf=True) -> path of the .o, built once per session.

    `source` is a file under tests/bpf or etc/bpf (by name), or C text (when it has a newline).
    `name` sets the object's file name (it decides the pin names); flags go to clang. As
    `bpfloader build` does, objects carry BTF (-g) unless `btf=False`.
    """
    cache: dict[tuple[str, str | None, tuple[str, ...], bool], Path] = {}

    def compile_one(source: str, name: str | None = None, *flags: str, btf: bool = True) -> Path:
        key = (source, name, flags, btf)
        if key in cache:
            return cache[key]
        if "\n" in source:
            src = build_dir / f"inline_{len(cache)}.c"
            src.write_text(source)
        else:
            src = BPF_SOURCES / source
            if not src.exists():
                src = EXAMPLES / source
        out_dir = build_dir / f"out_{len(cache)}"
        (built,) = build([str(src)], str(out_dir), list(flags), btf=btf)
        final = Path(built)
        if name is not None:
            final = final.with_name(name)
            os.rename(built, final)
        cache[key] = final
        return final

    return compile_one


@pytest.fixture
def source_dir(tmp_path: Path) -> Path:
    """An empty directory to put objects in, standing in for /etc/bpf."""
    path = tmp_path / "etc-bpf"
    path.mkdir()
    return path


@contextlib.contextmanager
def mounted_bpffs(path: Path) -> Iterator[Path]:
    """A private bpffs instance on `path` (made here), unmounted when the context ends."""
    path.mkdir()
    kpins.mount_bpffs(str(path))
    try:
        yield path
    finally:
        kpins.unmount(str(path))


@pytest.fixture
def bpffs(tmp_path: Path) -> Iterator[Path]:
    """A private bpffs instance, mounted for this test only, unmounted after."""
    with mounted_bpffs(tmp_path / "bpffs") as path:
        yield path


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    """The test's own stand-in for /run/bpfloader (state, lock, loaded marker)."""
    return tmp_path / "run-bpfloader"


RUN_COMMANDS = ("load", "reload", "unload")
CACHING_COMMANDS = ("load", "reload")  # what takes --cache-dir and --no-cache


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """The test's own stand-in for /var/cache/bpfloader (the object cache; made by the loader)."""
    return tmp_path / "cache-bpfloader"


def with_cache_dir(argv: list[str], cache: Path) -> list[str]:
    """`argv` of a bpfloader command, given the object cache `cache` where it runs a load or a
    reload that names no cache of its own (--cache-dir, --no-cache): never the host's."""
    named = any(arg == "--no-cache" or arg.startswith("--cache-dir") for arg in argv)
    if argv[:1] and argv[0] in CACHING_COMMANDS and not named:
        return [*argv, "--cache-dir", str(cache)]
    return argv


@pytest.fixture
def bpfloader_cli(state_dir: Path, cache_dir: Path) -> Callable[..., Run]:
    """Run `python -m bpfloader ARGS` as a real process.

    Runs report on the console (stderr) unless the test names a --log-target: whether a
    journal happens to run on the machine must not change what a test reads. They keep their
    state in the test's `state_dir` unless the test names a --state-dir: never in the host's
    /run/bpfloader; and their object cache in the test's `cache_dir` unless the test names
    one (or --no-cache): never in the host's /var/cache/bpfloader.
    """

    def run(*args: str | Path, check: bool = False) -> Run:
        argv = with_cache_dir([str(a) for a in args], cache_dir)
        if (
            argv[:1]
            and argv[0] in (*RUN_COMMANDS, "status", "attach")
            and "--state-dir" not in argv
        ):
            argv += ["--state-dir", str(state_dir)]
        if argv[:1] and argv[0] in RUN_COMMANDS and "--log-target" not in argv:
            argv += ["--log-target", "console"]
        done = subprocess.run(
            [sys.executable, "-m", "bpfloader", *argv],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"bpfloader {args} exited {done.returncode}:\n{done.stderr}")
        return Run(done.returncode, done.stdout, done.stderr)

    return run


def pins_in(root: Path) -> set[str]:
    """Every pin under `root` (relative paths), minus the kernel's own preloaded entries."""
    found = set()
    for directory, _, files in os.walk(root):
        for name in files:
            rel = os.path.relpath(os.path.join(directory, name), root)
            if rel not in ("maps.debug", "progs.debug"):
                found.add(rel)
    return found


def fork_child(work: Callable[[], Any]) -> tuple[int, int]:
    """Fork a child that runs `work` and sends its JSON result, or the exception it raised,
    through a pipe; it never returns into pytest. (pid, read end) for child_result()."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            os.write(write_end, json.dumps({"result": work()}).encode())
            status = 0
        except BaseException as e:
            os.write(write_end, json.dumps({"child_error": repr(e)}).encode())
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, read_end


def child_result(pid: int, read_end: int) -> Any:
    """What a fork_child() child sent, once it exited; its exception fails the test."""
    data = b""
    while chunk := os.read(read_end, 1 << 16):
        data += chunk
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    answer: dict[str, Any] = json.loads(data)
    assert "child_error" not in answer, answer
    assert os.waitstatus_to_exitcode(status) == 0
    return answer["result"]


def in_child(work: Callable[[], Any]) -> Any:
    """`work` run in a forked child (to switch identity without touching pytest's), its result."""
    return child_result(*fork_child(work))
