"""The old-kernel policy: lower kernel.unprivileged_bpf_disabled only where pin modes need it.

On kernels before 5.19 a non-zero setting refuses every bpf() call, BPF_OBJ_GET included, to
processes without CAP_BPF, so a daemon in a map's group cannot open the map whatever its mode.
With `--lower-unprivileged-bpf-disabled` the loader asks the kernel whether that is so and,
only then, writes 0 (what Android's loader does at every boot). On a newer kernel nothing is
touched: there the setting guards map creation and program loading, not pins.
"""

from __future__ import annotations

from enum import Enum

from bpfloader.journal import Priority, Reporter
from bpfloader.kernel import unprivileged as kunpriv
from bpfloader.loader import events

SYSCTL = "kernel.unprivileged_bpf_disabled"


class Decision(Enum):
    NOT_NEEDED = "not needed"  # the kernel lets processes without CAP_BPF reach the pins
    LOWER = "lower"  # refused because of the setting (2): write 0
    LOCKED = "locked"  # refused, and the setting is 1: it cannot change before a reboot


def decide(setting: int | None, refused: bool) -> Decision:
    """What to do, from the sysctl's value (None: no such sysctl) and whether BPF_OBJ_GET is
    refused to processes without CAP_BPF. At 0 there is nothing to lower."""
    if not refused or not setting:
        return Decision.NOT_NEEDED
    if setting == kunpriv.DISABLED_LOCKED:
        return Decision.LOCKED
    return Decision.LOWER


def open_pins_to_unprivileged(reporter: Reporter) -> Decision:
    """Apply the policy to the running kernel and report what was done."""
    before = kunpriv.read_setting()
    refused = bool(before) and kunpriv.refuses_unprivileged_obj_get()  # at 0 no need to ask
    decision = decide(before, refused)
    value = str(before)
    if decision is Decision.LOWER:
        kunpriv.write_setting(kunpriv.ENABLED)
        after = kunpriv.read_setting()
        value = str(after)
        message = (
            f"{SYSCTL} lowered from {before} to {after}: this kernel refuses every bpf() call, "
            "BPF_OBJ_GET included, to processes without CAP_BPF while it is set; now the pins' "
            "owner, group and mode decide who opens them"
        )
        priority = Priority.NOTICE
    elif decision is Decision.LOCKED:
        message = (
            f"{SYSCTL} is 1 (locked until reboot): processes without CAP_BPF cannot open any "
            "pin on this kernel, whatever its mode; set it to 2 or 0 at boot (sysctl.d) instead"
        )
        priority = Priority.WARNING
    else:
        message = (
            f"{SYSCTL} left at {before}: this kernel lets processes without CAP_BPF open pins "
            "as their modes allow"
        )
        priority = Priority.INFO
    reporter.emit(events.unprivileged_bpf(priority, message, SYSCTL, value))
    return decision
