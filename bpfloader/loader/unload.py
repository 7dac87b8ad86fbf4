"""`unload`: remove the pins of named objects, or of all of them, that the state records."""

from __future__ import annotations

import os

from bpfloader.errors import LoaderError
from bpfloader.journal import Reporter
from bpfloader.kernel import pins as kpins
from bpfloader.loader.lock import run_lock
from bpfloader.loader.naming import object_name
from bpfloader.loader.pin_root import remove_pins
from bpfloader.loader.run import (
    LoadOptions,
    RunResult,
    current_environment,
    plan_run,
    rebuilt_state,
)
from bpfloader.loader.source import RunPlan
from bpfloader.loader.state import (
    LoaderState,
    recorded_state,
    remove_leftovers,
    remove_loaded_marker,
    write_state,
)


def unload(options: LoadOptions, reporter: Reporter, names: list[str]) -> RunResult:
    """Remove the pins of the named objects (a path, a file name, or FILENAME), or of all of
    them when no name is given: only pins the state records, never anything else."""
    pin_root = os.path.abspath(options.pin_root)
    if not kpins.is_bpffs(pin_root):
        raise LoaderError(
            f"pin root {pin_root} is not a bpf filesystem (mount it: mount -t bpf bpf {pin_root})"
        )
    result = RunResult()
    with run_lock(options.state_dir, options.lock_timeout):
        remove_leftovers(options.state_dir)
        env = current_environment(options.build_type)
        previous, problem = recorded_state(options.state_dir, pin_root, env)
        if previous is None:
            plan = (
                plan_run(options, env, os.path.lexists)
                if os.path.isdir(options.source_dir)
                else RunPlan()
            )
            previous = rebuilt_state(options, env, plan.objects, problem, None, reporter)
        chosen = _select(previous, names)
        state = LoaderState(
            previous.pin_root,
            previous.source_dir,
            {path: obj for path, obj in previous.objects.items() if path not in chosen},
            previous.environment,
        )
        result.removed = remove_pins(previous, state, reporter)
        write_state(options.state_dir, state)
        if not state.objects:  # nothing of ours is pinned: services must not see "loaded"
            remove_loaded_marker(options.state_dir)
    return result


def _select(state: LoaderState, names: list[str]) -> set[str]:
    if not names:
        return set(state.objects)
    chosen = set()
    for name in names:
        matches = {
            path
            for path in state.objects
            if name in (path, os.path.basename(path), os.path.splitext(os.path.basename(path))[0])
            or name == _filename(path)
            or os.path.abspath(name) == path
        }
        if not matches:
            known = ", ".join(sorted(state.objects)) or "none"
            raise LoaderError(f"no object {name!r} is recorded as loaded (recorded: {known})")
        chosen |= matches
    return chosen


def _filename(path: str) -> str | None:
    """The object's FILENAME, the name in its pins (`offload@mainline.o` -> `offload`)."""
    try:
        return object_name(path)
    except LoaderError:
        return None
