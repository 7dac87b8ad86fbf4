"""Helpers for the object cache's tests (tests/loader/test_object_cache.py and the attacks on
its directory, tests/attack/test_cache_dir.py)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any


def planted_payload(marker: Path) -> bytes:
    """A pickle that makes the directory `marker` when it is loaded: what an entry someone
    else wrote would run as root, were it read."""

    class Plant:
        def __reduce__(self) -> tuple[Any, ...]:
            return os.mkdir, (str(marker),)

    return pickle.dumps(Plant())
