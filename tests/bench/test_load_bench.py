"""The benchmark's pure parts: the runners' order, the targets from samples, strace parsing.

The measuring itself needs root, the kernel and minutes (`make bench`); these check, on
synthetic samples and traces, that what it reports is computed as bench/README.md says.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from bench.load_bench import (
    PYTHON_KEY,
    RUNNERS,
    Sample,
    Samples,
    Set,
    Target,
    Trace,
    count_pins,
    earlier_targets,
    issue_targets,
    paired,
    parse_strace,
    peak_rss,
    runner_order,
)


def _set(name: str, libbpf: bool = True) -> Set:
    return Set(name, Path(name), [], 0, libbpf)


def test_each_runner_goes_first_once_a_round_over_the_three_libbpf_sets() -> None:
    sets = [_set("all"), _set("heavy"), _set("tiny"), _set("etc_bpf", libbpf=False)]
    rounds = 7
    first: Counter[str] = Counter()
    for r in range(rounds):
        orders = [runner_order(s, r + i) for i, s in enumerate(sets)]
        assert sorted(o[0] for o in orders[:3]) == sorted(RUNNERS)
        for position in range(3):  # second and last too
            assert sorted(o[position] for o in orders[:3]) == sorted(RUNNERS)
        assert all(sorted(o) == sorted(RUNNERS) for o in orders[:3])
        assert orders[3] == ["bpfloader"]
        first.update(o[0] for o in orders[:3])
    assert first == {runner: rounds for runner in RUNNERS}
    # and on one set, the runner going first changes from round to round
    assert [runner_order(sets[0], r)[0] for r in range(3)] == list(RUNNERS)


def _walls(*walls: float, rss: float = 10.0, floor: float | None = None) -> list[Sample]:
    return [Sample(w, w, rss, floor=floor) for w in walls]


def _samples() -> Samples:
    """Three rounds, with values whose per-round ratios differ from the ratio of medians."""
    return {
        # per round 1.0, 2.0, 0.75: median 1.0 (medians' ratio: 2.0)
        "heavy/bpfloader": _walls(1.0, 2.0, 3.0, floor=2.0),
        "heavy/libbpf": _walls(1.0, 1.0, 4.0, rss=2.0),
        "all/bpfloader": _walls(3.0, 3.0, 3.0, rss=30.0),
        "all/libbpf": _walls(2.0, 2.0, 2.0, rss=2.5),
        "all/bpftool": _walls(4.0, 2.0, 6.0, rss=2.0),
        # beyond python's start of the same round: 0.02, 0.02, 0.055 -> 0.02 / 0.01 = 2.0
        # (medians, unpaired: (0.060 - 0.010) / 0.01 = 5.0)
        "tiny/bpfloader": _walls(0.030, 0.100, 0.060),
        "tiny/libbpf": _walls(0.010, 0.010, 0.010),
        PYTHON_KEY: _walls(0.010, 0.080, 0.005),
        "etc_bpf/bpfloader": _walls(0.030, 0.160, 0.010),  # per round 3.0, 2.0, 2.0
        "reload/bpfloader": _walls(0.030, 0.240, 0.005),  # per round 3.0, 3.0, 1.0
    }


def _traces(*starts: float) -> dict[str, list[Trace]]:
    return {"all/bpfloader": [Trace(start_to_first_bpf=s) for s in starts]}


def test_issue_targets_are_medians_of_per_round_ratios() -> None:
    found = {t.name: t for t in issue_targets(_samples(), _traces(0.010, 0.030, 0.020))}
    values = {name: t.value for name, t in found.items()}
    assert values == {
        "heavy: wall bpfloader / libbpf": pytest.approx(1.0),
        "all: wall bpfloader / libbpf": pytest.approx(1.5),
        "tiny: (bpfloader - python) / libbpf": pytest.approx(2.0),
        "etc_bpf: bpfloader / python": pytest.approx(2.0),
        "unchanged reload / python": pytest.approx(3.0),
        "start to first bpf(), all, ms": pytest.approx(20.0),
    }
    verdicts = {name: t.verdict for name, t in found.items()}
    assert verdicts == {
        "heavy: wall bpfloader / libbpf": "met",  # 1.0 <= 1.1
        "all: wall bpfloader / libbpf": "NOT met",  # 1.5 > 1.1
        "tiny: (bpfloader - python) / libbpf": "met",  # 2.0 <= 3.0
        "etc_bpf: bpfloader / python": "met",  # 2.0 <= 3.0
        "unchanged reload / python": "NOT met",  # 3.0 > 2.0
        "start to first bpf(), all, ms": "met",  # 20 <= 25
    }


def test_a_target_at_its_limit_is_met_and_one_not_measured_is_unknown() -> None:
    assert Target("x", 1.1, 1.1).verdict == "met"
    assert Target("x", 1.1000001, 1.1).verdict == "NOT met"
    assert Target("x", None, 1.1).verdict == "?"


def test_earlier_targets_and_peak_rss() -> None:
    samples = _samples()
    found = {t.name: t.value for t in earlier_targets(samples)}
    assert found == {
        "all: wall bpfloader / bpftool loop": pytest.approx(0.75),  # 0.75, 1.5, 0.5
        "heavy: wall / floor": pytest.approx(1.0),  # 0.5, 1.0, 1.5
        "unchanged reload / full load": pytest.approx(0.01),  # 0.01, 0.08, 0.00167
        "peak RSS MB, all": pytest.approx(30.0),
    }
    assert peak_rss(samples) == {"bpfloader": 30.0, "libbpf": 2.5, "bpftool": 2.0}
    samples["heavy/bpfloader"] = _walls(1.0, 2.0, 3.0)  # a loader without --stats-json
    without_floor = {t.name: t for t in earlier_targets(samples)}["heavy: wall / floor"]
    assert without_floor.value is None and without_floor.verdict == "?"


def test_paired_needs_a_sample_of_each_side_in_every_round() -> None:
    with pytest.raises(ValueError):
        paired(_walls(1.0, 2.0), _walls(1.0), lambda x: x.wall)


# A threaded loader (the libbpf peer with -j 2) as `strace -f -ttt -T` writes it: the second
# thread's call is cut by the first thread's line and resumed after it.
THREADED = """\
500 100.000000 execve("/b/libbpf_loader", ["/b/libbpf_loader", "-j", "2"], 0x7ffd) = 0 <0.0004>
500 100.002000 bpf(BPF_PROG_LOAD, {prog_type=BPF_PROG_TYPE_SOCKET_FILTER}, 148) = 3 <0.000010>
500 100.003000 bpf(BPF_BTF_LOAD, {btf="\\237\\353", btf_size=45}, 28) = 4 <0.000020>
501 100.004000 bpf(BPF_PROG_LOAD, {prog_type=BPF_PROG_TYPE_XDP}, 148 <unfinished ...>
500 100.005000 bpf(BPF_MAP_CREATE, {map_type=BPF_MAP_TYPE_ARRAY}, 72) = 5 <0.000100>
501 100.009000 <... bpf resumed>) = 6 <0.005000>
500 100.010000 bpf(BPF_OBJ_PIN, {pathname="/p/prog_a_x", bpf_fd=6}, 20) = 0 <0.000050>
501 100.011000 +++ exited with 0 +++
500 100.012000 +++ exited with 0 +++
"""


def test_parse_strace_of_a_threaded_loader() -> None:
    trace = parse_strace(THREADED)
    assert trace.calls == Counter(
        {"BPF_PROG_LOAD": 2, "BPF_BTF_LOAD": 1, "BPF_MAP_CREATE": 1, "BPF_OBJ_PIN": 1}
    )
    assert trace.callers == 2
    assert trace.children == []
    assert trace.start_to_first_bpf == pytest.approx(0.002)
    assert trace.bpf_phase == pytest.approx(0.010050 - 0.002)  # to the end of the pin
    assert trace.after_last_bpf == pytest.approx(0.012 - 0.010050)  # the main thread's exit
    assert trace.floor == pytest.approx(0.000010 + 0.000020 + 0.005 + 0.000100)
    assert trace.in_bpf == pytest.approx(trace.floor + 0.000050)


def test_count_pins_per_runner(tmp_path: Path) -> None:
    """The pin layouts (plain files stand in for pins here: only the names are counted)."""
    peer = tmp_path / "peer"
    peer.mkdir()
    for name in ("prog_tiny_00_p0", "prog_tiny_00_p1", "map_tiny_00_m0"):
        (peer / name).touch()
    assert count_pins(peer, "libbpf") == 2

    loader = tmp_path / "loader"
    (loader / "tiny").mkdir(parents=True)
    (loader / "bpfloader_staging").mkdir()
    for name in ("tiny/prog_tiny_00_p0", "prog_heavy_00_p0", "bpfloader_staging/prog_x_y"):
        (loader / name).touch()
    assert count_pins(loader, "bpfloader") == 2

    tool = tmp_path / "tool"
    for obj, progs in (("p_tiny_00", 3), ("p_tiny_01", 1), ("m_tiny_00", 5)):
        (tool / obj).mkdir(parents=True)
        for i in range(progs):
            (tool / obj / f"p{i}").touch()
    assert count_pins(tool, "bpftool") == 4
