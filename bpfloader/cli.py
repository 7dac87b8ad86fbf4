"""The command line: parse arguments, call the library, print. Nothing else lives here.

Exit codes:
  0  every object loaded, was skipped by its gates, or failed without being critical
  1  a critical object failed to load
  2  the run could not start (bad arguments, no source directory, pin root not a bpffs)
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bpfloader import build as builder
from bpfloader.errors import LoaderError
from bpfloader.journal import Priority, open_reporter
from bpfloader.version import __version__

EXIT_OK, EXIT_CRITICAL, EXIT_SETUP = 0, 1, 2


def _mode(text: str) -> int:
    value = int(text, 8)
    if not 0 <= value <= 0o7777:
        raise argparse.ArgumentTypeError(f"not a mode: {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bpfloader", description="Load BPF objects and pin them by name."
    )
    parser.add_argument("--version", action="version", version=f"bpfloader {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    load = commands.add_parser("load", help="load every object of a directory and pin it")
    load.add_argument("--dir", default="/etc/bpf", help="where the objects are (default /etc/bpf)")
    load.add_argument(
        "--pin-root", default="/sys/fs/bpf", help="bpffs to pin in (default /sys/fs/bpf)"
    )
    load.add_argument("--dry-run", action="store_true", help="print the plan; touch nothing")
    load.add_argument(
        "--dir-mode", type=_mode, default=0o755, help="mode of directories made (0755)"
    )
    load.add_argument(
        "--build-type",
        choices=("eng", "user", "userdebug"),
        help="honour the defs' ignore_on_<build type> bits for this build type",
    )
    load.add_argument("-q", "--quiet", action="store_true", help="report only warnings and errors")
    load.add_argument(
        "--log-target",
        choices=("auto", "journal", "console"),
        default="auto",
        help="where events go: the systemd journal, stderr, or auto (the journal when its "
        "socket exists, else stderr)",
    )

    commands.add_parser("cflags", help="print the flags for compiling BPF C for this loader")

    build = commands.add_parser("build", help="compile BPF C sources into objects")
    build.add_argument("sources", nargs="+")
    build.add_argument("-o", "--out-dir", default=".", help="where the .o files go (default .)")
    build.add_argument(
        "--cflag",
        action="append",
        default=[],
        dest="cflags",
        help="an extra compiler flag (repeatable), e.g. --cflag=-DGID=4",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "load":
            return _load(args)
        if args.command == "cflags":
            print(" ".join(builder.cflags()))
            return EXIT_OK
        if args.command == "build":
            for output in builder.build(args.sources, args.out_dir, args.cflags):
                print(output)
            return EXIT_OK
    except builder.BuildError as e:
        sys.stderr.write(e.output)
        print(f"bpfloader: {e}", file=sys.stderr)
        return EXIT_SETUP
    except LoaderError as e:
        print(f"bpfloader: {e}", file=sys.stderr)
        return EXIT_SETUP
    raise AssertionError(f"unhandled command {args.command}")


def _load(args: argparse.Namespace) -> int:
    from bpfloader.loader.report import format_plan, format_summary
    from bpfloader.loader.run import LoadOptions, current_environment, load, plan_run

    options = LoadOptions(
        source_dir=args.dir,
        pin_root=args.pin_root,
        dir_mode=args.dir_mode,
        build_type=args.build_type,
    )
    if args.dry_run:
        plan = plan_run(options, current_environment(args.build_type), os.path.lexists)
        print(format_plan(plan))
        return EXIT_CRITICAL if any(o.error and o.critical for o in plan.objects) else EXIT_OK
    reporter = open_reporter(args.log_target, Priority.WARNING if args.quiet else Priority.INFO)
    result = load(options, reporter)
    print(format_summary(result))
    return EXIT_CRITICAL if result.critical_failures else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
