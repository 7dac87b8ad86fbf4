"""dirfd.py: directories opened by a walk of fds from `/`, each checked on its fd; links
followed only when root owns them; `..` and link loops as the kernel's own walk treats them.
As root (links are given to another uid with lchown)."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest

from bpfloader.errors import UntrustedError
from bpfloader.kernel.fd import Fd
from bpfloader.loader import dirfd
from bpfloader.loader.trust import FILE_FLAGS, directory_problem

OTHER = 65534


def theirs(link: Path) -> Path:
    os.chown(link, OTHER, OTHER, follow_symlinks=False)
    return link


def inode(fd: Fd) -> tuple[int, int]:
    st = os.fstat(fd.number)
    return st.st_dev, st.st_ino


def same(fd: Fd, path: Path) -> bool:
    st = path.stat()
    return inode(fd) == (st.st_dev, st.st_ino)


def open_dir(path: Path | str) -> tuple[Fd, str]:
    return dirfd.open_directory(str(path), directory_problem)


def test_a_plain_path(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    fd, real = open_dir(tmp_path / "a" / "b")
    with fd:
        assert real == str(tmp_path / "a" / "b")
        assert same(fd, tmp_path / "a" / "b")


def test_a_link_of_roots_is_followed(tmp_path: Path):
    (tmp_path / "real" / "sub").mkdir(parents=True)
    (tmp_path / "abs").symlink_to(tmp_path / "real")
    (tmp_path / "rel").symlink_to("real/sub")
    fd, real = open_dir(tmp_path / "abs" / "sub")
    with fd:
        assert real == str(tmp_path / "real" / "sub")
    fd, real = open_dir(tmp_path / "rel")
    with fd:
        assert real == str(tmp_path / "real" / "sub")
        assert same(fd, tmp_path / "real" / "sub")


def test_a_link_someone_else_owns_is_refused(tmp_path: Path):
    (tmp_path / "real").mkdir()
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "real")
    theirs(link)
    with pytest.raises(dirfd.LinkRefused) as refused:
        open_dir(link)
    assert str(refused.value) == (
        f"{link} is a symbolic link owned by uid {OTHER}: only root's links are followed"
    )
    assert (refused.value.path, refused.value.uid) == (str(link), OTHER)
    # Further down a path, too; and walk_directory walks through it, noting it.
    (tmp_path / "real" / "sub").mkdir()
    with pytest.raises(dirfd.LinkRefused):
        open_dir(link / "sub")
    fd, real, problem = dirfd.walk_directory(str(link / "sub"), directory_problem)
    with fd:
        assert real == str(tmp_path / "real" / "sub")
        assert problem == str(refused.value)


def test_an_untrusted_directory_is_refused(tmp_path: Path):
    (tmp_path / "open" / "inner").mkdir(parents=True)
    os.chmod(tmp_path / "open", 0o777)
    reason = (
        "writable by group root and everyone and not sticky "
        f"(gid 0, mode 0777; fix: chmod go-w {tmp_path}/open)"
    )
    with pytest.raises(UntrustedError, match=re.escape(f"directory {tmp_path}/open is {reason}")):
        open_dir(tmp_path / "open" / "inner")
    with pytest.raises(UntrustedError, match=re.escape(f"directory {tmp_path}/open is {reason}")):
        open_dir(tmp_path / "open")  # the last one too
    fd, _, problem = dirfd.walk_directory(str(tmp_path / "open" / "inner"), directory_problem)
    fd.close()
    assert problem == f"directory {tmp_path}/open is {reason}"
    os.chmod(tmp_path / "open", 0o1777)  # sticky: as /tmp
    fd, _ = open_dir(tmp_path / "open" / "inner")
    fd.close()
    os.chown(tmp_path / "open", OTHER, OTHER)
    with pytest.raises(UntrustedError, match=f"owned by uid {OTHER}, not root"):
        open_dir(tmp_path / "open" / "inner")
    # A link of root's in a directory that is not trusted is not followed either.
    (tmp_path / "open" / "link").symlink_to(tmp_path)
    with pytest.raises(UntrustedError, match=f"^directory {tmp_path}/open is owned"):
        open_dir(tmp_path / "open" / "link")


def test_the_last_directory_gets_its_own_check(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    os.chmod(tmp_path / "a", 0o777)
    seen = []

    def last(st: os.stat_result, path: str) -> str | None:
        seen.append(st.st_ino)
        return None

    fd, _ = dirfd.open_directory(str(tmp_path / "a"), directory_problem, check_last=last)
    fd.close()
    assert seen == [(tmp_path / "a").stat().st_ino]
    # Reached by `..`, the last is still the last; it was on the way too (b was looked up in it).
    with pytest.raises(UntrustedError):
        dirfd.open_directory(str(tmp_path / "a" / "b" / ".."), directory_problem, check_last=last)
    os.chmod(tmp_path / "a", 0o755)
    os.chmod(tmp_path / "a" / "b", 0o777)
    seen.clear()
    fd, real = dirfd.open_directory(
        str(tmp_path / "a" / "b" / ".."), directory_problem, check_last=last
    )
    fd.close()
    assert real == str(tmp_path / "a")
    assert seen == [(tmp_path / "a").stat().st_ino]  # b was never looked into: not checked


def test_dot_dot(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    fd, real = open_dir(f"{tmp_path}/a/b/../../c")
    with fd:
        assert real == str(tmp_path / "c")
    # `..` after a link is the parent of its target, not of the link (as the kernel's walk).
    (tmp_path / "c" / "to_b").symlink_to(tmp_path / "a" / "b")
    fd, real = open_dir(tmp_path / "c" / "to_b" / "..")
    with fd:
        assert real == str(tmp_path / "a")
    # Above `/` is `/`.
    fd, real = open_dir("/../../..")
    with fd:
        assert real == "/"
        assert same(fd, Path("/"))


def test_link_loops_end(tmp_path: Path):
    (tmp_path / "loop").symlink_to("loop")
    with pytest.raises(OSError) as e:
        open_dir(tmp_path / "loop")
    assert e.value.errno == errno.ELOOP
    # A chain of MAX_LINKS links is followed, one more is not (the kernel's own bound).
    (tmp_path / "d").mkdir()
    previous = "d"
    for i in range(dirfd.MAX_LINKS):
        (tmp_path / f"l{i}").symlink_to(previous)
        previous = f"l{i}"
    fd, real = open_dir(tmp_path / previous)
    with fd:
        assert real == str(tmp_path / "d")
    (tmp_path / "one_more").symlink_to(previous)
    with pytest.raises(OSError) as e:
        open_dir(tmp_path / "one_more")
    assert e.value.errno == errno.ELOOP


def test_missing_and_not_a_directory(tmp_path: Path):
    (tmp_path / "file").write_text("")
    with pytest.raises(FileNotFoundError) as missing:
        open_dir(tmp_path / "none" / "deeper")
    assert missing.value.filename == f"{tmp_path}/none"
    with pytest.raises(NotADirectoryError):
        open_dir(tmp_path / "file")


def test_open_directory_at_never_follows(tmp_path: Path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    fd, _ = open_dir(tmp_path)
    with fd:
        dirfd.open_directory_at(fd, "real", f"{tmp_path}/real").close()
        with pytest.raises(OSError) as e:
            dirfd.open_directory_at(fd, "link", f"{tmp_path}/link")
        assert e.value.errno in (errno.ELOOP, errno.ENOTDIR)


def test_open_file_at(tmp_path: Path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("content")
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "to_f").symlink_to("../d/f")
    (tmp_path / "e" / "to_to_f").symlink_to(tmp_path / "e" / "to_f")
    (tmp_path / "e" / "to_dir").symlink_to("../d/")
    theirs_link = tmp_path / "e" / "theirs"
    theirs_link.symlink_to("to_f")
    theirs(theirs_link)
    os.mkfifo(tmp_path / "e" / "fifo")
    fd, real = open_dir(tmp_path / "e")
    with fd:

        def open_file(name: str) -> tuple[Fd, str]:
            return dirfd.open_file_at(fd, real, name, FILE_FLAGS, directory_problem)

        for name in ("to_f", "to_to_f"):
            found, where = open_file(name)
            with found:
                assert where == str(tmp_path / "d" / "f")
                assert os.read(found.number, 100) == b"content"
        with pytest.raises(dirfd.LinkRefused) as refused:
            open_file("theirs")
        assert refused.value.path == str(theirs_link)
        with pytest.raises(IsADirectoryError):
            open_file("to_dir")
        with pytest.raises(FileNotFoundError):
            open_file("none")
        found, where = open_file("fifo")  # no writer: it would block without O_NONBLOCK
        found.close()
        assert where == str(tmp_path / "e" / "fifo")
        with pytest.raises(OSError, match="not a file name"):
            open_file("../d/f")
