"""The command line: parse arguments, call the library, print. Nothing else lives here.

Exit codes:
  0  every object loaded, was skipped by its gates, or (load only) failed without being critical
  1  a critical object failed to load
  2  the run could not start (bad arguments, no source directory, pin root not a bpffs,
     the lock not obtained in time)
  3  reload only: an object failed (its previous version, if any, stays in place)
`check` exits 0 when every object is valid, 1 when one is not.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from bpfloader.errors import LoaderError, one_line
from bpfloader.journal import Priority, open_reporter
from bpfloader.version import ANDROID_API_LEVEL, ANDROID_API_LEVELS, __version__

if TYPE_CHECKING:
    from bpfloader.client.attachment import Attachment
    from bpfloader.loader.run import LoadOptions

EXIT_OK, EXIT_CRITICAL, EXIT_SETUP, EXIT_FAILED = 0, 1, 2, 3


def _mode(text: str) -> int:
    value = int(text, 8)
    if not 0 <= value <= 0o7777:
        raise argparse.ArgumentTypeError(f"not a mode: {text}")
    return value


def _jobs(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a number of jobs: {text} (0: one per CPU)")
    return value


def _size(text: str) -> int:
    from bpfloader.kernel.system import physical_memory
    from bpfloader.loader.limits import parse_size

    try:
        return parse_size(text, physical_memory())
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def _columns() -> int:
    """The terminal's width, found as shutil.get_terminal_size finds it but without importing
    shutil, which argparse does for this alone (shutil imports bz2 and lzma: 4 ms a start)."""
    with contextlib.suppress(KeyError, ValueError):
        return int(os.environ["COLUMNS"])
    if sys.__stdout__ is not None:
        with contextlib.suppress(ValueError, OSError):
            return os.get_terminal_size(sys.__stdout__.fileno()).columns
    return 80


class _HelpFormatter(argparse.HelpFormatter):
    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24):
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2)


class _RawDescriptionHelpFormatter(_HelpFormatter, argparse.RawDescriptionHelpFormatter):
    pass


class _ArgumentParser(argparse.ArgumentParser):
    """argparse's, with _HelpFormatter (its subparsers are of this class too)."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(**kwargs)


if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[_ArgumentParser]  # add_subparsers() gives it


def _parser(argv: Sequence[str]) -> _ArgumentParser:
    """The parser for `argv`: the command being run, or every command (to list them, or to
    refuse an unknown one). Building them all took longer than an unchanged reload's work."""
    parser = _ArgumentParser(prog="bpfloader", description="Load BPF objects and pin them by name.")
    parser.add_argument("--version", action="version", version=f"bpfloader {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    if chosen in COMMANDS:
        help_text, define = COMMANDS[chosen]
        define(commands, chosen, help_text)
    else:
        for name, (help_text, _) in COMMANDS.items():
            commands.add_parser(name, help=help_text)
    return parser


def _where() -> _ArgumentParser:
    where = _ArgumentParser(add_help=False)
    where.add_argument("--dir", default="/etc/bpf", help="where the objects are (default /etc/bpf)")
    where.add_argument(
        "--pin-root", default="/sys/fs/bpf", help="bpffs to pin in (default /sys/fs/bpf)"
    )
    where.add_argument(
        "--state-dir",
        default="/run/bpfloader",
        help="where the record of what was pinned, the lock and the loaded marker live "
        "(default /run/bpfloader)",
    )
    _add_platform(where)
    return where


def _add_platform(parser: _ArgumentParser) -> None:
    """What the objects' gates are told this system is, beside the kernel it runs."""
    parser.add_argument(
        "--build-type",
        choices=("eng", "user", "userdebug"),
        help="honour the defs' ignore_on_<build type> bits for this build type",
    )
    parser.add_argument(
        "--android-api-level",
        type=_api_level,
        default=ANDROID_API_LEVEL,
        metavar="LEVEL",
        help="the Android API level Android's 2026 objects are gated on: a number (3100 for S "
        "... 3800 for 27Q2) or a release's name ("
        + ", ".join(ANDROID_API_LEVELS)
        + f"; default {ANDROID_API_LEVEL}, 26Q2)",
    )


def _api_level(text: str) -> int:
    level = ANDROID_API_LEVELS.get(text.upper())
    if level is not None:
        return level
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is neither a number nor one of {', '.join(ANDROID_API_LEVELS)}"
        ) from None


