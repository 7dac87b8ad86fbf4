"""Links made by hand (`bpfloader attach PIN TARGET --pin LINK`), recorded in the state with
the object whose program they run, so that they are the object's as much as the links its
policy file declares: `status` lists them with it (not declared), a reload that replaces the
program keeps them on the new one (updated in place where the kind of link allows, else
attached anew to the recorded target, the pin swapped: apply.py), and `unload`, or a reload
that finds the object gone, detaches them.

A link pinned outside the state's pin root, held by several links (one per CPU), or running
a program the state does not record is not recorded: the command says why, and the link
works as before, the loader's business only as a link of others (status, reload warnings).
"""

from __future__ import annotations

import dataclasses
import os

from bpfloader.errors import LoaderError
from bpfloader.loader.lock import run_lock
from bpfloader.loader.pin_root import PinRoot
from bpfloader.loader.results import Pin
from bpfloader.loader.state import read_state, write_state
from bpfloader.loader.state_dir import StateDir
from bpfloader.obj.bpftypes import PinKind

LOCK_TIMEOUT = 30.0


def record_link(state_dir: str, program_pin: str, link_pin: str, target: str, link_id: int) -> str:
    """Record the link pinned at `link_pin` (id `link_id`, attaching the program pinned at
    `program_pin` to `target`) with that program's object; what was done, or why not, in
    words for the console."""
    program_pin, link_pin = os.path.abspath(program_pin), os.path.abspath(link_pin)
    try:
        directory = StateDir.open(state_dir, create=False)
    except FileNotFoundError:
        return f"not recorded: no state directory {state_dir}"
    except (OSError, LoaderError) as e:
        return f"not recorded: {e}"
    try:
        with directory, run_lock(directory, LOCK_TIMEOUT):
            state = read_state(directory, None)
            owner = None
            if state is not None:
                owner = next(
                    (
                        (obj, pin)
                        for obj in state.objects.values()
                        for pin in obj.pins
                        if pin.kind is PinKind.PROGRAM and pin.path == program_pin
                    ),
                    None,
                )
            if state is None or owner is None:
                return f"not recorded: the state records no program pinned at {program_pin}"
            if os.path.commonpath([state.pin_root, link_pin]) != state.pin_root:
                return f"not recorded: {link_pin} is outside the pin root {state.pin_root}"
            obj, program = owner
            with PinRoot.open_existing(state.pin_root) as root:
                mine = root.owner_of(link_pin)
            pin = Pin(
                link_pin,
                PinKind.LINK,
                program.name,
                link_id,
                mine,
                target=target,
                declared=False,
            )
            others = [p for p in obj.pins if p.path != link_pin]
            state.objects[obj.path] = dataclasses.replace(obj, pins=[*others, pin])
            write_state(directory, state)
    except (OSError, LoaderError) as e:
        return f"not recorded: {e}"
    return f"recorded with {obj.path}"
