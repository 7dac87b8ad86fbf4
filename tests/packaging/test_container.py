"""The container image and the Kubernetes example. The Dockerfile linted (hadolint, from PyPI),
what it copies checked against the tree and the .dockerignore; the DaemonSet manifest validated
against Kubernetes' own schemas (kubernetes-validate, from PyPI: its schemas ship with it) and
against the loader's command line parser. Then the image built by buildah, offline, from a base
the tests make (container_image.py), and the DaemonSet's own command run in it as a pod runs it:
the kubelet's ConfigMap volume, a private bpffs, PID 1 of its own; it loads the image's compiled
examples, is ready only after its own run, and ends at once on SIGTERM."""

from __future__ import annotations

import contextlib
import copy
import fnmatch
import json
import os
import re
import shlex
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate.utils import all_versions

from bpfloader.cli import _parser
from bpfloader.client.ready import DEFAULT_STATE_DIR, LOADED_MARKER
from tests import kubelet_support as kubelet
from tests.conftest import REPO, mounted_bpffs, pins_in
from tests.packaging import container_image

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


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = daemonset()["spec"]["template"]["spec"]
    return spec


def the_container() -> dict[str, Any]:
    (container,) = pod_spec()["containers"]
    assert isinstance(container, dict)
    return container


def script() -> str:
    """The shell script the DaemonSet's container runs (its command: /bin/sh -c SCRIPT)."""
    shell, flag, text = the_container()["command"]
    assert (shell, flag) == ("/bin/sh", "-c")
    assert isinstance(text, str)
    return text


# The Kubernetes releases the manifest is checked against: the oldest and the newest schemas
# kubernetes-validate carries (it reads them from its own package: no network).
KUBERNETES = sorted({all_versions()[0], kubernetes_validate.latest_version()})


@pytest.mark.parametrize("version", KUBERNETES)
def test_daemonset_is_valid_kubernetes(version: str) -> None:
    """Strict: a field Kubernetes does not know fails, as a misspelt one (the second check
    proves the validator would say so)."""
    manifest = daemonset()
    kubernetes_validate.validate(manifest, version, strict=True)
    misspelt = copy.deepcopy(manifest)
    mount = misspelt["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]
    mount["mountPropagaton"] = mount.pop("mountPropagation")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, version, strict=True)


def test_daemonset_mounts_what_the_loader_needs() -> None:
    pod = pod_spec()
    container = the_container()
    assert container["securityContext"]["privileged"] is True
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["hostNetwork"] is True  # attach sees the node's interfaces (docs/kubernetes.md)
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    for path in ("/sys/fs/bpf", DEFAULT_STATE_DIR):
        assert volumes[mounts[path]["name"]]["hostPath"]["path"] == path, path
    objects = mounts["/etc/bpf"]
    assert objects.get("readOnly") is True
    assert volumes[objects["name"]]["configMap"]["name"] == "bpfloader-objects"
    # Only the node's bpffs follows the node's mounts; nothing goes back to the node.
    assert {path: m.get("mountPropagation") for path, m in mounts.items()} == {
        "/sys/fs/bpf": "HostToContainer",
        "/etc/bpf": None,
        DEFAULT_STATE_DIR: None,
        "/run/systemd/journal": None,
    }
    # The journal is optional: a node without journald gets an empty directory, not a pod
    # that cannot start (a `Socket` hostPath would keep it from starting).
    journal = volumes[mounts["/run/systemd/journal"]["name"]]["hostPath"]
    assert journal == {"path": "/run/systemd/journal", "type": "DirectoryOrCreate"}


def probe_file() -> str:
    """The file whose existence the readiness probe tests."""
    test, flag, path = the_container()["readinessProbe"]["exec"]["command"]
    assert (test, flag) == ("test", "-e")
    assert isinstance(path, str)
    return path


