"""Feature probing's table (pure): a refusal on a kernel older than what an object needs is
said in words, with the version; on a kernel that has it, or for another errno, it is not."""

from __future__ import annotations

import errno

import pytest

from bpfloader.errors import KernelError, NotSupportedError
from bpfloader.kernel import features
from bpfloader.obj.bpftypes import MapType, ProgType


@pytest.fixture
def kernel_4_19(monkeypatch):
    monkeypatch.setattr(features, "running_kernel", lambda: (4, 19, 0))


def refused(err: int, operation: str = "BPF_MAP_CREATE") -> KernelError:
    return KernelError(operation, err, section="maps")


def test_a_map_type_newer_than_the_kernel(kernel_4_19):
    found = features.unsupported(refused(errno.EINVAL), *features.map_type_need(MapType.RINGBUF))
    assert isinstance(found, NotSupportedError)
    assert found.need == "map type RINGBUF needs Linux 5.8; this kernel is 4.19"
    # A kernel error still: the errno, the operation and where are kept.
    assert (found.errno, found.operation, found.section) == (errno.EINVAL, "BPF_MAP_CREATE", "maps")
    assert str(found) == (
        "maps: map type RINGBUF needs Linux 5.8; this kernel is 4.19 "
        "(BPF_MAP_CREATE failed: EINVAL (Invalid argument))"
    )


def test_a_program_type_newer_than_the_kernel(kernel_4_19):
    found = features.unsupported(
        refused(524, "BPF_PROG_LOAD"), *features.prog_type_need(ProgType.LSM)
    )
    assert found is not None
    assert found.need == "program type LSM needs Linux 5.7; this kernel is 4.19"


def test_the_first_missing_need_is_named(kernel_4_19):
    needs = [*features.map_type_need(MapType.ARRAY), ("global data", features.GLOBAL_DATA)]
    found = features.unsupported(refused(errno.EOPNOTSUPP), *needs)
    assert found is not None
    assert found.need == "global data needs Linux 5.2; this kernel is 4.19"


def test_nothing_is_said_where_the_kernel_has_it_or_the_errno_means_something_else(
    kernel_4_19,
):
    hash_map = features.map_type_need(MapType.HASH)
    assert features.unsupported(refused(errno.EINVAL), *hash_map) is None
    ringbuf = features.map_type_need(MapType.RINGBUF)
    assert features.unsupported(refused(errno.EPERM), *ringbuf) is None
    assert features.map_type_need(999) == []
    assert features.prog_type_need(999) == []


def test_every_type_has_a_version():
    assert set(features.MAP_TYPES) == set(MapType) - {MapType.UNSPEC}
    assert set(features.PROG_TYPES) == set(ProgType) - {ProgType.UNSPEC}
