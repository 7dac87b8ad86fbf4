"""The pure object layer: bytes in, ObjectSpec out, and relocation. No syscalls, no root."""

from bpfloader.obj.reader import read_object
from bpfloader.obj.relocate import relocate
from bpfloader.obj.spec import Gates, MapReference, MapSpec, ObjectSpec, Ownership, ProgramSpec

__all__ = [
    "Gates",
    "MapReference",
    "MapSpec",
    "ObjectSpec",
    "Ownership",
    "ProgramSpec",
    "read_object",
    "relocate",
]
