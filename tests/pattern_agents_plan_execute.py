"""Helper agents for the plan-and-execute pattern's tests (node processes host them as
``tests.pattern_agents_plan_execute:WorkerAgent`` and ``...:MeetAgent``)."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import error_class


class WorkerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    fail_on: str | None = None
    """Fails the steps whose description contains this text."""
    fail: str = "provider_error"
    """The error code it fails with."""


class WorkerAgent(Agent[WorkerConfig]):
    """Answers ``{"did": <step>, "from": <results>}``: what it was given, so a test sees the
    earlier results substituted; fails the steps ``fail_on`` names with ``"<step> broke"``."""

    name = "worker"
    config_model = WorkerConfig

    async def execute(self, task: Task, ctx: Context) -> Any:
        step = task.input["step"]
        if self.config.fail_on is not None and self.config.fail_on in step:
            raise error_class(self.config.fail)(f"{step} broke")
        return {"did": step, "from": task.input["results"]}


class MeetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    expect: int = 2
    """How many of its tasks must be running at once before any answers."""


class MeetAgent(Agent[MeetConfig]):
    """Waits (at most 10 s) until ``expect`` of its tasks run at once, then answers
    ``"<step>: met <n>"``, ``n`` being the most it saw at once: the overlap as the agent
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
            return f"{task.input['step']}: met {self.peak}"
        finally:
            self.active -= 1
