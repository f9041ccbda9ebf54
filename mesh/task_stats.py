"""Task statistics: what hosts publish on ``mesh.telemetry.task``.

A host does not publish a message per task. At thousands of tasks a second, a record per task
would cost the host an encoding and the sidecar a decoding and two histogram observations for
every task, and make the one sidecar the whole mesh's bottleneck. Each runtime hosting agents
keeps running totals instead (`TaskTally`), per agent: tasks by outcome, and histograms of how
long they ran and waited for a slot. It publishes them as they are (`TaskStats`: totals since
it started, never a difference) at most every ``interval`` while tasks are answered, and a last
time when it stops. A lost message loses nothing: the next one carries the totals.

Tasks that failed also go out whole (`TaskRecord`s, at most ``max_failed`` a message), so that
a watcher sees which task failed and how. Consumers turn the totals back into what changed since
the instance's previous message with `TaskStatsDeltas`.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Self

import msgpack
from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, model_validator

from mesh.telemetry import SECONDS, TaskRecord

__all__ = [
    "AgentTaskStats",
    "Buckets",
    "TaskStats",
    "TaskStatsDeltas",
    "TaskTally",
    "UnexpectedStatsError",
]

_log = logging.getLogger("mesh.telemetry")

Seconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class Buckets(BaseModel):
    """A histogram of durations in seconds: how many fell in each bucket, and their sum."""

    model_config = ConfigDict(extra="allow", frozen=True)

    counts: list[NonNegativeInt]
    """``counts[i]``: durations above ``bounds[i - 1]`` and at most ``bounds[i]``; the last
    one, durations above every bound (one more count than bounds)."""
    sum: Seconds


class AgentTaskStats(BaseModel):
    """One agent's tasks in one runtime: totals since the runtime started."""

    model_config = ConfigDict(extra="allow", frozen=True)

    outcomes: dict[str, NonNegativeInt]
    """Tasks answered, by outcome: ``ok``, or the error code of the reply."""
    replayed: NonNegativeInt = 0
    """Of those, answered from a stored reply (idempotency key, durable redelivery), not run."""
    duration: Buckets
    """From decoding the task to its reply being ready."""
    queue: Buckets
    """Waiting for a free slot (``max_concurrency``) before it started."""


class TaskStats(BaseModel):
    """The body of a ``mesh.telemetry.task`` message (msgpack): one runtime's task totals."""

    model_config = ConfigDict(extra="allow", frozen=True)

    instance: str
    """The runtime (process) that counted them: its totals start at zero when it starts."""
    bounds: list[Annotated[float, Field(gt=0, allow_inf_nan=False)]]
    """The buckets' upper bounds in seconds, increasing (`mesh.telemetry.SECONDS`)."""
    agents: dict[str, AgentTaskStats]
    """By agent name."""
    failed: list[TaskRecord] = Field(default_factory=list)
    """The tasks that failed since the previous message, each whole (at most a few)."""
    failed_dropped: NonNegativeInt = 0
    """Failed tasks since the previous message left out of ``failed`` (they are counted)."""
    final: bool = False
    """The runtime stopped: no message of this instance follows."""
    time: float = Field(default_factory=time.time)
    """When the totals were read, Unix time in seconds."""

    @model_validator(mode="after")
    def _buckets_match_bounds(self) -> Self:
        if any(b <= a for a, b in zip(self.bounds, self.bounds[1:], strict=False)):
            raise ValueError("bounds must increase")
        for name, stats in self.agents.items():
            for histogram in (stats.duration, stats.queue):
                if len(histogram.counts) != len(self.bounds) + 1:
                    raise ValueError(
                        f"agent {name!r}: a histogram needs one count more than bounds"
                    )
        return self

    def answered(self, agent: str) -> int:
        """How many tasks ``agent`` answered, whatever the outcome."""
        stats = self.agents.get(agent)
        return 0 if stats is None else sum(stats.outcomes.values())


class _Totals:
    """One agent's running totals, in the shape `AgentTaskStats` is written from."""

    __slots__ = ("durations", "outcomes", "queued", "replayed", "took", "waited")

    def __init__(self) -> None:
        self.outcomes: dict[str, int] = {}
        self.replayed = 0
        self.durations = [0] * (len(SECONDS) + 1)
        self.queued = [0] * (len(SECONDS) + 1)
        self.took = 0.0
        self.waited = 0.0

    def written(self) -> dict[str, Any]:
        return {
            "outcomes": self.outcomes,
            "replayed": self.replayed,
            "duration": {"counts": self.durations, "sum": self.took},
            "queue": {"counts": self.queued, "sum": self.waited},
        }


