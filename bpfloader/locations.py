"""Where the loader keeps its record and where consumers look for it: shared by the loader and
the client library, kept apart from both so that importing one does not import the other."""

DEFAULT_PIN_ROOT = "/sys/fs/bpf"  # where the loader pins, and the client opens pins by name
DEFAULT_STATE_DIR = "/run/bpfloader"
DEFAULT_CACHE_DIR = "/var/cache/bpfloader"  # the object cache of `load` and `reload`
LOADED_MARKER = "loaded"  # written there by the loader after a run with no critical failure
