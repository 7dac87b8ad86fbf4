"""bpfloader: load compiled BPF objects at boot and pin them by name, with declared ownership."""

from bpfloader.version import LOADER_VERSION, __version__

__all__ = ["LOADER_VERSION", "__version__"]
