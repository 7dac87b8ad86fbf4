"""Versions: the package's own, the loader version classic objects gate on, and the Android
API level that Android's 2026 objects gate on.

Objects declare `bpfloader_min_ver <= LOADER_VERSION < bpfloader_max_ver` (globally and per
map/program def). Android counts its loader versions 0.1, 0.2, ... as 1, 2, ...; we speak the
object format at Android's level 0.48, so objects written for Android's mainline loaders (which
ask for at least 42) load, and the header's default range [0, 0x10000) admits us.
"""

__version__ = "0.1.0"
LOADER_VERSION = 48

# Android's 2026 defs gate on the Android release instead, as `api_level_full` (NetBpfLoad's
# NETBPFLOAD_*_VER): min <= level < max. We claim 26Q2's, the release whose format we read;
# `--android-api-level` claims another (a number, or a release's name below).
ANDROID_API_LEVELS = {
    "S": 3100,
    "T": 3300,
    "U": 3400,
    "V": 3500,
    "25Q2": 3600,
    "25Q4": 3610,
    "26Q2": 3700,
    "26Q3": 3702,
    "26Q4": 3710,
    "27Q1": 3712,
    "27Q2": 3800,
}
ANDROID_API_LEVEL = ANDROID_API_LEVELS["26Q2"]
