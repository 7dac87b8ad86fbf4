"""The pure object layer: bytes in, ObjectSpec out, and relocation. No syscalls, no root.

Import the modules themselves (bpfloader.obj.reader, .spec, .relocate): this package imports
nothing, so that using the specs does not import the ELF reader."""
