#!/usr/bin/python3
"""A consumer of the pins, as a daemon would be: run by bpfloader-boot-reader.service as a
dynamic non-root user in the map's group (adm), without any capability, after bpfloader.service.

It opens the map read-only through bpfloader.client, reads it, and checks that a read-write
open is refused (the 0640 mode is what decides). One line of outcome goes to stdout (the
journal); the exit status says whether it worked.
"""

import ctypes
import errno
import os
import sys

from bpfloader.client import BpfMap
from bpfloader.errors import KernelError

MAP = "/sys/fs/bpf/map_myschedtp_cpu_pid_map"


def main() -> int:
    who = f"uid={os.getuid()} gids={sorted(os.getgroups())}"
    if os.getuid() == 0:
        print(f"reader: FAIL: running as root ({who})")
        return 1
    try:
        with BpfMap.open(MAP, key="i", value=ctypes.c_uint32, readonly=True) as m:
            first = m[0]
    except (KernelError, OSError) as e:
        print(f"reader: FAIL: {who}: read-only open of {MAP}: {e}")
        return 1
    try:
        BpfMap.open(MAP, key="i", value=ctypes.c_uint32).close()
    except KernelError as e:
        refused = errno.errorcode.get(e.errno, str(e.errno))
    else:
        print(f"reader: FAIL: {who}: read-write open of a 0640 map was allowed")
        return 1
    print(f"reader: OK: {who}: read {MAP} (cpu 0: pid {first}); read-write refused ({refused})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
