"""Where the loader keeps its record and where consumers look for it: shared by the loader and
the client library, kept apart from both so that importing one does not import the other."""

DEFAULT_STATE_DIR = "/run/bpfloader"
LOADED_MARKER = "loaded"  # written there by the loader after a run with no critical failure
