"""One run of the loader: scan, plan every object, apply the plans, report."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from bpfloader.errors import LoaderError
from bpfloader.journal import Event, MessageId, Priority, Reporter
from bpfloader.kernel import system
from bpfloader.loader.apply import Applier, ObjectResult, Status
from bpfloader.loader.gates import Environment
from bpfloader.loader.plan import Planner, RunPlan
from bpfloader.loader.scan import scan
from bpfloader.obj.reader import declares_critical, read_object
from bpfloader.version import LOADER_VERSION

DEFAULT_SOURCE_DIR = "/etc/bpf"
DEFAULT_PIN_ROOT = "/sys/fs/bpf"


@dataclass(frozen=True)
class LoadOptions:
    source_dir: str = DEFAULT_SOURCE_DIR
    pin_root: str = DEFAULT_PIN_ROOT
    dir_mode: int = 0o755
    build_type: str | None = None


@dataclass
class RunResult:
    objects: list[ObjectResult] = field(default_factory=list)

    def count(self, status: Status) -> int:
        return sum(1 for o in self.objects if o.status is status)

    @property
    def critical_failures(self) -> list[ObjectResult]:
        return [o for o in self.objects if o.status is Status.FAILED and o.plan.critical]


def current_environment(build_type: str | None = None) -> Environment:
    release = system.kernel_release()
    return Environment(
        kernel=system.parse_kernel_release(release),
        loader_version=LOADER_VERSION,
        arch=system.machine(),
        build_type=build_type,
    )


def plan_run(options: LoadOptions, env: Environment, pin_exists: Callable[[str], bool]) -> RunPlan:
    """Read and plan every object in the source directory (pure but for reading the files)."""
    planner = Planner(env, os.path.abspath(options.pin_root), pin_exists)
    run = RunPlan()
    for source in scan(options.source_dir):
        data = b""
        try:
            with open(source.path, "rb") as f:
                data = f.read()
            spec = read_object(data, source.path)
        except (LoaderError, OSError) as e:
            error = e if isinstance(e, LoaderError) else LoaderError(f"cannot read: {e.strerror}")
            run.objects.append(planner.failed(source, error, declares_critical(data)))
            continue
        run.objects.append(planner.plan(source, spec))
    return run


def load(options: LoadOptions, reporter: Reporter) -> RunResult:
    env = current_environment(options.build_type)
    reporter.emit(
        Event(
            MessageId.RUN_STARTED,
            Priority.INFO,
            f"loading {options.source_dir} into {options.pin_root} "
            f"(kernel {'.'.join(map(str, env.kernel))}, loader version {env.loader_version})",
        )
    )
    applier = Applier(
        os.path.abspath(options.pin_root),
        system.linux_version_code(system.kernel_release()),
        options.dir_mode,
        reporter,
    )
    applier.prepare()
    result = RunResult()
    try:
        plan = plan_run(options, env, os.path.lexists)
        result.objects = [applier.apply(p) for p in plan.objects]
    finally:
        applier.finish()
    reporter.emit(
        Event(
            MessageId.RUN_FINISHED,
            Priority.ERR if result.critical_failures else Priority.INFO,
            f"{result.count(Status.LOADED)} loaded, {result.count(Status.SKIPPED)} skipped, "
            f"{result.count(Status.FAILED)} failed "
            f"({len(result.critical_failures)} critical)",
        )
    )
    return result