def test_daemonset_command_and_probe_match_the_loader() -> None:
    """The script reloads with the loader's own defaults (the mounts above), and the probe is
    the file it makes once that reload ran, in the container's own filesystem (a new container
    starts without it, whatever the node's /run/bpfloader holds)."""
    lines = [line.strip() for line in script().splitlines() if line.strip()]
    (run,) = [line for line in lines if line.startswith("bpfloader ")]
    argv = shlex.split(run)[1:]
    assert _parser(argv).parse_args(argv).command == "reload"
    assert lines[0] == "trap 'exit 0' TERM INT"  # before anything runs
    (touch,) = [line for line in lines if line.startswith("touch ")]
    assert touch.split()[1] == probe_file()
    assert not probe_file().startswith((DEFAULT_STATE_DIR, "/etc/bpf", "/sys/fs/bpf"))
    assert lines[-2:] == ["sleep infinity &", "wait"]


# -- the image, built and run ------------------------------------------------------------------


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Dockerfile's image, built offline on the cached base; removed after the module."""
    log = tmp_path_factory.mktemp("container") / "build.log"
    started = time.monotonic()
    base = container_image.ensure_base(log)
    based = time.monotonic()
    tag = f"localhost/bpfloader-test:{uuid.uuid4().hex[:12]}"
    try:
        container_image.build_image(base, tag, log)
    except RuntimeError as e:
        raise AssertionError(f"{e}\n{log.read_text()[-4000:]}") from e
    built = time.monotonic()
    print(f"container base {based - started:.0f} s, image {built - based:.0f} s (log: {log})")
    try:
        yield tag
    finally:
        container_image.remove_image(tag)


@contextlib.contextmanager
def new_container(image: str) -> Iterator[container_image.Container]:
    """A container of the image, as a new pod gets: a file system of its own, from the image."""
    made = container_image.Container.of(image)
    try:
        yield made
    finally:
        made.remove()


