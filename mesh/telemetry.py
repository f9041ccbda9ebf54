"""Telemetry records: hosts publish a `TaskRecord` per task handled, in batches (`TaskRecords`
on ``mesh.telemetry.task``, written by a `TaskRecordBatcher`), and coordinators one
`PatternRun` per execution (``mesh.telemetry.pattern``).

Model calls have their own record, `mesh.llm.instrument.LLMCall`, on ``mesh.telemetry.llm``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import msgpack
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "PatternRun",
    "TaskRecord",
    "TaskRecordBatcher",
    "TaskRecords",
    "describe_pattern_run",
]

_log = logging.getLogger("mesh.telemetry")


class TaskRecord(BaseModel):
    """One task a host handled: who, how it ended, how long it waited and ran."""

    model_config = ConfigDict(extra="allow", frozen=True)

    agent: str
    """The agent that handled it."""
    instance: str
    """The runtime (process) that hosts it."""
    task_id: str
    """The task's id (empty for a message that was not a task)."""
    correlation_id: str | None = None
    outcome: str = "ok"
    """``ok``, or the error code of the reply."""
    duration_ms: float
    """From decoding the task to its reply being ready."""
    queue_ms: float = 0.0
    """Waiting for a free slot (``max_concurrency``) before it started."""
    replayed: bool = False
    """Answered from a stored reply (idempotency key, durable redelivery), not run."""
    delivery: int | None = None
    """Which JetStream delivery of a durable task this was (1 for the first)."""
    time: float = Field(default_factory=time.time)
    """When it ended, Unix time in seconds."""


class TaskRecords(BaseModel):
    """The body of a ``mesh.telemetry.task`` message: the records of one host process since
    its previous message (a message per task would cost a node a second publish per task)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    records: list[TaskRecord]


class TaskRecordBatcher:
    """Collects task records and publishes them as `TaskRecords` (msgpack): ``interval``
    seconds after the first record of a batch, or at once when ``max_records`` are waiting.
    Nothing is published, and no timer runs, while no task is handled.

    The records are a `TaskRecord`'s fields as plain values, written as they are: a task's
    path builds no model for them.

    Args:
        publish: Publishes one written batch; failures are its own business (fire-and-forget).
        interval: Seconds a record may wait for its batch.
        max_records: Records in one message, at most.
    """

    def __init__(
        self,
        publish: Callable[[bytes], Coroutine[Any, Any, None]],
        *,
        interval: float = 0.25,
        max_records: int = 256,
    ) -> None:
        self._publish = publish
        self._interval = interval
        self._max_records = max_records
        self._waiting: list[dict[str, Any]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def add(self, fields: dict[str, Any]) -> None:
        """Queue a record (a `TaskRecord`'s fields) for the next batch; on the event loop."""
        self._waiting.append(fields)
        if len(self._waiting) >= self._max_records:
            self._send()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._interval, self._send)

    def _send(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._waiting:
            return
        batch = msgpack.packb({"records": self._waiting})
        self._waiting = []
        sending = asyncio.create_task(self._publish(batch))
        self._sending.add(sending)
        sending.add_done_callback(self._sent)

    def _sent(self, sending: asyncio.Task[None]) -> None:
        self._sending.discard(sending)
        if not sending.cancelled() and sending.exception() is not None:
            _log.debug("task records dropped: %s", sending.exception())

    async def flush(self) -> None:
        """Publish what is waiting now, and wait until every batch has been handed over."""
        self._send()
        while self._sending:
            await asyncio.wait(list(self._sending))


class PatternRun(BaseModel):
    """One execution of a pattern: what it cost, how long it took, and its own figures."""

    model_config = ConfigDict(extra="allow", frozen=True)

    pattern: str
    """The pattern's kind: ``parallel``, ``router``, ``reflection``, ..."""
    agent: str
    """The name the pattern runs under."""
    task_id: str | None = None
    correlation_id: str | None = None
    duration_ms: float = 0.0
    """From the task's start to the pattern's result."""
    calls: int = 0
    """Agent calls the pattern made."""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = 0.0
    """Tokens and cost of everything below the pattern (its calls' usage, summed)."""
    outcome: str = "ok"
    """``ok``, or the error code the pattern ended with."""
    figures: dict[str, Any] = Field(default_factory=dict)
    """The pattern's own figures (branch latencies, route chosen, score trajectory, ...)."""
    time: float = Field(default_factory=time.time)
    """When it ended, Unix time in seconds."""


def describe_pattern_run(run: Mapping[str, Any], *, indent: str = "", figures: bool = True) -> str:
    """A pattern's metrics as a person reads them: one summary line, then a line per figure.

    Args:
        run: A `PatternRun` as a reply carries it (``reply.meta["pattern"]``).
        indent: Put before every line.
        figures: Add a line per figure (leave them out to show them your own way).
    """
    cost = "unknown" if run["cost_usd"] is None else f"${run['cost_usd']:.6f}"
    lines = [
        f"{indent}pattern metrics: {run['duration_ms']:.1f} ms, {run['calls']} agent calls, "
        f"{run['input_tokens']} tokens in, {run['output_tokens']} out, cost {cost}"
    ]
    if figures:
        lines += [f"{indent}  {name}: {value}" for name, value in run["figures"].items()]
    return "\n".join(lines)
