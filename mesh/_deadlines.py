"""`Deadlines`: one timer for many deadlines.

A busy process waits on thousands of deadlines a second (a host's tasks, a bus's requests)
and nearly all are met, so a timer per deadline (`loop.call_later`, then cancelled) is work
nearly always thrown away, and it crowds the event loop's timer heap. `Deadlines` keeps a
single timer, set for the earliest deadline of the items it holds; an item whose deadline was
met only leaves the table.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Deadlines"]

ItemT = TypeVar("ItemT", bound=Hashable)


class Deadlines(Generic[ItemT]):
    """Calls ``due(item)`` once each item's time is up, unless it was discarded first.

    Args:
        due: Called on the event loop with each item whose deadline passed; it must not raise.
    """

    def __init__(self, due: Callable[[ItemT], None]) -> None:
        self._on_due = due
        self._due: dict[ItemT, float] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf

    def __len__(self) -> int:
        return len(self._due)

    def add(self, item: ItemT, seconds: float) -> None:
        """Make ``item`` due in ``seconds`` (event-loop time); must run on the event loop."""
        loop = asyncio.get_running_loop()
        at = loop.time() + seconds
        self._due[item] = at
        if at < self._timer_at:
            self._arm(loop, at)

    def discard(self, item: ItemT) -> None:
        """Forget ``item`` (its deadline was met); the timer stays, and finds nothing due."""
        self._due.pop(item, None)

    def _arm(self, loop: asyncio.AbstractEventLoop, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = loop.call_at(at, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer, self._timer_at = None, math.inf
        now = loop.time()
        for item, at in list(self._due.items()):
            if at <= now:
                del self._due[item]
                self._on_due(item)
        if self._due:
            self._arm(loop, min(self._due.values()))