def pid_one_running(text: str) -> int:
    """The host pid of the process that is PID 1 of its own namespace and runs `/bin/sh -c
    text`: the DaemonSet's shell as the kubelet would signal it."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")[:-1]
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        nspid = re.search(r"^NSpid:\s+(.*)$", status, re.MULTILINE)
        if cmdline == [b"/bin/sh", b"-c", text.encode()] and nspid and nspid[1].split()[-1] == "1":
            return int(entry)
    raise AssertionError("the DaemonSet's shell is not running as PID 1 of a namespace")


# How the test starts the pod's shell in the container: PID 1 of a PID namespace of its own, as
# the runtime starts a container's command, in a mount namespace where the node's bpffs (given
# at NODE_BPFFS) is bound at /sys/fs/bpf. The runtime mounts it there itself; buildah's chroot
# isolation puts its own /sys over any volume beneath it, so the test binds it there.
NODE_BPFFS = "/run/node-bpffs"
AS_PID_ONE = (
    "unshare",
    "--pid",
    "--fork",
    "--mount",
    "/bin/sh",
    "-c",
    f'mount --bind {NODE_BPFFS} /sys/fs/bpf && exec /bin/sh -c "$1"',
)


@dataclass
class PodRun:
    pins_at_ready: set[str]  # the pins when the pod first showed ready
    output: str
    returncode: int
    seconds_to_end: float  # from SIGTERM to its end


def run_pod(image: str, volumes: tuple[str, ...]) -> PodRun:
    """The DaemonSet's command in a new container of the image, with `volumes`: waited for until
    ready (the readiness probe's file), then sent SIGTERM as the kubelet ends a pod."""
    text = script()
    with new_container(image) as container:
        ready = container.root / probe_file().removeprefix("/")
        assert not ready.exists()  # a new container starts not ready
        pod = subprocess.Popen(
            container.command(*AS_PID_ONE, "pod", text, volumes=volumes),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not ready.exists() and pod.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if not ready.exists():
                pod.kill()
                raise AssertionError(f"never ready:\n{pod.communicate()[0]}")
            at_ready = pins_in(bpffs_of(volumes))
            os.kill(pid_one_running(text), signal.SIGTERM)
            asked = time.monotonic()
            output, _ = pod.communicate(timeout=10)
            return PodRun(at_ready, output, pod.returncode, time.monotonic() - asked)
        finally:
            if pod.poll() is None:
                pod.kill()
                pod.wait()


def bpffs_of(volumes: tuple[str, ...]) -> Path:
    (source,) = [v.split(":")[0] for v in volumes if v.split(":")[1] == NODE_BPFFS]
    return Path(source)


@pytest.mark.kernel
def test_image_runs_the_daemonset_on_a_configmap(
    image: str, bpfloader_cli, tmp_path: Path, bpffs: Path
) -> None:
    """The DaemonSet's command, in the image, as pods run it: PID 1 of its own PID namespace,
    the objects a ConfigMap volume as the kubelet writes one (read-only), the test's private
    bpffs as the node's /sys/fs/bpf, a state directory as the node's /run/bpfloader. The first
    pod loads the examples the image compiled (the pins as the loader on the host makes them
    from the same files: names, owners, modes), is ready only once its own reload ran, and ends
    at once, with status 0, on SIGTERM. Then a rollout: a new version of the ConfigMap without
    one object, and a new pod, not ready though the node's state says loaded, whose reload
    removes that object's pins before it is ready."""
    with new_container(image) as container:
        examples = container.root / "usr/share/bpfloader/examples"
        payload = {o.name: o.read_bytes() for o in sorted(examples.glob("*.o"))}
    assert len(payload) == len(list((REPO / "etc/bpf").glob("*.c"))), sorted(payload)
    # The same files loaded by the loader on the host, into a bpffs of its own: the reference.
    with mounted_bpffs(tmp_path / "reference") as reference:
        objects = tmp_path / "objects"
        objects.mkdir()
        for name, data in payload.items():
            (objects / name).write_bytes(data)
        bpfloader_cli("load", "--dir", objects, "--pin-root", reference, check=True)
        expected = {pin: _owner(reference / pin) for pin in pins_in(reference)}
    assert expected["map_myschedtp_cpu_pid_map"] == (0, 4, 0o640)  # what the example declares
    state = tmp_path / "node-run-bpfloader"  # the node's /run/bpfloader
    state.mkdir(mode=0o755)
    with kubelet.node_tmpfs(tmp_path / "node") as node:
        volume = kubelet.make_volume(node / "bpfloader-objects")
        volumes = (f"{bpffs}:{NODE_BPFFS}", f"{volume}:/etc/bpf:ro", f"{state}:/run/bpfloader")
        kubelet.write(volume, payload)
        first = run_pod(image, volumes)
        assert first.returncode == 0, first.output
        assert f"objects: {len(payload)} loaded, 0 skipped, 0 failed" in first.output
        assert first.pins_at_ready == set(expected)
        assert {pin: _owner(bpffs / pin) for pin in pins_in(bpffs)} == expected
        assert first.seconds_to_end < 5, first.output
        shown = subprocess.run(
            ["bpftool", "-j", "map", "show", "pinned", str(bpffs / "map_myschedtp_cpu_pid_map")],
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(shown.stdout)["name"] == "cpu_pid_map"

        assert (state / LOADED_MARKER).exists()  # the node's marker, from the first pod
        kubelet.write(volume, {k: v for k, v in payload.items() if k != "xdp_drop_port.o"})
        second = run_pod(image, volumes)
        assert second.returncode == 0, second.output
        assert second.pins_at_ready == {p for p in expected if "xdp_drop_port" not in p}
        assert second.seconds_to_end < 5, second.output
    print(f"pods ended {first.seconds_to_end:.2f} s, {second.seconds_to_end:.2f} s after SIGTERM")


def _owner(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)
