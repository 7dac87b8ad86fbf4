"""Waiting for the boot load: the equivalent of waiting for Android's bpf.progs_loaded=1."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from bpfloader.locations import DEFAULT_STATE_DIR, LOADED_MARKER

POLL_SECONDS = 0.05


def loaded_marker(state_dir: str = DEFAULT_STATE_DIR) -> dict[str, Any] | None:
    """What the last successful load or reload wrote (time, pid, counts), or None."""
    try:
        with open(os.path.join(state_dir, LOADED_MARKER)) as f:
            data: dict[str, Any] = json.load(f)
    except (FileNotFoundError, ValueError):
        return None
    return data


def wait_for_loaded(timeout: float, state_dir: str = DEFAULT_STATE_DIR) -> bool:
    """True once a `bpfloader load` (or reload) has finished without a critical failure;
    False if that has not happened within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while loaded_marker(state_dir) is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)
    return True
