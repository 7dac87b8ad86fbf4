"""The command line: parse arguments, call the library, print, exit. Nothing else lives here.

Each command is a row of COMMANDS (a `Command`): its line in `bpfloader --help`, its
description, its exit codes and examples (the end of `bpfloader COMMAND --help`), the function
that adds its arguments and the one that runs it. Only the parser of the command being run is
built (building them all took longer than an unchanged reload's work); `full_parser()` builds
them all, for the man page and the shell completions (scripts/manual), which are therefore
made from the very options the commands take.

Exit codes (EXIT_*; each command's --help says which it uses and when):
  0  success (load: every object loaded, was skipped by its gates, or failed without being
     critical)
  1  load, reload: a critical object failed to load (load --dry-run: would fail);
     check: an object is not valid
  2  the command could not do its work: bad arguments, no source directory, pin root not a
     bpffs, the lock not obtained in time, no such pin or key, a refusal of the kernel
  3  reload: an object failed (its previous version, if any, stays in place);
     load --dry-run: an object that is not critical would fail
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from bpfloader.errors import LoaderError, one_line
from bpfloader.journal import Priority, open_reporter
from bpfloader.locations import DEFAULT_CACHE_DIR
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
    """argparse's, at the terminal's width, and keeping a description's or an epilog's
    indented blocks (tables, examples) as written while it wraps their plain paragraphs."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24):
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap  # as argparse does, only to print help

        blocks = []
        for block in text.strip("\n").split("\n\n"):
            if "\n " not in block and not block.startswith(" "):
                blocks.append(super()._fill_text(block, width, indent))
                continue
            lines = []
            for line in block.splitlines():
                code = _EXIT_LINE.match(line)  # an exit code's line: wrapped under its text
                hanging = " " * len(code.group(0)) if code else ""
                lines += (
                    textwrap.wrap(
                        line, width, initial_indent=indent, subsequent_indent=indent + hanging
                    )
                    if code
                    else [indent + line]
                )
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks)


_EXIT_LINE = re.compile(r"  \d  ")  # `  2  the command could not ...` in an epilog


class _ArgumentParser(argparse.ArgumentParser):
    """argparse's, with _HelpFormatter (its subparsers are of this class too), and errors that
    help: an option no command has is refused with the usage of the command it was given to
    and the closest option it has; a choice not among those offered, with the closest one."""

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(**kwargs)

    def parse_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> argparse.Namespace:
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = _chosen_parser(self, parsed)
            command.error(f"unrecognized arguments: {' '.join(extras)}{command.closest(extras)}")
        return parsed

    def closest(self, extras: list[str]) -> str:
        """' (did you mean --pin-root?)' for the first of `extras` that is close to an
        option of this parser ('' when none is)."""
        import difflib

        options = [o for action in self._actions for o in action.option_strings]
        for extra in extras:
            if extra.startswith("-"):
                found = difflib.get_close_matches(extra.partition("=")[0], options, n=1)
                if found:
                    return f" (did you mean {found[0]}?)"
        return ""

    def error(self, message: str) -> Any:  # argparse's: prints the usage, exits 2
        invalid = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)$", message)
        if invalid:
            import difflib

            choices = re.findall(r"'([^']*)'", invalid.group(2))
            found = difflib.get_close_matches(invalid.group(1), choices, n=1)
            if found:
                message += f" (did you mean {found[0]}?)"
        super().error(message)


