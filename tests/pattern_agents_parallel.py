"""Helper agents and an event watcher for the parallel pattern's tests (node processes host
the agents as ``tests.pattern_agents_parallel:NapAgent``)."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Event, Task
from mesh.errors import error_class


class NapConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    delay: float = 0.0
    """Seconds it naps before answering (30: until cancelled, in practice)."""
    answer: Any = None
    """What it answers; ``None``: ``"<name>: <input>"``."""
    fail: str | None = None
    """An error code to fail with instead of answering."""
    message: str = "failed on purpose"
    """The message it fails with."""


class NapAgent(Agent[NapConfig]):
    """Naps (after ``gate`` opens, when given one), then answers or fails as configured.

    It emits ``started`` when it starts, ``finished`` when it answers and ``cancelled`` when
    its caller cancels it (each with the task's input), and counts how many of its tasks
    run at once (``peak``).
    """

    name = "nap"
    config_model = NapConfig

    def __init__(self, *, gate: anyio.Event | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate
        self.active = 0
        self.peak = 0

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await ctx.emit("started", task.input)
            if self.gate is not None:
                await self.gate.wait()
            await anyio.sleep(self.config.delay)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await ctx.emit("cancelled", task.input)
            raise
        finally:
            self.active -= 1
        if self.config.fail is not None:
            raise error_class(self.config.fail)(self.config.message)
        await ctx.emit("finished", task.input)
        answer = self.config.answer
        return f"{self.name}: {task.input}" if answer is None else answer


def nap(name: str, *, gate: anyio.Event | None = None, **settings: Any) -> NapAgent:
    """A `NapAgent` called ``name``, with ``settings`` for its `NapConfig`."""
    return NapAgent(name=name, config=NapConfig(**settings), gate=gate)


class Watch:
    """Keeps the mesh events a test subscribed it to, and waits for some to arrive."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._arrived = anyio.Event()

    async def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._arrived.set()
        self._arrived = anyio.Event()

    def seen(self, kind: str, source: str | None = None) -> list[Any]:
        """The data of the events of ``kind`` (from ``source``, if given), in arrival order."""
        return [
            e.data for e in self.events if e.kind == kind and (source is None or e.source == source)
        ]

    async def wait(self, kind: str, count: int, source: str | None = None) -> None:
        """Return once ``count`` events of ``kind`` (from ``source``) arrived."""
        while len(self.seen(kind, source)) < count:
            await self._arrived.wait()

    async def open_after(
        self, gate: anyio.Event, kind: str, count: int, source: str | None = None
    ) -> None:
        """Open ``gate`` once ``count`` events of ``kind`` arrived."""
        await self.wait(kind, count, source)
        gate.set()
