"""The JSON forms against their documentation: a module that makes a JSON form documents it in
its docstring, each key written `"key":`; the tests compare the keys a real run produced with
those."""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any


def documented(module: ModuleType) -> set[str]:
    """The keys a module's docstring gives its JSON forms."""
    assert module.__doc__ is not None
    return set(re.findall(r'"(\w+)":', module.__doc__))


def keys(value: Any) -> set[str]:
    """Every key of every object in a JSON value, at any depth."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys(v)}
    return set()
