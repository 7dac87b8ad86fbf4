"""`unload`: remove the pins of named objects, or of all of them, that the state records."""

from __future__ import annotations

import contextlib
import os

from bpfloader.errors import LoaderError
from bpfloader.journal import Reporter
from bpfloader.loader.lock import run_lock
from bpfloader.loader.naming import object_name
from bpfloader.loader.pin_root import PinRoot
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
    StateError,
    clear_publishing,
    read_interrupted,
    read_state,
    refuse_other_pin_root,
    remove_leftovers,
    remove_loaded_marker,
    with_interrupted,
    write_state,
)
from bpfloader.loader.state_dir import StateDir


def unload(options: LoadOptions, reporter: Reporter, names: list[str]) -> RunResult:
    """Remove the pins of the named objects (a path, a file name, or FILENAME), or of all of
    them when no name is given: only pins the state records, never anything else. The record
    is used whatever environment it was recorded under: it says what was made. Without one,
    the state is rebuilt from the pins the objects of the source directory would make. A
    state directory that records another pin root is refused (it knows nothing of this one)."""
    result = RunResult()
    with (
        PinRoot.open_existing(options.pin_root) as root,
        StateDir.open(options.state_dir) as state_dir,
        run_lock(state_dir, options.lock_timeout),
    ):
        remove_leftovers(state_dir)
        refuse_other_pin_root(state_dir, root.path)
        env = current_environment(options.build_type, options.android_api_level)
        try:
            previous, problem = read_state(state_dir, root.path), ""
        except StateError as e:
            previous, problem = None, str(e)
        if previous is None:
            plan = (
                plan_run(options, env, root.is_pin)
                if os.path.isdir(options.source_dir)
                else RunPlan()
            )
            previous = rebuilt_state(options, env, plan.objects, problem, None, reporter, root)
        # Pins a killed run was publishing are the objects' too (and may hold those ids).
        interrupted = read_interrupted(state_dir, root.path)
        previous = with_interrupted(previous, interrupted)
        chosen = _select(previous, names)
        result.unloaded = sorted(chosen)
        state = LoaderState(
            previous.pin_root,
            previous.source_dir,
            {path: obj for path, obj in previous.objects.items() if path not in chosen},
            previous.environment,
        )
        result.removed = root.remove_pins(previous, state, reporter, interrupted.expected_ids())
        if chosen:  # else nothing changed: no record is written (none for an unknown pin root)
            write_state(state_dir, state)
        clear_publishing(state_dir)
        if not state.objects:  # nothing of ours is pinned: services must not see "loaded"
            remove_loaded_marker(state_dir)
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
            or name in _filenames(path)
            or os.path.abspath(name) == path
        }
        if not matches:
            known = ", ".join(sorted(state.objects)) or "none"
            raise LoaderError(f"no object {name!r} is recorded as loaded (recorded: {known})")
        chosen |= matches
    return chosen


def _filenames(path: str) -> set[str]:
    """The object's FILENAME, the name in its pins, by either format's rule (the state does not
    record the format): `offload@mainline.o` -> `offload`, `minimal.bpf.o` -> `minimal`."""
    names = set()
    for libbpf in (False, True):
        with contextlib.suppress(LoaderError):  # a name that gives no FILENAME matches none
            names.add(object_name(path, libbpf=libbpf))
    return names
