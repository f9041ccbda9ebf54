"""Stopping the tasks a host runs: at their deadline (through the host's one
`mesh._deadlines.Deadlines` timer), or when their caller cancels them."""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["CANCELLED", "DEADLINE", "Stop", "stop_at_deadline"]

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


def stop_at_deadline(stop: Stop) -> None:
    """What a host's `mesh._deadlines.Deadlines` does with a task whose time is up."""
    stop.fire(DEADLINE)