def _running() -> _ArgumentParser:
    running = _ArgumentParser(add_help=False)
    running.add_argument(
        "--dir-mode", type=_mode, default=0o755, help="mode of directories made (0755)"
    )
    running.add_argument(
        "--lock-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for another run to finish (default 120)",
    )
    running.add_argument(
        "-q", "--quiet", action="store_true", help="report only warnings and errors"
    )
    running.add_argument(
        "--log-target",
        choices=("auto", "journal", "console"),
        default="auto",
        help="where events go: the systemd journal (exit 2 where no journald listens), stderr, "
        "or auto (the journal when a journald listens on its socket, else stderr)",
    )
    return running


def _access() -> _ArgumentParser:
    access = _ArgumentParser(add_help=False)
    access.add_argument(
        "--lower-unprivileged-bpf-disabled",
        action="store_true",
        help="the old-kernel policy: where this kernel refuses BPF_OBJ_GET to processes "
        "without CAP_BPF because kernel.unprivileged_bpf_disabled is 2 (kernels before 5.19), "
        "set it to 0 so that the pins' owner, group and mode decide who opens them",
    )
    access.add_argument(
        "--insecure-allow-untrusted",
        action="store_true",
        help="development only: load objects that someone other than root could have written "
        "(not root-owned, group- or world-writable, on such a path, or symlinked from outside "
        "the directory), with a warning each, instead of refusing them",
    )
    access.add_argument(
        "--insecure-shared-pin-root",
        action="store_true",
        help="leave a pin root that others can write (a hand-mounted bpffs is 1777) as it is, "
        "with a warning, instead of taking it over (root's, writable by no one else); other "
        "users can then add entries beside the loader's pins",
    )
    access.add_argument(
        "--max-object-size",
        type=_size,
        metavar="SIZE",
        help="refuse, unread, an object file larger than SIZE (as --max-map-memory; default 64M)",
    )
    access.add_argument(
        "--max-map-memory",
        type=_size,
        metavar="SIZE",
        help="refuse a map whose elements alone would take more than SIZE (512M, 2G, a "
        "percentage of physical memory such as 10%%, or 0 for no ceiling; default 25%%)",
    )
    access.add_argument(
        "--max-run-map-memory",
        type=_size,
        metavar="SIZE",
        help="fail an object whose maps would take those of the whole run above SIZE (as "
        "--max-map-memory; default 50%%)",
    )
    return access


def _define_load(commands: Commands, name: str, help_text: str) -> None:
    """`load` and `reload`."""
    command = commands.add_parser(name, parents=[_where(), _running(), _access()], help=help_text)
    if name == "load":
        command.add_argument("--dry-run", action="store_true", help="print the plan; touch nothing")
    command.add_argument(
        "--jobs",
        type=_jobs,
        default=0,
        help="objects loaded at once (default: one per CPU, at most 4; 1: one by one)",
    )
    command.add_argument(
        "--stats",
        action="store_true",
        help="after the summary, where the time went per object: parse, kernel, pin",
    )
    command.add_argument(
        "--stats-json", metavar="PATH", help="the same figures as JSON, written to PATH"
    )
    if name == "reload":
        command.add_argument(
            "--recreate-incompatible-maps",
            action="store_true",
            help="replace a pinned map whose definition changed (its contents are lost) "
            "instead of failing its object",
        )


def _define_unload(commands: Commands, name: str, help_text: str) -> None:
    unload = commands.add_parser(name, parents=[_where(), _running()], help=help_text)
    unload.add_argument("objects", nargs="*", help="object path, file name or FILENAME")


def _define_status(commands: Commands, name: str, help_text: str) -> None:
    status = commands.add_parser(name, parents=[_where()], help=help_text)
    status.add_argument("--json", action="store_true", help="the stable JSON form")


def _add_no_btf(parser: _ArgumentParser) -> None:
    parser.add_argument(
        "--no-btf",
        dest="btf",
        action="store_false",
        help="compile without -g: no BTF, so maps that need BTF types (local storage, values "
        "with a bpf_spin_lock or bpf_timer) cannot load, and verifier logs have no C lines",
    )


