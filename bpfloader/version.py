"""Versions: the package's own, and the loader version objects gate on.

Objects declare `bpfloader_min_ver <= LOADER_VERSION < bpfloader_max_ver` (globally and per
map/program def). Android counts its loader versions 0.1, 0.2, ... as 1, 2, ...; we speak the
object format at Android's level 0.48, so objects written for Android's mainline loaders (which
ask for at least 42) load, and the header's default range [0, 0x10000) admits us.
"""

__version__ = "0.1.0"
LOADER_VERSION = 48
