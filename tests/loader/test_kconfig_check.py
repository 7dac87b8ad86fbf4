"""`__kconfig` externs outside the kernel differential: `bpfloader check` (no root) names the
externs an object needs; the kernel's config is read only for objects with `CONFIG_*` externs,
and once per run."""

from __future__ import annotations

from bpfloader.kernel import system
from bpfloader.loader.kernel_objects import KernelObjects
from bpfloader.obj.reader import read_object
from tests.libbpf_support import libbpf_object

VIRTUAL_ONLY = """
#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
extern unsigned int LINUX_KERNEL_VERSION __kconfig;
extern bool LINUX_HAS_BPF_COOKIE __kconfig;
SEC("socket")
int kver(struct __sk_buff *skb) { return LINUX_KERNEL_VERSION + LINUX_HAS_BPF_COOKIE; }
char LICENSE[] SEC("license") = "GPL";
"""


def test_check_names_the_externs_an_object_needs(compile_bpf, bpfloader_cli):
    obj = libbpf_object(compile_bpf, "libbpf_kconfig.c")
    run = bpfloader_cli("check", obj)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert "  extern CONFIG_HZ (.kconfig): int, 4 bytes at 28" in lines
    assert "  extern CONFIG_BPF_JIT (.kconfig): tristate, 4 bytes at 24, __weak" in lines
    assert "  extern CONFIG_DEFAULT_HOSTNAME (.kconfig): char array, 4 bytes at 45, __weak" in lines
    assert sum(" (.kconfig): " in line for line in lines) == 16


def test_the_config_is_read_only_for_config_externs_and_once(compile_bpf, monkeypatch):
    assert hasattr(system.kernel_config, "cache_info")  # read once per run (functools.cache)
    reads: list[str] = []

    def config() -> str:
        reads.append("read")
        return "CONFIG_HZ=250\n"

    monkeypatch.setattr(system, "kernel_config", config)
    virtual = read_object(libbpf_object(compile_bpf, VIRTUAL_ONLY).read_bytes(), "v.o")
    objects = KernelObjects(virtual, 0x06122C, print, lambda spec, error: None)
    kmap = virtual.map_named("kconfig")
    assert kmap is not None
    filled = objects._filled(kmap).initial_data
    assert filled is not None and filled[:4] == (0x06122C).to_bytes(4, "little")
    assert reads == []
