"""Stopping the tasks a host runs: at their deadline, or when their caller cancels them.

A host runs thousands of tasks a second and nearly all finish in time, so a timer per task
(`loop.call_later`, then cancelled) is work nearly always thrown away. `Deadlines` keeps one
timer per host instead, set for the earliest deadline among the tasks running; a task that
finishes only leaves the table.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

__all__ = ["CANCELLED", "DEADLINE", "Deadlines", "Stop"]

DEADLINE = "deadline"
"""`Stop.reason` of a task whose time ran out."""
CANCELLED = "cancelled"
"""`Stop.reason` of a task its caller cancelled."""


class Stop:
    """Cancels one task once, and remembers why (its deadline, or its caller)."""

    __slots__ = ("reason", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.reason: str | None = None

    def fire(self, reason: str) -> None:
        """Cancel the task for ``reason``, unless it was stopped already."""
        if self.reason is None:
            self.reason = reason
            self.task.cancel()


class Deadlines:
    """Fires `Stop` s at their deadlines with a single timer (event-loop time, seconds)."""

    def __init__(self) -> None:
        self._due: dict[Stop, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def add(self, stop: Stop, seconds: float) -> None:
        """Fire ``stop`` in ``seconds`` unless it is discarded first."""
        loop = asyncio.get_running_loop()
        at = loop.time() + seconds
        self._due[stop] = at
        if at < self._timer_at:
            self._arm(loop, at)

    def discard(self, stop: Stop) -> None:
        """Forget ``stop`` (its task finished); the timer stays, and finds nothing due."""
        self._due.pop(stop, None)

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._timer_at = None, math.inf
        now = loop.time()
        for stop, at in list(self._due.items()):
            if at <= now:
                del self._due[stop]
                stop.fire(DEADLINE)
        if self._due:
            self._arm(loop, min(self._due.values()))
