"""Agents for the fault tests, importable by node processes (``tests.fault_agents:Class``)."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task


class ForwardConfig(BaseModel):
    """Settings of a `ForwardAgent`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: str
    """The agent every task is passed to."""


class ForwardAgent(Agent[ForwardConfig]):
    """Passes its task's input to the next agent, with the time it has left, and answers its
    output: one level of a nested call."""

    name = "forward"
    config_model = ForwardConfig

    async def execute(self, task: Task, ctx: Context) -> Any:
        return await ctx.call(self.config.to, task.input)


class WaitAgent(Agent[Any]):
    """Announces ``started``, waits up to 30 s, and announces ``cancelled`` when it is
    cancelled instead (events on ``mesh.events.<name>.*``, with the task id)."""

    name = "wait"

    async def execute(self, task: Task, ctx: Context) -> Any:
        await ctx.emit("started", task.id)
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            with anyio.CancelScope(shield=True):
                await ctx.emit("cancelled", task.id)
            raise
        return "waited"
