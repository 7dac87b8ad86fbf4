"""`bpfloader systemd-units`: the units, the journal catalog and the defaults file of systemd/
(package data), for an installation that neither `make install` nor the .deb set up: a pip
install, a virtual environment. The units start this installation's own command, by the
absolute path it was run by (`/opt/venv/bin/bpfloader systemd-units --install`), which is what
`systemd-analyze verify` and systemd need (a bare `bpfloader` is looked up in systemd's own
PATH, where a virtual environment's is not).

Under PREFIX (default /usr/local, where systemd and journalctl look too): the units in
lib/systemd/system, the catalog in lib/systemd/catalog, the README (the package's description)
in share/doc/bpfloader, which the units' Documentation= names. The defaults file is
/etc/default/bpfloader for the system's prefixes (/usr, /usr/local) and PREFIX/etc/default/
bpfloader for any other (a staging directory), the units' EnvironmentFile= naming it there; an
existing one is kept, as `make install` keeps it.
"""

from __future__ import annotations

import os
import re
import sys
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bpfloader.errors import LoaderError

TEMPLATES = Path(__file__).parent / "systemd"
UNITS = (
    "bpfloader.service",
    "bpfloader-bpffs.service",
    "bpfloader-reload.service",
    "bpfloader.path",
)
CATALOG = "bpfloader.catalog"
DEFAULTS = "bpfloader.default"
SYSTEM_PREFIXES = ("/usr", "/usr/local")
# What the templates say, as `make install` with its default PREFIX would install them.
TEMPLATE_DOCS = "file:///usr/local/share/doc/bpfloader/"
TEMPLATE_DEFAULTS = "/etc/default/bpfloader"
UNSAFE_IN_PATH = re.compile(r"[\"'\\%$]|[^\x21-\x7e]")  # what unit files would read otherwise


@dataclass(frozen=True)
class Layout:
    """Where the files go under a prefix."""

    prefix: Path

    @property
    def unit_dir(self) -> Path:
        return self.prefix / "lib/systemd/system"

    @property
    def catalog_dir(self) -> Path:
        return self.prefix / "lib/systemd/catalog"

    @property
    def doc_dir(self) -> Path:
        return self.prefix / "share/doc/bpfloader"

    @property
    def system(self) -> bool:
        """Whether systemd reads units there (else it is a staging directory)."""
        return str(self.prefix) in SYSTEM_PREFIXES

    @property
    def defaults(self) -> Path:
        return (Path("/etc") if self.system else self.prefix / "etc") / "default/bpfloader"


@dataclass(frozen=True)
class UnitFile:
    path: Path
    text: str
    keep: bool = False  # kept where it exists (the defaults file: the administrator's)


def layout(prefix: str) -> Layout:
    path = os.path.abspath(prefix)
    if UNSAFE_IN_PATH.search(path):
        raise LoaderError(
            "a prefix with a space, quote, backslash, '%', '$' or a non-ASCII character, which "
            "unit files would read otherwise",
            file=path,
        )
    return Layout(Path(path))


def running_command() -> str:
    """The command being run, by the absolute path it was started by: a console script's own
    path (a script's interpreter is given the path the script was run by)."""
    path = os.path.abspath(sys.argv[0])
    if path.endswith(".py") or not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise LoaderError(
            "not run as a command (python -m bpfloader?): run the bpfloader command the units "
            "are to start, e.g. /opt/venv/bin/bpfloader systemd-units",
            file=path,
        )
    return path


# Where bpfloader.service's sandbox cannot see a command (systemd.exec(5)).
HIDDEN = {
    "/home/": "ProtectHome=yes hides /home, /root and /run/user",
    "/root/": "ProtectHome=yes hides /home, /root and /run/user",
    "/run/user/": "ProtectHome=yes hides /home, /root and /run/user",
    "/tmp/": "PrivateTmp=yes gives it a /tmp and /var/tmp of its own",
    "/var/tmp/": "PrivateTmp=yes gives it a /tmp and /var/tmp of its own",
}


def hidden_from_service(command: str) -> str | None:
    """Why bpfloader.service's sandbox cannot run `command` (its real path), or None."""
    real = os.path.realpath(command)
    return next((why for top, why in HIDDEN.items() if real.startswith(top)), None)


def exec_path(command: str) -> str:
    """`command` as the first word of an Exec line (systemd.service(5)): `%` doubled (a
    specifier otherwise), quoted where it has a space, quote or backslash. A `$` is its own
    there: variables are expanded in the arguments only."""
    if re.search(r"[\x00-\x1f\x7f]", command):
        raise LoaderError("a command path with a control character", file=repr(command))
    text = command.replace("%", "%%")
    if re.search(r"[\s\"'\\]", text):
        text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def render(name: str, command: str, where: Layout) -> str:
    """Template `name` for this installation: its Exec lines run `command`, its
    Documentation= and EnvironmentFile= name where the README and the defaults file are."""
    text = (TEMPLATES / name).read_text()
    text = re.sub(
        r"^(Exec\w*=)bpfloader ", lambda m: f"{m[1]}{exec_path(command)} ", text, flags=re.M
    )
    docs = "file://" + urllib.parse.quote(f"{where.doc_dir}/")
    text = text.replace(TEMPLATE_DOCS, docs)
    return text.replace(
        f"EnvironmentFile=-{TEMPLATE_DEFAULTS}", f"EnvironmentFile=-{where.defaults}"
    )


def unit_files(command: str, where: Layout) -> list[UnitFile]:
    """Every file `systemd-units --install` writes, with its text."""
    files = [UnitFile(where.unit_dir / name, render(name, command, where)) for name in UNITS]
    files.append(UnitFile(where.catalog_dir / CATALOG, (TEMPLATES / CATALOG).read_text()))
    files.append(UnitFile(where.defaults, (TEMPLATES / DEFAULTS).read_text(), keep=True))
    files.append(UnitFile(where.doc_dir / "README.md", _readme()))
    return files


def _readme() -> str:
    """The README, as the installed package's description holds it."""
    from importlib import metadata

    try:
        description = metadata.distribution("bpfloader").metadata.json.get("description")
    except metadata.PackageNotFoundError as e:
        raise LoaderError("bpfloader is not installed: no README to install") from e
    return str(description or "")


def show(prefix: str) -> Iterator[str]:
    """What `--install` would write, file by file (`# PATH`, then its text)."""
    for unit_file in unit_files(running_command(), layout(prefix)):
        yield f"# {unit_file.path}"
        yield unit_file.text.rstrip("\n")


def install(prefix: str) -> Iterator[str]:
    """Write every file (atomically: a systemd reading them never sees half of one), saying
    what was done, then what to run next."""
    where = layout(prefix)
    command = running_command()
    for unit_file in unit_files(command, where):
        if unit_file.keep and unit_file.path.exists():
            yield f"kept {unit_file.path} (it exists)"
            continue
        _write(unit_file.path, unit_file.text)
        yield f"wrote {unit_file.path}"
    why = hidden_from_service(command)
    if why is not None:
        yield f"warning: bpfloader.service cannot run {command}: {why} (install it in /opt)"
    if where.system:
        yield "next: journalctl --update-catalog && systemctl daemon-reload"
        yield "then: systemctl enable bpfloader.service (at every boot)"
    else:
        yield f"staged: systemd reads no units from {where.unit_dir} (--prefix /usr/local does)"


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(text)
    staged.chmod(0o644)
    os.replace(staged, path)
