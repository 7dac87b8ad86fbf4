"""Booting the image in QEMU (software emulation: -accel tcg) and reading what the guest said.

The guest's console (ttyS0) goes to one file, the checker's findings (ttyS1) to another. The disk
is opened with snapshot=on, so a boot never changes the cached image. The guest powers itself
off when its checker is done; a boot that does not end within the timeout is killed.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.boot.image import Kernel

FINDING = re.compile(r"^(PASS|FAIL|INFO|DONE) ([\w-]+): ?(.*)$")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1bc|\r")


@dataclass
class Boot:
    console: str
    seconds: float
    timed_out: bool
    returncode: int | None
    results: dict[str, tuple[str, str]] = field(
        default_factory=dict
    )  # check -> (PASS|FAIL, detail)
    info: dict[str, str] = field(default_factory=dict)
    done: str | None = None  # the DONE line's variant, once the checker finished

    def console_tail(self, lines: int = 80) -> str:
        return "\n".join(ANSI.sub("", self.console).splitlines()[-lines:])


def boot(
    kernel: Kernel, disk: Path, *, append: str = "", timeout: float = 600, smp: int = 2
) -> Boot:
    with tempfile.TemporaryDirectory(prefix="bpfloader-boot-") as tmp:
        console, findings = Path(tmp, "console.log"), Path(tmp, "findings.log")
        command = [
            "qemu-system-x86_64", "-accel", "tcg", "-m", "1024", "-smp", str(smp),
            "-nographic", "-monitor", "none", "-no-reboot", "-nic", "none",
            "-kernel", str(kernel.image), "-initrd", str(kernel.initrd),
            "-append", f"console=ttyS0 root=/dev/vda rw panic=-1 {append}".strip(),
            "-drive", f"file={disk},format=raw,if=virtio,snapshot=on",
            "-serial", f"file:{console}", "-serial", f"file:{findings}",
        ]  # fmt: skip
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            output, _ = process.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            timed_out = True
        seconds = time.monotonic() - started
        text = console.read_text(errors="replace") if console.exists() else ""
        text += output.decode(errors="replace")  # QEMU's own complaints, if any
        result = Boot(text, seconds, timed_out, process.returncode)
        if findings.exists():
            _parse(findings.read_text(errors="replace"), result)
        return result


def _parse(findings: str, result: Boot) -> None:
    for line in findings.splitlines():
        match = FINDING.match(ANSI.sub("", line).strip())
        if not match:
            continue
        kind, name, detail = match.groups()
        if kind in ("PASS", "FAIL"):
            result.results[name] = (kind, detail)
        elif kind == "INFO":
            result.info[name] = detail
        else:
            result.done = name
