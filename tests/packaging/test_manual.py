"""The man page and the shell completions (share/, made by `make man` from the argument parser
with scripts/manual): what is committed is what the parser makes now, the page names every
command and each command's every option in that command's entry, groff renders it without a
warning, and bash, given the completion, completes every command, verb and option."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bpfloader import cli
from bpfloader.client.targets import TARGETS
from tests.conftest import REPO

SHARE = REPO / "share"
MAN_PAGE = SHARE / "man/man8/bpfloader.8"
BASH = SHARE / "bash-completion/completions/bpfloader"
ZSH = SHARE / "zsh/site-functions/_bpfloader"


def commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(the words after `bpfloader`, the parser) of the program, each command and each verb."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, (*path, name))


def options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for action in parser._actions for o in action.option_strings}


def verbs(parser: argparse.ArgumentParser) -> set[str]:
    return {
        name
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name in action.choices
    }


ALL = list(commands(cli.full_parser()))


def test_every_command_and_verb_is_there():
    """What the other tests walk: the commands of --help and bpftool's verbs."""
    names = {" ".join(path) for path, _ in ALL}
    assert set(cli.COMMANDS) <= names
    assert {"map dump", "map lookup", "map update", "map delete", "prog show", "link show"} <= names


def test_the_committed_files_are_what_the_parser_makes(tmp_path: Path):
    """`make man` was run after the last change of a command or an option."""
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "manual"), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    for made in (MAN_PAGE, BASH, ZSH):
        fresh = tmp_path / made.relative_to(SHARE)
        assert fresh.read_text() == made.read_text(), f"{made}: run `make man`"


def plain(roff: str) -> str:
    """The man page's source without its escapes: what a reader sees, line for line."""
    text = re.sub(r"\\f[BIRP]|\\[,/&]", "", roff)
    return text.replace("\\-", "-").replace("\\e", "\\")


def entries(page: str) -> dict[str, str]:
    """Each command's entry in the page (`.SS bpfloader map dump` up to the next heading)."""
    found: dict[str, str] = {}
    for chunk in re.split(r"^(?=\.S[SH] )", page, flags=re.MULTILINE):
        heading = re.match(r"\.SS (bpfloader[ a-z-]*)\n", chunk)
        if heading and heading.group(1) not in found:  # the first: COMMANDS (then EXAMPLES)
            found[heading.group(1)] = chunk
    return found


def test_the_man_page_names_every_command_and_each_of_its_options():
    page = plain(MAN_PAGE.read_text())
    by_command = entries(page)
    top = page.split(".SH COMMANDS")[0]
    for path, parser in ALL:
        if not path:
            assert options(parser) - {"-h", "--help"} <= set(re.findall(r"--?[a-z-]+", top))
            continue
        name = " ".join(("bpfloader", *path))
        assert name in by_command, name
        entry = by_command[name]
        assert parser.description and " ".join(parser.description.split()) in " ".join(
            entry.split()
        ), name
        for option in options(parser) - {"-h", "--help"}:
            assert re.search(rf"^\.TP\n{re.escape(option)}\b", entry, re.MULTILINE) or re.search(
                rf"^\.TP\n.*, {re.escape(option)}\b", entry, re.MULTILINE
            ), (name, option)
    for section in (
        "ATTACH TARGETS",
        "EXIT STATUS",
        "EXAMPLES",
        "FILES",
        "ENVIRONMENT",
        "SEE ALSO",
    ):
        assert f".SH {section}" in page, section
    targets = page.split(".SH ATTACH TARGETS")[1].split(".SH ")[0]
    for row in TARGETS:
        assert f".TP\n.B {row.syntax}\n" in targets, row.syntax
    exit_status = page.split(".SH EXIT STATUS")[1].split(".SH ")[0]
    for code, when in cli.EXIT_STATUS:
        assert f".TP\n.B {code}\n{when}" in exit_status


def test_groff_renders_the_page_without_a_warning():
    done = subprocess.run(
        ["groff", "-man", "-Tutf8", "-ww", "-z", str(MAN_PAGE)], capture_output=True, text=True
    )
    assert (done.returncode, done.stderr) == (0, "")
    shown = subprocess.run(
        ["man", "-l", str(MAN_PAGE)],
        capture_output=True,
        text=True,
        env={"MANWIDTH": "80", "PATH": "/usr/bin:/bin", "MAN_KEEP_FORMATTING": ""},
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("BPFLOADER(8)")
    assert "bpfloader - load BPF objects at boot and pin them by name" in shown.stdout


def complete(words: list[str]) -> list[str]:
    """What bash, with the completion sourced, offers for the last of `words` (the line so far)."""
    script = (
        f"source {BASH}\n"
        f"COMP_WORDS=({' '.join(map(quote, words))})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        f"COMP_LINE={quote(' '.join(words))}\n"
        "COMP_POINT=${#COMP_LINE}\n"
        "_shtab_bpfloader\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return sorted(line for line in done.stdout.splitlines() if line)


def quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


@pytest.mark.parametrize(("path", "parser"), ALL, ids=[" ".join(p) or "bpfloader" for p, _ in ALL])
def test_bash_completes_every_verb_and_option(path: tuple[str, ...], parser):
    words = ["bpfloader", *path]
    named = verbs(parser)
    if named:
        assert complete([*words, ""]) == sorted(named)
        return
    assert complete([*words, "-"]) == sorted(options(parser)), words
    for option in options(parser):
        assert option in complete([*words, option[:-1]]), (words, option)


def test_bash_completes_choices_and_paths(tmp_path: Path):
    assert complete(["bpfloader", "load", "--log-target", ""]) == ["auto", "console", "journal"]
    assert complete(["bpfloader", "stat"]) == ["status"]
    (tmp_path / "map_x").touch()
    (tmp_path / "dir").mkdir()
    pins = complete(["bpfloader", "map", "dump", f"{tmp_path}/"])
    assert f"{tmp_path}/map_x" in pins and f"{tmp_path}/dir" in pins
    dirs = complete(["bpfloader", "load", "--pin-root", f"{tmp_path}/"])
    assert dirs == [f"{tmp_path}/dir"]


def test_zsh_completion_parses_and_names_every_option():
    done = subprocess.run(["zsh", "-n", str(ZSH)], capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (0, "")
    text = ZSH.read_text()
    for _, parser in ALL:
        for option in options(parser):
            assert option in text, option
