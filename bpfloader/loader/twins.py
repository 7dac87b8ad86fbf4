"""Android's `@funcs` objects: `NAME@funcs.o` is `NAME.o` built with BPF-to-BPF calls (its
subprograms and callbacks not inlined), with the same pins. Where both are in one directory,
one of the two is loaded, by Android's rule (NetBpfLoad's loadAllObjects): the `@funcs` twin
on Linux 6.6.118 or later where the Android API level is 26Q2's or later, the plain object
otherwise. An object without its twin beside it loads whatever it is."""

from __future__ import annotations

import os
from collections.abc import Collection

from bpfloader.loader.gates import Environment
from bpfloader.obj.kver import format_kver, kver

FUNCS = "@funcs"
FUNCS_KERNEL = (6, 6, 118)
FUNCS_API_LEVEL = 3700  # 26Q2


def funcs_chosen(env: Environment) -> bool:
    return env.kernel >= FUNCS_KERNEL and env.android_api_level >= FUNCS_API_LEVEL


def twin_skip_reason(path: str, siblings: Collection[str], env: Environment) -> str | None:
    """Why the object at `path` is not loaded, its twin being among `siblings` (the paths of
    its directory's objects) and chosen instead; None where it is loaded."""
    directory, base = os.path.split(path)
    stem, ext = os.path.splitext(base)
    chosen = funcs_chosen(env)
    rule = (
        f"Android loads @funcs objects on Linux {format_kver(kver(*FUNCS_KERNEL))} or later "
        f"with API level {FUNCS_API_LEVEL} (26Q2) or later; this is Linux "
        f"{format_kver(env.kver)}, API level {env.android_api_level}"
    )
    if stem.endswith(FUNCS) and not chosen:
        twin = stem[: -len(FUNCS)] + ext
    elif not stem.endswith(FUNCS) and chosen:
        twin = stem + FUNCS + ext
    else:
        return None
    if os.path.join(directory, twin) not in siblings:
        return None
    return f"its twin {twin} is loaded instead ({rule})"
