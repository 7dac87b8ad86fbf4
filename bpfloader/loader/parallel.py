"""Objects loaded side by side, with results and logs in directory order.

Most of a load is the verifier, inside BPF_PROG_LOAD, where ctypes has released the GIL:
objects given to different threads are verified on different CPUs. What a run reports must
not depend on which finishes first, so each object's events are held and emitted, with its
result, in the order the objects were planned. Objects that touch the same pin (a map they
share) are applied one after the other, in that order, as a single-threaded run would.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from bpfloader.journal import Event, Reporter
from bpfloader.loader.results import ObjectResult
from bpfloader.loader.source import PlannedObject

if TYPE_CHECKING:
    from concurrent.futures import Future

DEFAULT_MAX_JOBS = 4  # beyond this, boot gains little and the verifiers' memory adds up

ApplyOne = Callable[[PlannedObject, Reporter], ObjectResult]


class EventBuffer:
    """A reporter that keeps events for later."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


Done = tuple[ObjectResult, EventBuffer]


def default_jobs() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), DEFAULT_MAX_JOBS))


def apply_all(
    plans: Iterable[PlannedObject],
    apply_one: ApplyOne,
    reporter: Reporter,
    jobs: int = 0,
    all_planned: Callable[[list[PlannedObject]], None] | None = None,
) -> list[ObjectResult]:
    """`apply_one` on every plan, `jobs` at a time (0: default_jobs()); events to `reporter`.

    `plans` may be made as they are asked for: with several jobs, each is applied as soon as
    it is planned, while the next one is planned. `all_planned` is called with them all once
    the last is made, before any object's events are emitted."""
    jobs = jobs or default_jobs()
    if jobs == 1:
        plans = list(plans)
        if all_planned is not None:
            all_planned(plans)
        return [apply_one(plan, reporter) for plan in plans]
    from concurrent.futures import ThreadPoolExecutor  # only when there is something to share

    def run(plan: PlannedObject, after: list[Future[Done]]) -> Done:
        for earlier in after:
            earlier.exception()  # wait; its failure is its own, reported with its result
        events = EventBuffer()
        return apply_one(plan, events), events

    last_user: dict[str, Future[Done]] = {}
    futures = []
    planned = []
    # Tasks start in submission order, so an object only ever waits for one already running.
    with ThreadPoolExecutor(jobs, thread_name_prefix="bpfloader-load") as pool:
        for plan in plans:
            paths = pin_paths(plan)
            after = list({id(f): f for p in paths if (f := last_user.get(p))}.values())
            future = pool.submit(run, plan, after)
            for path in paths:
                last_user[path] = future
            futures.append(future)
            planned.append(plan)
        if all_planned is not None:
            all_planned(planned)
        results = []
        for future in futures:
            result, events = future.result()
            for event in events.events:
                reporter.emit(event)
            results.append(result)
    return results


def pin_paths(planned: PlannedObject) -> set[str]:
    plan = planned.plan
    return {m.pin_path for m in plan.maps} | {p.pin_path for p in plan.programs}
