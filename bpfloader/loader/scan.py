"""Finding objects: `*.o` at the top of the source directory, then in each immediate subdirectory
(a *location*, whose name becomes a subdirectory of the pin root), all in sorted order."""

from __future__ import annotations

import os

from bpfloader.errors import LoaderError
from bpfloader.loader.plan import SourceObject


def _objects_in(directory: str) -> list[str]:
    return sorted(e.name for e in os.scandir(directory) if e.name.endswith(".o") and e.is_file())


def scan(source_dir: str) -> list[SourceObject]:
    if not os.path.isdir(source_dir):
        raise LoaderError(f"source directory {source_dir} does not exist or is not a directory")
    found = [SourceObject(os.path.join(source_dir, name)) for name in _objects_in(source_dir)]
    locations = sorted(e.name for e in os.scandir(source_dir) if e.is_dir())
    for location in locations:
        directory = os.path.join(source_dir, location)
        found += [
            SourceObject(os.path.join(directory, n), location) for n in _objects_in(directory)
        ]
    return found
