"""help(bpfloader.client) reads well: every public class and function of the client, and every
public method and property of those classes, has a docstring; and the page names them all."""

from __future__ import annotations

import inspect
import pydoc

import bpfloader.client as client


def public_members(cls: type) -> dict[str, object]:
    """Public methods and properties defined by `cls` or a base of this package's."""
    found: dict[str, object] = {}
    for base in reversed(cls.__mro__):
        if base.__module__.startswith("bpfloader"):
            for name, member in vars(base).items():
                if name.startswith("_"):  # the class's docstring says how one is made
                    continue
                if isinstance(member, classmethod | staticmethod):
                    member = member.__func__
                if inspect.isfunction(member) or isinstance(member, property):
                    found[name] = member
    return found


def test_every_public_name_of_the_client_is_documented():
    undocumented = []
    for name in client.__all__:
        obj = getattr(client, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # BPF_ANY, BPF_NOEXIST, BPF_EXIST: flags, said in update_elem
        if not obj.__doc__:
            undocumented.append(name)
        if inspect.isclass(obj):
            undocumented += [
                f"{name}.{member}"
                for member, value in public_members(obj).items()
                if not value.__doc__  # type: ignore[attr-defined]
            ]
    assert undocumented == []


def test_the_help_page_names_every_public_name():
    page = pydoc.render_doc(client, renderer=pydoc.plaintext)
    assert all(name in page for name in client.__all__)
    assert "open_named" in page and "key_type" in page and "ProgramInfo" in page