class TaskTally:
    """Counts the tasks a runtime's hosts answer and publishes the totals (`TaskStats`,
    msgpack): ``interval`` seconds after the first task counted since the last message, and
    once more on `flush`. Nothing is published, and no timer runs, while no task is answered.

    Args:
        publish: Publishes one written message; failures are its own business.
        instance: The runtime's instance id.
        interval: Seconds a count may wait before it is published.
        max_failed: Failed tasks sent whole in one message, at most.
    """

    def __init__(
        self,
        publish: Callable[[bytes], Coroutine[Any, Any, None]],
        instance: str,
        *,
        interval: float = 0.25,
        max_failed: int = 100,
    ) -> None:
        self._publish = publish
        self._instance = instance
        self._interval = interval
        self._max_failed = max_failed
        self._agents: dict[str, _Totals] = {}
        self._failed: list[dict[str, Any]] = []
        self._failed_dropped = 0
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def add(
        self,
        agent: str,
        outcome: str,
        took: float,
        waited: float,
        *,
        replayed: bool = False,
        failure: dict[str, Any] | None = None,
    ) -> None:
        """Count one answered task; on the event loop.

        Args:
            agent: Who answered it.
            outcome: ``ok``, or the error code of its reply.
            took: Seconds from decoding it to its reply being ready.
            waited: Seconds it waited for a slot.
            replayed: Answered from a stored reply.
            failure: For a failed task: its `TaskRecord`'s fields, sent whole while there is
                room for them in the next message.
        """
        totals = self._agents.get(agent)
        if totals is None:
            totals = self._agents[agent] = _Totals()
        outcomes = totals.outcomes
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        totals.durations[bisect.bisect_left(SECONDS, took)] += 1
        totals.took += took
        totals.queued[bisect.bisect_left(SECONDS, waited)] += 1
        totals.waited += waited
        if replayed:
            totals.replayed += 1
        if failure is not None:
            if len(self._failed) < self._max_failed:
                self._failed.append(failure)
            else:
                self._failed_dropped += 1
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._send)

    def _send(self, *, final: bool = False) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        message = msgpack.packb(
            {
                "instance": self._instance,
                "bounds": SECONDS,
                "agents": {name: totals.written() for name, totals in self._agents.items()},
                "failed": self._failed,
                "failed_dropped": self._failed_dropped,
                "final": final,
                "time": time.time(),
            }
        )
        self._failed, self._failed_dropped = [], 0
        sending = asyncio.create_task(self._publish(message))
        self._sending.add(sending)
        sending.add_done_callback(self._sent)

    def _sent(self, sending: asyncio.Task[None]) -> None:
        self._sending.discard(sending)
        if not sending.cancelled() and sending.exception() is not None:
            _log.debug("task totals not published: %s", sending.exception())

    async def flush(self) -> None:
        """Publish the final totals (if any task was counted), and wait until every message
        has been handed over; the runtime is stopping. Counting starts again from zero (a
        runtime started again is a new run of its instance)."""
        if self._agents:
            self._send(final=True)
            self._agents = {}
        while self._sending:
            await asyncio.wait(list(self._sending))


class UnexpectedStatsError(ValueError):
    """Totals that cannot follow their instance's previous ones (a count went down), or that
    use other buckets than `mesh.telemetry.SECONDS`."""


class TaskStatsDeltas:
    """Turns each runtime's totals back into what changed since its previous message.

    Remembers the last totals of each instance until it says it stopped (``final``); past
    ``max_instances`` remembered (runtimes that died without saying so), the one heard from
    least recently is forgotten.

    Args:
        max_instances: Instances remembered, at most.
    """

    def __init__(self, *, max_instances: int = 10_000) -> None:
        self._last: dict[str, TaskStats] = {}
        self._max_instances = max_instances

    def __call__(self, stats: TaskStats) -> dict[str, AgentTaskStats]:
        """What ``stats`` adds, by agent (agents without a new task left out).

        Raises:
            UnexpectedStatsError: Other buckets than `mesh.telemetry.SECONDS`, or a count
                lower than in the instance's previous message (which is then ignored).
        """
        if tuple(stats.bounds) != SECONDS:
            raise UnexpectedStatsError(f"buckets {stats.bounds} are not the mesh's {SECONDS}")
        before = self._last.get(stats.instance)
        added = {
            agent: _difference(now, None if before is None else before.agents.get(agent))
            for agent, now in stats.agents.items()
        }
        self._last.pop(stats.instance, None)
        if not stats.final:
            self._last[stats.instance] = stats  # the most recent last
            if len(self._last) > self._max_instances:
                del self._last[next(iter(self._last))]
        return {agent: delta for agent, delta in added.items() if delta.outcomes}


def _difference(now: AgentTaskStats, before: AgentTaskStats | None) -> AgentTaskStats:
    if before is None:
        return now
    if before.outcomes.keys() - now.outcomes.keys():
        raise UnexpectedStatsError("a task count went down")
    outcomes = {k: _less(n, before.outcomes.get(k, 0)) for k, n in now.outcomes.items()}
    return AgentTaskStats(
        outcomes={k: n for k, n in outcomes.items() if n},
        replayed=_less(now.replayed, before.replayed),
        duration=_buckets(now.duration, before.duration),
        queue=_buckets(now.queue, before.queue),
    )


def _buckets(now: Buckets, before: Buckets) -> Buckets:
    return Buckets(
        counts=[_less(n, b) for n, b in zip(now.counts, before.counts, strict=True)],
        sum=max(now.sum - before.sum, 0.0),
    )


def _less(now: int, before: int) -> int:
    if now < before:
        raise UnexpectedStatsError("a task count went down")
    return now - before
