"""Helper agents for the hierarchical pattern's tests (node processes host them as
``tests.pattern_agents_hierarchical:TeamAgent`` and ``...:FixedAgent``)."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import error_class


class TeamConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fail_on: str | None = None
    """Fails the tasks that contain this text."""
    fail: str = "provider_error"
    """The error code it fails with."""


class TeamAgent(Agent[TeamConfig]):
    """Does its task: answers ``"<its name> did <task>"``, and records the task's hierarchy
    context; fails the tasks ``fail_on`` names with ``"<task> broke"``."""

    name = "team"
    config_model = TeamConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.contexts: list[dict[str, Any]] = []
        """The context of each task received, in order."""

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.contexts.append(task.context)
        if self.config.fail_on is not None and self.config.fail_on in str(task.input):
            raise error_class(self.config.fail)(f"{task.input} broke")
        return f"{self.name} did {task.input}"


class MeetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    expect: int = 2
    """How many of its tasks must be running at once before any answers."""


class MeetAgent(Agent[MeetConfig]):
    """Waits (at most 10 s) until ``expect`` of its tasks run at once, then answers
    ``"<task>: met <n>"``, ``n`` being the most it saw at once: the overlap as the agent
    observed it, not as a clock suggests."""

    name = "meet"
    config_model = MeetConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.active = 0
        self.peak = 0
        self._all_here = anyio.Event()

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.active >= self.config.expect:
                self._all_here.set()
            with anyio.move_on_after(10):
                await self._all_here.wait()
            return f"{task.input}: met {self.peak}"
        finally:
            self.active -= 1


class FixedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    output: Any = None
    """What it answers, whatever the task."""


class FixedAgent(Agent[FixedConfig]):
    """Answers its configured ``output`` (a manager's assignments, say) and keeps each input."""

    name = "fixed"
    config_model = FixedConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inputs: list[Any] = []
        """Each task's input, in order."""

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.inputs.append(task.input)
        return self.config.output


class GatedFailAgent(Agent[Any]):
    """Fails with ``provider_error`` once ``gate`` is set (at most 10 s on): a failure that
    comes while another team is surely at work."""

    name = "gated"

    def __init__(self, gate: anyio.Event, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.gate = gate

    async def execute(self, task: Task, ctx: Context) -> Any:
        with anyio.fail_after(10):
            await self.gate.wait()
        raise error_class("provider_error")(f"{task.input} broke")
