"""Objects loaded side by side, with results and logs in directory order.

Most of a load of verifier-heavy objects is the verifier, inside BPF_PROG_LOAD, where ctypes
has released the GIL: objects given to different threads are verified on different CPUs. Most
of a load of small objects is Python, which one thread runs at a time: there, threads only
fight over the GIL (24 small objects took a third longer in two threads than in one). So
objects are applied one by one, in this thread, until one shows that the kernel's work
dominates (VERIFIER_BOUND); the workers start then, for the objects after it.

What a run reports must not depend on which finishes first, so each object's events are held
and emitted, with its result, in the order the objects were planned. Objects that touch the
same pin (a map they share) are applied one after the other, in that order, as a
single-threaded run would.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator

from bpfloader.journal import Event, Reporter
from bpfloader.loader.results import ObjectResult
from bpfloader.loader.source import PlannedObject

DEFAULT_MAX_JOBS = 4  # beyond this, boot gains little and the verifiers' memory adds up

ApplyOne = Callable[[PlannedObject, Reporter], ObjectResult]


class EventBuffer:
    """A reporter that keeps events for later."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def default_jobs() -> int:
    return max(1, min(len(os.sched_getaffinity(0)), DEFAULT_MAX_JOBS))


# An object whose maps, BTF and programs kept the kernel this long (thread CPU time inside the
# calls that make them: the verifier's, mostly) is verifier-bound: objects load in threads from
# the next one on. A small object's kernel work is about a millisecond, Python's a few.
VERIFIER_BOUND = 0.010


def apply_all(
    plans: Iterable[PlannedObject],
    apply_one: ApplyOne,
    reporter: Reporter,
    jobs: int = 0,
    all_planned: Callable[[list[PlannedObject]], None] | None = None,
) -> list[ObjectResult]:
    """`apply_one` on every plan, `jobs` at a time (0: default_jobs()) once an object is seen
    to be verifier-bound, one by one until then; events to `reporter`.

    `plans` may be made as they are asked for: in threads, each object is applied as soon as
    it is planned, while the next one is planned. `all_planned` is called with them all once
    the last is made, before any object's events are emitted."""
    jobs = jobs or default_jobs()
    if jobs == 1:
        plans = list(plans)
        if all_planned is not None:
            all_planned(plans)
        return [apply_one(plan, reporter) for plan in plans]
    remaining = iter(plans)
    tasks = _one_by_one(remaining, apply_one)
    queue = _Queue()
    workers = []
    try:
        if tasks[-1:] and tasks[-1].verifier_bound:
            workers = [
                threading.Thread(target=_work, args=(queue, apply_one), name=f"bpfloader-load-{n}")
                for n in range(jobs)
            ]
            for worker in workers:
                worker.start()
            tasks += _submitted(remaining, queue)
        if all_planned is not None:
            all_planned([task.plan for task in tasks])
        results = []
        for task in tasks:
            result = task.outcome()
            for event in task.events.events:
                reporter.emit(event)
            results.append(result)
        return results
    finally:
        # Whatever happened (planning failed, an object raised), every object queued is
        # applied to its end before this returns: none is left half done by the run's exit.
        queue.close()
        for worker in workers:
            worker.join()


def _one_by_one(plans: Iterator[PlannedObject], apply_one: ApplyOne) -> list[_Task]:
    """Objects applied in this thread, as they are planned, up to the first verifier-bound
    one (included) or the last; their events held, as the workers' are. One that raised ends
    the run (its error raised in turn, as in a thread)."""
    tasks = []
    for plan in plans:
        task = _Task(plan, [])
        task.run(apply_one)
        tasks.append(task)
        if task.verifier_bound or task.error is not None:
            break
    return tasks


def _submitted(plans: Iterable[PlannedObject], queue: _Queue) -> list[_Task]:
    """Each plan as a task on the queue as soon as it is made, after the earlier tasks that
    touch one of its pins."""
    tasks: list[_Task] = []
    last_user: dict[str, _Task] = {}
    for plan in plans:
        paths = pin_paths(plan)
        after = list({id(t): t for p in paths if (t := last_user.get(p))}.values())
        task = _Task(plan, after)
        for path in paths:
            last_user[path] = task
        tasks.append(task)
        queue.put(task)
    queue.close()  # the workers end once every task is taken
    return tasks


class _Task:
    """One object to apply, after the earlier ones it shares a pin with; its result or error,
    and the events it made, for the thread that reports them in order."""

    def __init__(self, plan: PlannedObject, after: list[_Task]):
        self.plan = plan
        self.after = after
        self.events = EventBuffer()
        self.done = threading.Event()
        self.result: ObjectResult | None = None
        self.error: BaseException | None = None

    def run(self, apply_one: ApplyOne) -> None:
        try:
            for earlier in self.after:
                earlier.done.wait()  # its failure is its own, reported with its result
            self.result = apply_one(self.plan, self.events)
        except BaseException as e:  # raised in the reporting thread, as it would be alone
            self.error = e
        finally:
            self.done.set()

    @property
    def verifier_bound(self) -> bool:
        return self.result is not None and self.result.timings.kernel >= VERIFIER_BOUND

    def outcome(self) -> ObjectResult:
        self.done.wait()
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


class _Queue:
    """Tasks in submission order, taken by the workers; a task only ever waits for one taken
    before it, so no worker waits for a task nobody runs."""

    def __init__(self) -> None:
        self._tasks: deque[_Task] = deque()
        self._ready = threading.Condition()
        self._closed = False

    def put(self, task: _Task) -> None:
        with self._ready:
            self._tasks.append(task)
            self._ready.notify()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify_all()

    def take(self) -> _Task | None:
        """The next task; None once the queue is closed and empty."""
        with self._ready:
            while not self._tasks and not self._closed:
                self._ready.wait()
            return self._tasks.popleft() if self._tasks else None


def _work(queue: _Queue, apply_one: ApplyOne) -> None:
    while (task := queue.take()) is not None:
        task.run(apply_one)


def pin_paths(planned: PlannedObject) -> set[str]:
    plan = planned.plan
    return {m.pin_path for m in plan.maps} | {p.pin_path for p in plan.programs}
