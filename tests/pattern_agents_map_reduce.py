"""Helper agents for the map-reduce pattern's tests (node processes host them as
``tests.pattern_agents_map_reduce:ShoutAgent`` and ``...:JoinAgent``)."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Event, Task
from mesh.errors import error_class


class ShoutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fail_on: tuple[Any, ...] = ()
    """Inputs it fails on instead of answering."""
    fail: str = "provider_error"
    """The error code it fails with."""
    slow_on: tuple[Any, ...] = ()
    """Inputs it naps on until cancelled."""


class ShoutAgent(Agent[ShoutConfig]):
    """Answers its input in capitals (a number: squared), after ``gate`` opens when given one.

    It emits ``started`` (with its input) when it starts and ``cancelled`` when its caller
    cancels it, and counts how many of its tasks run at once (``peak``).
    """

    name = "shout"
    config_model = ShoutConfig

    def __init__(self, *, gate: anyio.Event | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate
        self.active = 0
        self.peak = 0

    async def execute(self, task: Task, ctx: Context) -> Any:
        value = task.input
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await ctx.emit("started", value)
            if self.gate is not None:
                await self.gate.wait()
            if value in self.config.slow_on:
                await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await ctx.emit("cancelled", value)
            raise
        finally:
            self.active -= 1
        if value in self.config.fail_on:
            raise error_class(self.config.fail)(f"cannot map {value!r}")
        return value * value if isinstance(value, int) else str(value).upper()


class JoinConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fail: bool = False
    """Fail every call (``agent_error``)."""


class JoinAgent(Agent[JoinConfig]):
    """Reduces a list (or ``{"answers": [...]}``) to ``"(a+b+...)"``, so nesting shows."""

    name = "join"
    config_model = JoinConfig

    async def execute(self, task: Task, ctx: Context) -> str:
        value = task.input
        items = value["answers"] if isinstance(value, dict) else value
        if self.config.fail:
            raise error_class("agent_error")(f"cannot join {len(items)} items")
        return "(" + "+".join(map(str, items)) + ")"


class Watch:
    """Keeps the mesh events a test subscribed it to, and waits for some to arrive."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._arrived = anyio.Event()

    async def __call__(self, event: Event) -> None:
        self.events.append(event)
        self._arrived.set()
        self._arrived = anyio.Event()

    def seen(self, kind: str) -> list[Any]:
        """The data of the events of ``kind``, in arrival order."""
        return [event.data for event in self.events if event.kind == kind]

    async def wait(self, kind: str, count: int) -> None:
        """Return once ``count`` events of ``kind`` arrived."""
        while len(self.seen(kind)) < count:
            await self._arrived.wait()

    async def open_after(self, gate: anyio.Event, kind: str, count: int) -> None:
        """Open ``gate`` once ``count`` events of ``kind`` arrived."""
        await self.wait(kind, count)
        gate.set()