def _define_cflags(commands: Commands, name: str, help_text: str) -> None:
    _add_no_btf(commands.add_parser(name, help=help_text))


def _define_build(commands: Commands, name: str, help_text: str) -> None:
    build = commands.add_parser(name, help=help_text)
    _add_no_btf(build)
    build.add_argument("sources", nargs="+")
    build.add_argument("-o", "--out-dir", default=".", help="where the .o files go (default .)")
    build.add_argument(
        "--cflag",
        action="append",
        default=[],
        dest="cflags",
        help="an extra compiler flag (repeatable), e.g. --cflag=-DGID=4",
    )


def _define_check(commands: Commands, name: str, help_text: str) -> None:
    check = commands.add_parser(name, help=help_text)
    check.add_argument("objects", nargs="+", help="object files")
    check.add_argument(
        "--kernel",
        action="store_true",
        help="also create the maps and load the programs (the verifier runs), then drop them",
    )
    check.add_argument(
        "--pin-root", default="/sys/fs/bpf", help="the pin root the names are shown under"
    )
    check.add_argument(
        "--target-btf",
        metavar="FILE",
        help="resolve CO-RE relocations against this kernel BTF (raw BTF, or an ELF file with a "
        ".BTF section such as a kernel's vmlinux), without root",
    )
    _add_platform(check)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv).parse_args(argv)
    if args.command in ("load", "reload", "check"):  # an fd per map and program while it loads
        from bpfloader.kernel.system import raise_open_files_limit

        raise_open_files_limit()
    try:
        if args.command in ("load", "reload", "unload"):
            return _run(args)
        if args.command in ("attach", "detach", "map"):
            return _client_command(args)
        if args.command == "status":
            return _status(args)
        if args.command == "check":
            return _check(args)
        if args.command in ("cflags", "build"):
            return _build(args)
        if args.command == "systemd-units":
            return _systemd_units(args)
    except LoaderError as e:
        print(f"bpfloader: {e}", file=sys.stderr)
        return EXIT_SETUP
    except OSError as e:  # the pin root, state dir or source dir refused us: not a traceback
        print(f"bpfloader: {one_line(str(e.filename or ''))}: {e.strerror}", file=sys.stderr)
        return EXIT_SETUP
    raise AssertionError(f"unhandled command {args.command}")


def _build(args: argparse.Namespace) -> int:
    from bpfloader import build as builder

    try:
        if args.command == "cflags":
            print(" ".join(builder.cflags(btf=args.btf)))
        else:
            for output in builder.build(args.sources, args.out_dir, args.cflags, btf=args.btf):
                print(one_line(output))
    except builder.BuildError as e:
        sys.stderr.write(e.output)
        print(f"bpfloader: {e}", file=sys.stderr)
        return EXIT_SETUP
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from bpfloader.loader.check import check_object, format_result
    from bpfloader.loader.run import current_environment

    env = current_environment(args.build_type, args.android_api_level)
    pin_root = os.path.abspath(args.pin_root)
    target = None
    if args.target_btf is not None:
        from bpfloader.obj.core import read_target_btf

        try:
            with open(args.target_btf, "rb") as f:
                target = read_target_btf(f.read(), args.target_btf)
        except OSError as e:
            raise LoaderError(f"{one_line(args.target_btf)}: {e.strerror}") from e
    results = [
        check_object(path, env, pin_root, kernel=args.kernel, target=target)
        for path in args.objects
    ]
    for result in results:
        print(format_result(result))
    return EXIT_OK if all(r.ok for r in results) else EXIT_CRITICAL


def _options(args: argparse.Namespace) -> LoadOptions:
    from bpfloader.loader.run import LoadOptions

    return LoadOptions(
        source_dir=args.dir,
        pin_root=args.pin_root,
        dir_mode=getattr(args, "dir_mode", 0o755),
        build_type=args.build_type,
        android_api_level=getattr(args, "android_api_level", ANDROID_API_LEVEL),
        state_dir=args.state_dir,
        lock_timeout=getattr(args, "lock_timeout", 0.0),
        allow_untrusted=getattr(args, "insecure_allow_untrusted", False),
        shared_pin_root=getattr(args, "insecure_shared_pin_root", False),
        max_object_size=getattr(args, "max_object_size", None),
        max_map_memory=getattr(args, "max_map_memory", None),
        max_run_map_memory=getattr(args, "max_run_map_memory", None),
        jobs=getattr(args, "jobs", 0),
    )


