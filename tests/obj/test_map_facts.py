"""The map-type facts table (obj/bpftypes.MAP_FACTS): one row per map type the kernel has, and
facts that agree with what the kernel does (the kernel's side is tested where each is used:
test_reused_flags.py, test_android_btf_maps.py, test_limits.py, test_client_maps.py)."""

from __future__ import annotations

from bpfloader.kernel.features import MAP_TYPES
from bpfloader.obj.bpftypes import MAP_FACTS, UNKNOWN_MAP, MapType, map_facts


def test_every_map_type_has_one_row_of_facts_and_a_kernel_version():
    assert set(MAP_FACTS) == set(MapType)
    assert set(MAP_TYPES) == set(MapType) - {MapType.UNSPEC}


def test_a_type_newer_than_the_table_gets_the_defaults():
    assert map_facts(max(MapType) + 1) is UNKNOWN_MAP
    assert map_facts(int(MapType.RINGBUF)) is MAP_FACTS[MapType.RINGBUF]


def test_facts_that_go_together():
    for map_type, facts in MAP_FACTS.items():
        if facts.needs_btf:
            assert facts.takes_btf and facts.local_storage, map_type
        if facts.keyless:
            assert facts.capacity == "bytes", map_type
        assert facts.capacity in ("elements", "bytes", "pages"), map_type