def _chosen_parser(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> _ArgumentParser:
    """The parser of the (sub)command `parsed` ran: `bpfloader map dump`'s for `map dump`."""
    chosen = parser
    while True:
        actions = [a for a in chosen._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(parsed, actions[0].dest, None) if actions else None
        if name is None or name not in actions[0].choices:
            break
        chosen = actions[0].choices[name]
    assert isinstance(chosen, _ArgumentParser)
    return chosen


if TYPE_CHECKING:
    Commands = argparse._SubParsersAction[_ArgumentParser]  # add_subparsers() gives it


class Command(NamedTuple):
    """One command (or one verb of `map`, `prog`, `link`): what --help and the man page say of
    it, the arguments it takes, and what runs it (its exit code)."""

    summary: str  # its line in the list of commands
    description: str  # the first paragraph of its --help and of its man page entry
    define: Callable[[_ArgumentParser], None]  # adds its arguments
    run: Callable[[argparse.Namespace], int]  # what runs it (for map, prog, link: their verbs)
    exits: tuple[tuple[int, str], ...]  # the exit codes it uses, and when
    examples: tuple[tuple[str, str], ...] = ()  # a command line, and what it does


def epilog(command: Command) -> str:
    """The end of a command's --help: its exit codes and examples."""
    return _epilog(command.exits, command.examples)


def _epilog(exits: Sequence[tuple[int, str]], examples: Sequence[tuple[str, str]]) -> str:
    """Exit codes, then examples, each example's comment on the line above it."""
    text = "exit status:\n" + "\n".join(f"  {code}  {when}" for code, when in exits)
    if examples:
        text += "\n\nexamples:\n" + "\n".join(
            (f"  # {what}\n" if what else "") + f"  {line}" for line, what in examples
        )
    return text


def _add_command(commands: Commands, name: str, command: Command) -> _ArgumentParser:
    parser = commands.add_parser(
        name, help=command.summary, description=command.description, epilog=epilog(command)
    )
    command.define(parser)
    return parser


def _add_verbs(parser: _ArgumentParser, dest: str, verbs: dict[str, Command]) -> None:
    """The verbs of `map`, `prog` or `link`, each a command of its own."""
    actions = parser.add_subparsers(dest=dest, required=True, metavar="VERB")
    for name, verb in verbs.items():
        _add_command(actions, name, verb)


def _top_parser() -> tuple[_ArgumentParser, Commands]:
    parser = _ArgumentParser(
        prog="bpfloader",
        description="Load BPF objects at boot and pin them by name, with the owner, group and "
        "mode each declares (Android's bpfloader, for ordinary Linux); check, inspect and "
        "attach what is pinned. `bpfloader COMMAND --help` says more of each command.",
        epilog=TOP_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"bpfloader {__version__}")
    commands = parser.add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND"
    )
    return parser, commands


def _parser(argv: Sequence[str]) -> _ArgumentParser:
    """The parser for `argv`: the command being run, or every command (to list them, or to
    refuse an unknown one)."""
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    if chosen not in COMMANDS:
        return full_parser()
    parser, commands = _top_parser()
    _add_command(commands, chosen, COMMANDS[chosen])
    return parser


def full_parser() -> _ArgumentParser:
    """The parser with every command: what the man page and the completions are made of."""
    parser, commands = _top_parser()
    for name, command in COMMANDS.items():
        _add_command(commands, name, command)
    return parser


# ---- arguments that several commands share ----------------------------------------------------


def _add_where(parser: _ArgumentParser, *, state: str) -> None:
    """The source directory, the pin root and the state directory (`state`: what the state
    directory is to this command)."""
    where = parser.add_argument_group("where")
    where.add_argument(
        "--dir", metavar="DIR", default="/etc/bpf", help="where the objects are (default /etc/bpf)"
    )
    where.add_argument(
        "--pin-root", metavar="DIR", default="/sys/fs/bpf", help="the bpffs (default /sys/fs/bpf)"
    )
    where.add_argument(
        "--state-dir",
        metavar="DIR",
        default="/run/bpfloader",
        help=f"{state} (default %(default)s)",
    )


STATE_OF_A_RUN = "where the record of what was pinned, the lock and the loaded marker live"


def _add_platform(parser: _ArgumentParser) -> None:
    """What the objects' gates are told this system is, beside the kernel it runs."""
    platform = parser.add_argument_group("platform (what the objects' gates are told)")
    platform.add_argument(
        "--build-type",
        choices=("eng", "user", "userdebug"),
        help="honour the defs' ignore_on_<build type> bits for this build type",
    )
    platform.add_argument(
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


def _add_reporting(parser: _ArgumentParser) -> argparse._ArgumentGroup:
    """The lock and the log: what every command that changes pins takes."""
    run = parser.add_argument_group("the run")
    run.add_argument(
        "--lock-timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="seconds to wait for another run to finish (default 120)",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="report only warnings and errors")
    run.add_argument(
        "--log-target",
        choices=("auto", "journal", "console"),
        default="auto",
        help="where events go: the systemd journal (exit 2 where no journald listens), stderr, "
        "or auto (the journal when a journald listens on its socket, else stderr)",
    )
    return run


def _add_access(parser: _ArgumentParser) -> None:
    access = parser.add_argument_group("trust and limits")
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


def _add_json(parser: _ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"{what} (see README: JSON forms)")


# ---- load, reload, unload, status -------------------------------------------------------------


def _define_load(parser: _ArgumentParser, *, reloading: bool = False) -> None:
    _add_where(parser, state=STATE_OF_A_RUN)
    run = _add_reporting(parser)
    run.add_argument(
        "--dir-mode",
        type=_mode,
        default=0o755,
        metavar="MODE",
        help="mode of the pin directories made (default 0755)",
    )
    run.add_argument(
        "--jobs",
        type=_jobs,
        default=0,
        metavar="N",
        help="objects loaded at once (default: one per CPU, at most 4; 1: one by one)",
    )
    _add_cache(parser)
    _add_access(parser)
    _add_platform(parser)
    out = parser.add_argument_group("output")
    if not reloading:
        out.add_argument(
            "--dry-run",
            action="store_true",
            help="print the plan (every pin, its owner and mode, or why not) and touch nothing; "
            "needs no root",
        )
    out.add_argument(
        "--json", action="store_true", help="what the run did as JSON (see README: JSON forms)"
    )
    out.add_argument(
        "--stats",
        action="store_true",
        help="after the summary, where the time went per object: parse, kernel, pin",
    )
    out.add_argument(
        "--stats-json", metavar="FILE", help="the same figures as JSON, written to FILE"
    )
    if reloading:
        parser.add_argument(
            "--recreate-incompatible-maps",
            action="store_true",
            help="replace a pinned map whose definition changed (its contents are lost) "
            "instead of failing its object",
        )


def _add_cache(parser: _ArgumentParser) -> None:
    cache = parser.add_argument_group("the object cache")
    cache.add_argument(
        "--cache-dir",
        metavar="DIR",
        default=DEFAULT_CACHE_DIR,
        help="where each object's parsed form is kept between runs, so that unchanged objects "
        "are not parsed again (default %(default)s; used only when root's and writable by no "
        "one else; deleting it is always safe)",
    )
    cache.add_argument(
        "--no-cache",
        action="store_true",
        help="parse every object; the object cache is neither read nor written",
    )


def _define_reload(parser: _ArgumentParser) -> None:
    _define_load(parser, reloading=True)


def _define_unload(parser: _ArgumentParser) -> None:
    parser.add_argument(
        "objects", nargs="*", metavar="OBJECT", help="object path, file name or FILENAME"
    )
    _add_where(parser, state=STATE_OF_A_RUN)
    _add_reporting(parser)
    _add_json(parser, "the objects unloaded and the pins removed, as JSON")


def _define_status(parser: _ArgumentParser) -> None:
    _add_where(parser, state="where the record of what was pinned is")
    _add_json(parser, "the stable JSON form")


def _options(args: argparse.Namespace) -> LoadOptions:
    from bpfloader.loader.run import LoadOptions

    return LoadOptions(
        source_dir=args.dir,
        pin_root=args.pin_root,
        dir_mode=getattr(args, "dir_mode", 0o755),
        build_type=getattr(args, "build_type", None),
        android_api_level=getattr(args, "android_api_level", ANDROID_API_LEVEL),
        state_dir=args.state_dir,
        lock_timeout=getattr(args, "lock_timeout", 0.0),
        allow_untrusted=getattr(args, "insecure_allow_untrusted", False),
        shared_pin_root=getattr(args, "insecure_shared_pin_root", False),
        max_object_size=getattr(args, "max_object_size", None),
        max_map_memory=getattr(args, "max_map_memory", None),
        max_run_map_memory=getattr(args, "max_run_map_memory", None),
        jobs=getattr(args, "jobs", 0),
        # load and reload's object cache; none for the commands that take no --cache-dir
        cache_dir=None if getattr(args, "no_cache", True) else args.cache_dir,
    )


def _run(args: argparse.Namespace) -> int:
    """load and reload."""
    from bpfloader.loader import run
    from bpfloader.loader.report import format_stats, format_summary, run_json, stats
    from bpfloader.loader.results import Status

    # What is imported by now lives until the process exits: the collector is told to leave it
    # alone, instead of walking all of it at each full collection and once more at exit (which
    # cost more than an unchanged reload's own work).
    gc.freeze()
    options = _options(args)
    if args.command == "load" and args.dry_run:
        return _dry_run(args, options)
    reporter = open_reporter(args.log_target, Priority.WARNING if args.quiet else Priority.INFO)
    if args.lower_unprivileged_bpf_disabled:
        from bpfloader.loader.unprivileged import open_pins_to_unprivileged

        open_pins_to_unprivileged(reporter)
    if args.command == "reload":
        result = run.reload(
            options, reporter, recreate_incompatible_maps=args.recreate_incompatible_maps
        )
    else:
        result = run.load(options, reporter)
    if args.json:
        _out_json(run_json(args.command, options, result))
    else:
        _out(format_summary(result))
        if args.stats:
            _out(format_stats(result))
    if args.stats_json:
        with open(args.stats_json, "w") as f:
            json.dump(stats(result), f, indent=1)
    if result.critical_failures:
        return EXIT_CRITICAL
    if args.command == "reload" and result.count(Status.FAILED):
        return EXIT_FAILED
    return EXIT_OK


def _dry_run(args: argparse.Namespace, options: LoadOptions) -> int:
    from bpfloader.loader import run
    from bpfloader.loader.report import format_plan, plan_json

    env = run.current_environment(args.build_type, args.android_api_level)
    plan = run.plan_run(options, env, os.path.lexists)
    for obj in plan.objects:
        where = one_line(obj.path)
        if obj.read.untrusted is not None:
            untrusted = one_line(obj.read.untrusted)
            print(f"bpfloader: warning: {where}: INSECURE: {untrusted}", file=sys.stderr)
        if obj.read.policy_ignored is not None:
            ignored = one_line(obj.read.policy_ignored)
            print(f"bpfloader: warning: {where}: {ignored}", file=sys.stderr)
    _out_json(plan_json(options, plan)) if args.json else _out(format_plan(plan))
    failing = [o.plan for o in plan.objects if o.plan.error is not None]
    if any(p.critical for p in failing):
        return EXIT_CRITICAL
    return EXIT_FAILED if failing else EXIT_OK


def _unload(args: argparse.Namespace) -> int:
    from bpfloader.loader.report import unload_json
    from bpfloader.loader.unload import unload

    gc.freeze()  # as _run
    options = _options(args)
    reporter = open_reporter(args.log_target, Priority.WARNING if args.quiet else Priority.INFO)
    result = unload(options, reporter, args.objects)
    if args.json:
        _out_json(unload_json(options, result))
    elif not result.unloaded:
        pin_root = one_line(os.path.abspath(options.pin_root))
        _out(f"nothing to unload: no object of {pin_root} is recorded or found")
    else:
        _out(f"removed {len(result.removed)} pins")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from bpfloader.loader.status import current_status, format_status

    report = current_status(_options(args))
    _out_json(report) if args.json else _out(format_status(report))
    return EXIT_OK


# ---- check, cflags, build ---------------------------------------------------------------------


def _define_check(parser: _ArgumentParser) -> None:
    parser.add_argument("objects", nargs="+", metavar="OBJECT", help="object files (.o)")
    parser.add_argument(
        "--kernel",
        action="store_true",
        help="also create the maps and load the programs (the verifier runs), then drop them",
    )
    parser.add_argument(
        "--pin-root",
        metavar="DIR",
        default="/sys/fs/bpf",
        help="the pin root the names are shown under (default /sys/fs/bpf)",
    )
    parser.add_argument(
        "--target-btf",
        metavar="FILE",
        help="resolve CO-RE relocations against this kernel BTF (raw BTF, or an ELF file with a "
        ".BTF section such as a kernel's vmlinux), without root",
    )
    _add_json(parser, "every object's result as JSON")
    _add_platform(parser)


def _check(args: argparse.Namespace) -> int:
    from bpfloader.kernel.system import raise_open_files_limit
    from bpfloader.loader.check import check_json, check_object, format_result
    from bpfloader.loader.run import current_environment

    raise_open_files_limit()  # an fd per map and program while it loads
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
    if args.json:
        _out_json(check_json(results))
    else:
        for result in results:
            _out(format_result(result))
    return EXIT_OK if all(r.ok for r in results) else EXIT_CRITICAL


def _add_no_btf(parser: _ArgumentParser) -> None:
    parser.add_argument(
        "--no-btf",
        dest="btf",
        action="store_false",
        help="compile without -g: no BTF, so maps that need BTF types (local storage, values "
        "with a bpf_spin_lock or bpf_timer) cannot load, and verifier logs have no C lines",
    )


def _define_build(parser: _ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", metavar="SOURCE", help="BPF C files (.c)")
    parser.add_argument(
        "-o", "--out-dir", metavar="DIR", default=".", help="where the .o files go (default .)"
    )
    parser.add_argument(
        "--cflag",
        action="append",
        default=[],
        dest="cflags",
        metavar="FLAG",
        help="an extra compiler flag (repeatable), e.g. --cflag=-DGID=4",
    )
    _add_no_btf(parser)


def _build(args: argparse.Namespace) -> int:
    """build and cflags."""
    from bpfloader import build as builder

    try:
        if args.command == "cflags":
            _out(" ".join(builder.cflags(btf=args.btf)))
        else:
            for output in builder.build(args.sources, args.out_dir, args.cflags, btf=args.btf):
                _out(one_line(output))
    except builder.BuildError as e:
        sys.stderr.write(e.output)
        print(f"bpfloader: {e}", file=sys.stderr)
        return EXIT_SETUP
    return EXIT_OK


# ---- attach, detach: the client library for operators -----------------------------------------


def _define_attach(parser: _ArgumentParser) -> None:
    from bpfloader.client.targets import TARGET_SYNTAX

    parser.epilog = f"targets:\n{TARGET_SYNTAX}\n\n{parser.epilog}"
    parser.add_argument("program", metavar="PIN", help="the program's pin")
    parser.add_argument("target", metavar="TARGET", help="where to attach it (see targets)")
    parser.add_argument(
        "--pin",
        metavar="LINK_PIN",
        help="pin the BPF link there and exit: the program stays attached after this command. "
        "Where the state records the program's object, the link is recorded with it: status "
        "lists it, reload keeps it on the new program, unload detaches it",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        default="/run/bpfloader",
        help="the state that records the program's object (default /run/bpfloader)",
    )


def _attach(args: argparse.Namespace) -> int:
    import signal

    from bpfloader.client import Program

    interrupts = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, interrupts)  # from here on, close() runs
    with Program.open(args.program, readonly=True) as prog, prog.attach(args.target) as attached:
        links = ", ".join(str(i) for i in attached.link_ids()) or "none"
        if args.pin:
            attached.pin(args.pin)
            _out(f"{one_line(attached.target)}: pinned at {one_line(args.pin)} (link {links})")
            print(f"{one_line(args.pin)}: {one_line(_record(args, attached))}", file=sys.stderr)
        else:
            _out(f"{one_line(attached.target)}: attached (link {links}) until interrupted")
            signal.sigwait(interrupts)
    return EXIT_OK


def _record(args: argparse.Namespace, attached: Attachment) -> str:
    """The link `attach --pin` made, recorded with its program's object (by_hand.py)."""
    if len(attached.links) != 1:
        return "not recorded: held by one link per CPU (a directory of pins)"
    from bpfloader.loader.by_hand import record_link

    (link_id,) = attached.link_ids()
    return record_link(args.state_dir, args.program, args.pin, attached.target, link_id)


def _define_detach(parser: _ArgumentParser) -> None:
    parser.add_argument(
        "links", nargs="+", metavar="LINK_PIN", help="a link's pin, or a directory of them"
    )


def _detach(args: argparse.Namespace) -> int:
    from bpfloader.client import detach_pinned

    for path in args.links:
        for link in detach_pinned(path):
            _out(
                f"{one_line(path)}: detached {link.type_name} link {link.id} "
                f"of program {link.prog_id}"
            )
    return EXIT_OK


# ---- systemd-units: the units for an installation that has none ------------------------------


def _define_systemd_units(parser: _ArgumentParser) -> None:
    parser.add_argument("--install", action="store_true", help="write them (default: print them)")
    parser.add_argument(
        "--prefix",
        default="/usr/local",
        help="under PREFIX/lib/systemd and PREFIX/share/doc (default /usr/local); the defaults "
        "file in /etc for /usr and /usr/local, else in PREFIX/etc",
    )


def _systemd_units(args: argparse.Namespace) -> int:
    from bpfloader import units

    for line in units.install(args.prefix) if args.install else units.show(args.prefix):
        _out(line)
    return EXIT_OK


# ---- map, prog, link: bpftool's verbs on pins -------------------------------------------------


def _add_types(parser: _ArgumentParser, *, value: bool = True) -> None:
    from bpfloader.client.syntax import TYPE_HELP

    parser.add_argument("--key-type", metavar="TYPE", help=f"the key's type: {TYPE_HELP}")
    if value:
        parser.add_argument("--value-type", metavar="TYPE", help=f"the value's type: {TYPE_HELP}")


def _define_map(parser: _ArgumentParser) -> None:
    _add_verbs(parser, "map_command", MAP_VERBS)


def _define_map_dump(parser: _ArgumentParser) -> None:
    parser.add_argument("map", metavar="PIN", help="the map's pin")
    _add_types(parser)
    _add_json(parser, "a JSON list of {key, value}")


def _define_map_lookup(parser: _ArgumentParser) -> None:
    parser.add_argument("map", metavar="PIN", help="the map's pin")
    parser.add_argument("key", metavar="KEY", help="the element's key (see the key syntax)")
    _add_types(parser)
    _add_json(parser, "{key, value} as JSON")


def _define_map_update(parser: _ArgumentParser) -> None:
    from bpfloader.client.elements import UPDATE_FLAGS

    parser.add_argument("map", metavar="PIN", help="the map's pin")
    parser.add_argument("key", metavar="KEY", help="the element's key")
    parser.add_argument("value", metavar="VALUE", help="its new value")
    _add_types(parser)
    parser.add_argument(
        "--flag",
        choices=tuple(UPDATE_FLAGS),
        default="any",
        help="any: write whether or not the element is there (the default); noexist: only a "
        "new one; exist: only one that is there",
    )


def _define_map_delete(parser: _ArgumentParser) -> None:
    parser.add_argument("map", metavar="PIN", help="the map's pin")
    parser.add_argument("key", metavar="KEY", help="the element's key")
    _add_types(parser, value=False)


def _map(args: argparse.Namespace) -> int:
    from bpfloader.client import elements
    from bpfloader.client.dump import dump, text

    if args.map_command == "dump":
        entries = dump(args.map, args.key_type, args.value_type)
        if args.json:
            _out_json(entries, indent=None)
        else:
            _out("\n".join(one_line(f"{text(e['key'])}: {text(e['value'])}") for e in entries))
    elif args.map_command == "lookup":
        entry = elements.lookup(args.map, args.key, args.key_type, args.value_type)
        if args.json:
            _out_json(entry, indent=None)
        else:
            _out(one_line(f"{text(entry['key'])}: {text(entry['value'])}"))
    elif args.map_command == "update":
        elements.update(args.map, args.key, args.value, args.key_type, args.value_type, args.flag)
    else:
        elements.delete(args.map, args.key, args.key_type)
    return EXIT_OK


def _define_prog(parser: _ArgumentParser) -> None:
    _add_verbs(parser, "prog_command", PROG_VERBS)


def _define_link(parser: _ArgumentParser) -> None:
    _add_verbs(parser, "link_command", LINK_VERBS)


def _define_show(parser: _ArgumentParser) -> None:
    parser.add_argument("pin", metavar="PIN", help="the pin")
    _add_json(parser, "as JSON")


def _show(args: argparse.Namespace) -> int:
    """prog show and link show."""
    from bpfloader.client import show

    if args.command == "prog":
        shown = show.show_program(args.pin)
        _out_json(shown) if args.json else _out(_one_line_each(show.format_program(shown)))
    else:
        shown = show.show_link(args.pin)
        _out_json(shown) if args.json else _out(_one_line_each(show.format_link(shown)))
    return EXIT_OK


def _one_line_each(text: str) -> str:
    """Each line of `text` printable (a pin's name may hold any byte but '/' and NUL)."""
    return "\n".join(one_line(line) for line in text.split("\n"))


# ---- output and the entry point ---------------------------------------------------------------


def _out(text: str) -> None:
    """Print to stdout. A reader that stopped reading (`bpfloader status | head -1`) is not an
    error of ours: the rest goes nowhere, and the command ends as its work decides."""
    if not text:
        return
    try:
        print(text, flush=True)
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # what is still buffered is flushed there
        os.close(devnull)


def _out_json(data: Any, indent: int | None = 1) -> None:
    _out(json.dumps(data, indent=indent))


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv).parse_args(argv)
    command = COMMANDS[args.command]
    if args.command in ("load", "reload"):  # an fd per map and program while it loads
        from bpfloader.kernel.system import raise_open_files_limit

        raise_open_files_limit()
    try:
        return command.run(args)
    except LoaderError as e:
        print(f"bpfloader: {e}", file=sys.stderr)
        return EXIT_SETUP
    except OSError as e:  # the pin root, state dir or source dir refused us: not a traceback
        print(f"bpfloader: {one_line(str(e.filename or ''))}: {e.strerror}", file=sys.stderr)
        return EXIT_SETUP


# ---- the commands -----------------------------------------------------------------------------

_COULD_NOT_START = (
    "the run could not start: bad arguments, no source directory, pin root not a bpffs, a "
    "state directory refused or recording another pin root, the lock not obtained in time"
)
_ERROR = "an error, said on one line: bad arguments, no such pin, a refusal of the kernel"

# What `bpfloader --help` ends with (the man page's EXIT STATUS too).
EXIT_STATUS = (
    (EXIT_OK, "success (load: also when an object that is not critical failed)"),
    (
        EXIT_CRITICAL,
        "load, reload: a critical object failed (load --dry-run: would fail); check: an object "
        "is not valid",
    ),
    (
        EXIT_SETUP,
        "the command could not do its work: bad arguments, a pin root that is not a bpffs, the "
        "lock not obtained in time, no such pin or key, a refusal of the kernel",
    ),
    (
        EXIT_FAILED,
        "reload: an object failed, its previous version kept; load --dry-run: an object that is "
        "not critical would fail",
    ),
)
EXAMPLES = (
    ("bpfloader build prog.c -o /etc/bpf", "compile BPF C with the loader's header"),
    ("bpfloader load --dry-run", "what a load would pin, or why not"),
    ("bpfloader load", "/etc/bpf into /sys/fs/bpf (what the boot service runs)"),
    ("bpfloader status", "what is loaded and pinned"),
    (
        "bpfloader map dump /sys/fs/bpf/map_myschedtp_cpu_pid_map --key-type i32 --value-type u32",
        "a map's elements",
    ),
)
TOP_EPILOG = (
    _epilog(EXIT_STATUS, EXAMPLES)
    + "\n\nREADME.md (/usr/share/doc/bpfloader) says the rest: pin names, policy files, the JSON "
    "forms, the threat model, running at boot."
)

MAP_VERBS: dict[str, Command] = {
    "dump": Command(
        "print every key and value of a pinned map",
        "Print every element of the map pinned at PIN, one `KEY: VALUE` a line, each in the "
        "type given (hex bytes by default); a per-CPU map's value is a list, one per possible "
        "CPU.",
        _define_map_dump,
        _map,
        ((EXIT_OK, "printed"), (EXIT_SETUP, _ERROR)),
        (
            (
                "bpfloader map dump /sys/fs/bpf/map_myschedtp_cpu_pid_map --key-type i32 "
                "--value-type u32",
                "",
            ),
            ("bpfloader map dump PIN --json", "[{key, value}, ...]"),
        ),
    ),
    "lookup": Command(
        "print the value of one key",
        "Print the element KEY of the map pinned at PIN. KEY and VALUE are written as map dump "
        "prints them, in the types given: hex bytes (0a000000, or 0a 00 00 00) by default, a "
        "number for u8..i64, comma-separated fields for a struct format (1,2), and for a "
        "per-CPU map's value one value for every CPU or a JSON list of one per CPU.",
        _define_map_lookup,
        _map,
        ((EXIT_OK, "printed"), (EXIT_SETUP, f"{_ERROR}; no element with that key")),
        (("bpfloader map lookup PIN 3 --key-type u32 --value-type u64", ""),),
    ),
    "update": Command(
        "write the value of one key",
        "Write VALUE as the element KEY of the map pinned at PIN (see map lookup for the "
        "syntax of KEY and VALUE).",
        _define_map_update,
        _map,
        (
            (EXIT_OK, "written"),
            (EXIT_SETUP, f"{_ERROR}; with --flag, an element there (noexist) or not (exist)"),
        ),
        (
            ("bpfloader map update PIN 3 7 --key-type u32 --value-type u64", ""),
            ("bpfloader map update PIN 0a000000 0100000000000000 --flag noexist", "hex, new"),
        ),
    ),
    "delete": Command(
        "delete one key",
        "Delete the element KEY of the map pinned at PIN (an array's elements cannot be "
        "deleted: write zeros with update).",
        _define_map_delete,
        _map,
        ((EXIT_OK, "deleted"), (EXIT_SETUP, f"{_ERROR}; no element with that key")),
        (("bpfloader map delete PIN 3 --key-type u32", ""),),
    ),
}

PROG_VERBS: dict[str, Command] = {
    "show": Command(
        "what the kernel says of a pinned program",
        "Print the program pinned at PIN as the kernel describes it: its id, type, name and "
        "tag, its sizes and verified instructions, the maps it holds and the links that run "
        "it (bpftool prog show pinned PIN). Maps' names and links need CAP_SYS_ADMIN.",
        _define_show,
        _show,
        ((EXIT_OK, "printed"), (EXIT_SETUP, _ERROR)),
        (("bpfloader prog show /sys/fs/bpf/prog_myschedtp_tracepoint_sched_sched_switch", ""),),
    ),
}

LINK_VERBS: dict[str, Command] = {
    "show": Command(
        "what the kernel says of a pinned link",
        "Print the BPF link pinned at PIN as the kernel describes it: its id, kind, the program "
        "it runs, and where it is attached (bpftool link show pinned PIN).",
        _define_show,
        _show,
        ((EXIT_OK, "printed"), (EXIT_SETUP, _ERROR)),
        (("bpfloader link show /sys/fs/bpf/link_sched", ""),),
    ),
}

# name -> the command, in the order --help lists them
COMMANDS: dict[str, Command] = {
    "load": Command(
        "load every object of a directory and pin it",
        "Load every object file of the source directory (its maps created, its programs "
        "loaded) and pin each map and program under the pin root by name, with the owner, "
        "group and mode it declares. An object loads all or nothing; one that fails is said "
        "on one line and the others still load. A pin already in place is kept as it is (a "
        "changed object's are said to be stale: reload replaces them).",
        _define_load,
        _run,
        (
            (
                EXIT_OK,
                "every object loaded, was skipped by its gates, or failed without "
                "being critical (--dry-run: would)",
            ),
            (EXIT_CRITICAL, "a critical object failed to load (--dry-run: would fail)"),
            (EXIT_SETUP, _COULD_NOT_START),
            (EXIT_FAILED, "--dry-run: an object that is not critical would fail"),
        ),
        (
            ("bpfloader load", "/etc/bpf into /sys/fs/bpf"),
            ("bpfloader load --dry-run", "the plan; touches nothing, needs no root"),
            ("bpfloader load --dir out --pin-root /tmp/bpffs --state-dir /tmp/state", ""),
            ("bpfloader load --json | jq '.objects[].status'", ""),
        ),
    ),
    "reload": Command(
        "make the pins match the directory again, keeping map contents",
        "Make the pins match the source directory again: an unchanged object is left alone, "
        "a new one loaded, a changed one gets its programs swapped into their pins (maps kept "
        "with their contents when their definition is unchanged), and the pins of objects no "
        "longer there are removed.",
        _define_reload,
        _run,
        (
            (EXIT_OK, "every object loaded, was left alone, or was skipped by its gates"),
            (EXIT_CRITICAL, "a critical object failed to load"),
            (EXIT_SETUP, _COULD_NOT_START),
            (EXIT_FAILED, "an object failed (its previous version, if any, stays in place)"),
        ),
        (
            ("bpfloader reload", "what `systemctl reload bpfloader` runs"),
            ("bpfloader reload --recreate-incompatible-maps", "a changed map loses its contents"),
        ),
    ),
    "unload": Command(
        "remove the pins of objects (default: all)",
        "Remove the pins the state records for the objects named (by path, file name or "
        "FILENAME), or for every object: nothing else is ever removed. Without a recorded "
        "state, it is rebuilt from the pins the source directory's objects would make.",
        _define_unload,
        _unload,
        (
            (EXIT_OK, "the pins removed (or nothing was recorded)"),
            (EXIT_SETUP, _COULD_NOT_START + "; no such object recorded"),
        ),
        (
            ("bpfloader unload", "every object's pins"),
            ("bpfloader unload myschedtp", "one object's, by its FILENAME"),
        ),
    ),
    "status": Command(
        "what is loaded and pinned",
        "Every object the state records (or, without one, that the pins show), its maps, "
        "programs and links, each pin's owner, mode and kernel id read live, and the entries "
        "of the pin root that bpfloader did not make. Changes nothing.",
        _define_status,
        _status,
        ((EXIT_OK, "printed"), (EXIT_SETUP, "the pin root or the state directory refused")),
        (("bpfloader status --json | jq '.objects[] | {path, status}'", ""),),
    ),
    "cflags": Command(
        "print the flags for compiling BPF C for this loader",
        "Print the clang flags that compile BPF C for this loader (the bpf target, -O2, -g "
        "for BTF, the header's directory), for a build system of your own.",
        _add_no_btf,
        _build,
        ((EXIT_OK, "printed"),),
        (("clang $(bpfloader cflags) -c prog.c -o prog.o", ""),),
    ),
    "build": Command(
        "compile BPF C sources into objects",
        "Compile each SOURCE with clang for the bpf target, with the loader's header and BTF "
        "($CLANG, else clang, else the newest clang-N on PATH), into OUT_DIR/NAME.o.",
        _define_build,
        _build,
        ((EXIT_OK, "compiled"), (EXIT_SETUP, "clang not found, or it refused a source")),
        (
            ("bpfloader build prog.c -o /etc/bpf", ""),
            ("bpfloader build prog.c --cflag=-DGID=4", "a flag of your own"),
        ),
    ),
    "check": Command(
        "validate objects without pinning (no root needed without --kernel)",
        "Validate object files for a build pipeline: parse each, apply its policy file, gate "
        "it against this machine, name every pin it would make with its owner and mode, and "
        "relocate every program; with --kernel, also create its maps and load its programs "
        "(the verifier's whole log printed on a refusal), then drop them. Nothing is pinned.",
        _define_check,
        _check,
        (
            (EXIT_OK, "every object is valid"),
            (EXIT_CRITICAL, "an object is not valid (each is said on its FAIL line)"),
            (EXIT_SETUP, "bad arguments, a --target-btf that cannot be read"),
        ),
        (
            ("bpfloader check prog.o", "no root needed"),
            ("bpfloader check --kernel prog.o", "and the verifier's word (root)"),
            ("bpfloader check --target-btf vmlinux prog.o", "CO-RE against another kernel"),
        ),
    ),
    "attach": Command(
        "attach a pinned program; held until interrupted, or pinned as a link with --pin",
        "Attach the program pinned at PIN to TARGET. Without --pin the attachment is held "
        "until the command is interrupted (Ctrl-C, SIGTERM); with --pin its BPF link is "
        "pinned and outlives the command, recorded with the program's object where the state "
        "records it.",
        _define_attach,
        _attach,
        ((EXIT_OK, "attached (and pinned, or held until interrupted)"), (EXIT_SETUP, _ERROR)),
        (
            (
                "bpfloader attach PIN tracepoint:sched:sched_switch --pin /sys/fs/bpf/link_sched",
                "",
            ),
            ("bpfloader attach PIN xdp:eth0:driver", "held until Ctrl-C"),
        ),
    ),
    "detach": Command(
        "detach pinned links and remove their pins",
        "Detach each BPF link pinned at LINK_PIN (or in that directory) and remove its pin.",
        _define_detach,
        _detach,
        ((EXIT_OK, "detached"), (EXIT_SETUP, _ERROR)),
        (("bpfloader detach /sys/fs/bpf/link_sched", ""),),
    ),
    "map": Command(
        "read and write pinned maps: dump, lookup, update, delete",
        "bpftool's verbs on a pinned map: dump, lookup, update and delete its elements, keys "
        "and values in the types given (--key-type, --value-type).",
        _define_map,
        _map,
        ((EXIT_OK, "done"), (EXIT_SETUP, _ERROR)),
    ),
    "prog": Command(
        "describe a pinned program: show",
        "bpftool's verb on a pinned program: show.",
        _define_prog,
        _show,
        ((EXIT_OK, "done"), (EXIT_SETUP, _ERROR)),
    ),
    "link": Command(
        "describe a pinned link: show",
        "bpftool's verb on a pinned BPF link: show.",
        _define_link,
        _show,
        ((EXIT_OK, "done"), (EXIT_SETUP, _ERROR)),
    ),
    "systemd-units": Command(
        "print or install the systemd units that run this command",
        "The systemd units, the journal catalog, /etc/default/bpfloader and the README, for an "
        "installation that neither `make install` nor the .deb set up (pip, a virtual "
        "environment): the units run this command, by the path it was run by.",
        _define_systemd_units,
        _systemd_units,
        (
            (EXIT_OK, "printed, or written"),
            (EXIT_SETUP, "refused: a command path the units cannot run, a file not written"),
        ),
        (
            ("/opt/bpfloader/bin/bpfloader systemd-units --install", "as root"),
            ("bpfloader systemd-units --install --prefix /usr", ""),
        ),
    ),
}


if __name__ == "__main__":
    sys.exit(main())