def _run(args: argparse.Namespace) -> int:
    from bpfloader.loader import run
    from bpfloader.loader.report import format_plan, format_stats, format_summary, stats
    from bpfloader.loader.results import Status

    # What is imported by now lives until the process exits: the collector is told to leave it
    # alone, instead of walking all of it at each full collection and once more at exit (which
    # cost more than an unchanged reload's own work).
    gc.freeze()
    options = _options(args)
    if args.command == "load" and args.dry_run:
        env = run.current_environment(args.build_type, args.android_api_level)
        plan = run.plan_run(options, env, os.path.lexists)
        for obj in plan.objects:
            if obj.read.untrusted is not None:
                print(
                    f"bpfloader: warning: {one_line(obj.path)}: INSECURE: "
                    f"{one_line(obj.read.untrusted)}",
                    file=sys.stderr,
                )
            if obj.read.policy_ignored is not None:
                ignored = one_line(obj.read.policy_ignored)
                print(f"bpfloader: warning: {one_line(obj.path)}: {ignored}", file=sys.stderr)
        print(format_plan(plan))
        failed = any(o.plan.error and o.plan.critical for o in plan.objects)
        return EXIT_CRITICAL if failed else EXIT_OK
    reporter = open_reporter(args.log_target, Priority.WARNING if args.quiet else Priority.INFO)
    if getattr(args, "lower_unprivileged_bpf_disabled", False):
        from bpfloader.loader.unprivileged import open_pins_to_unprivileged

        open_pins_to_unprivileged(reporter)
    if args.command == "unload":
        from bpfloader.loader.unload import unload

        result = unload(options, reporter, args.objects)
        print(f"removed {len(result.removed)} pins")
        return EXIT_OK
    if args.command == "reload":
        result = run.reload(
            options, reporter, recreate_incompatible_maps=args.recreate_incompatible_maps
        )
    else:
        result = run.load(options, reporter)
    print(format_summary(result))
    if args.stats:
        print(format_stats(result))
    if args.stats_json:
        with open(args.stats_json, "w") as f:
            json.dump(stats(result), f, indent=1)
    if result.critical_failures:
        return EXIT_CRITICAL
    if args.command == "reload" and result.count(Status.FAILED):
        return EXIT_FAILED
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from bpfloader.loader.status import current_status, format_status

    report = current_status(_options(args))
    print(json.dumps(report, indent=1) if args.json else format_status(report))
    return EXIT_OK


# ---- attach, detach, map dump: the client library for operators ------------------------------


def _define_attach(commands: Commands, name: str, help_text: str) -> None:
    from bpfloader.client.targets import TARGET_SYNTAX

    attach = commands.add_parser(
        name,
        help=help_text,
        formatter_class=_RawDescriptionHelpFormatter,
        epilog="targets:\n" + TARGET_SYNTAX,
    )
    attach.add_argument("program", metavar="PIN_PATH", help="the program's pin")
    attach.add_argument("target", metavar="TARGET", help="where to attach it (see targets)")
    attach.add_argument(
        "--pin",
        metavar="LINK_PATH",
        help="pin the BPF link there and exit: the program stays attached after this command. "
        "Where the state records the program's object, the link is recorded with it: status "
        "lists it, reload keeps it on the new program, unload detaches it",
    )
    attach.add_argument(
        "--state-dir",
        default="/run/bpfloader",
        help="the state that records the program's object (default /run/bpfloader)",
    )


def _define_detach(commands: Commands, name: str, help_text: str) -> None:
    detach = commands.add_parser(name, help=help_text)
    detach.add_argument("links", nargs="+", metavar="LINK_PATH", help="a link pin or directory")


