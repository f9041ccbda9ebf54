"""Telemetry records: a `TaskRecord` per task a host handled (to the runtime's task listeners,
and on ``mesh.telemetry.task`` for the failed ones, with the totals of `mesh.task_stats`), and
coordinators publish one `PatternRun` per execution (``mesh.telemetry.pattern``).

Model calls have their own record, `mesh.llm.instrument.LLMCall`, on ``mesh.telemetry.llm``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "SECONDS",
    "PatternRun",
    "TaskRecord",
    "describe_pattern_run",
]

SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
"""Histogram buckets for durations, in seconds (model calls, tasks, pattern runs)."""


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