def _define_map(commands: Commands, name: str, help_text: str) -> None:
    from bpfloader.client.syntax import TYPE_HELP

    map_command = commands.add_parser(name, help=help_text)
    map_actions = map_command.add_subparsers(dest="map_command", required=True)
    dump = map_actions.add_parser("dump", help="print every key and value of a pinned map")
    dump.add_argument("map", metavar="PIN_PATH")
    dump.add_argument("--key-type", help=TYPE_HELP)
    dump.add_argument("--value-type", help=TYPE_HELP)
    dump.add_argument("--json", action="store_true", help="a JSON list of {key, value}")


def _client_command(args: argparse.Namespace) -> int:
    from bpfloader.client import Program, detach_pinned
    from bpfloader.client.dump import dump, text

    if args.command == "detach":
        for path in args.links:
            for link in detach_pinned(path):
                print(
                    f"{one_line(path)}: detached {link.type_name} link {link.id} "
                    f"of program {link.prog_id}"
                )
        return EXIT_OK
    if args.command == "map":
        entries = dump(args.map, args.key_type, args.value_type)
        if args.json:
            print(json.dumps(entries))
        else:
            for entry in entries:
                print(one_line(f"{text(entry['key'])}: {text(entry['value'])}"))
        return EXIT_OK
    import signal

    interrupts = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, interrupts)  # from here on, close() runs
    with Program.open(args.program, readonly=True) as prog, prog.attach(args.target) as attached:
        links = ", ".join(str(i) for i in attached.link_ids()) or "none"
        if args.pin:
            attached.pin(args.pin)
            print(f"{one_line(attached.target)}: pinned at {one_line(args.pin)} (link {links})")
            print(f"{one_line(args.pin)}: {one_line(_record(args, attached))}", file=sys.stderr)
        else:
            print(
                f"{one_line(attached.target)}: attached (link {links}) until interrupted",
                flush=True,
            )
            signal.sigwait(interrupts)
    return EXIT_OK


def _record(args: argparse.Namespace, attached: Attachment) -> str:
    """The link `attach --pin` made, recorded with its program's object (by_hand.py)."""
    if len(attached.links) != 1:
        return "not recorded: held by one link per CPU (a directory of pins)"
    from bpfloader.loader.by_hand import record_link

    (link_id,) = attached.link_ids()
    return record_link(args.state_dir, args.program, args.pin, attached.target, link_id)


def _define_systemd_units(commands: Commands, name: str, help_text: str) -> None:
    units = commands.add_parser(
        name,
        help=help_text,
        description="The systemd units, the journal catalog, /etc/default/bpfloader and the "
        "README, for an installation that neither `make install` nor the .deb set up (pip, a "
        "virtual environment): the units run this command, by the path it was run by.",
    )
    units.add_argument("--install", action="store_true", help="write them (default: print them)")
    units.add_argument(
        "--prefix",
        default="/usr/local",
        help="under PREFIX/lib/systemd and PREFIX/share/doc (default /usr/local); the defaults "
        "file in /etc for /usr and /usr/local, else in PREFIX/etc",
    )


def _systemd_units(args: argparse.Namespace) -> int:
    from bpfloader import units

    for line in units.install(args.prefix) if args.install else units.show(args.prefix):
        print(line)
    return EXIT_OK


# name -> (help, what adds its arguments), in the order --help lists them
COMMANDS: dict[str, tuple[str, Callable[[Commands, str, str], None]]] = {
    "load": ("load every object of a directory and pin it", _define_load),
    "reload": ("make the pins match the directory again, keeping map contents", _define_load),
    "unload": ("remove the pins of objects (default: all)", _define_unload),
    "status": ("what is loaded and pinned", _define_status),
    "cflags": ("print the flags for compiling BPF C for this loader", _define_cflags),
    "build": ("compile BPF C sources into objects", _define_build),
    "check": (
        "validate objects without pinning (no root needed without --kernel)",
        _define_check,
    ),
    "attach": (
        "attach a pinned program; held until interrupted, or pinned as a link with --pin",
        _define_attach,
    ),
    "detach": ("detach pinned links and remove their pins", _define_detach),
    "map": ("read pinned maps", _define_map),
    "systemd-units": (
        "print or install the systemd units that run this command",
        _define_systemd_units,
    ),
}

if __name__ == "__main__":
    sys.exit(main())
