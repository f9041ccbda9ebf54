"""Helper agents of the router pattern's tests (nodes host them as
``tests.pattern_agents_router:X``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task


class FixedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    answer: Any = None


class FixedAgent(Agent[FixedConfig]):
    """Answers ``answer``, whatever it is asked (a classifier that always says the same)."""

    name = "fixed"
    config_model = FixedConfig

    async def execute(self, task: Task, ctx: Context) -> Any:
        return self.config.answer


class TagAgent(Agent[Any]):
    """Answers ``"<its name>: <input>"``, so a test sees which route a task took."""

    name = "tag"

    async def execute(self, task: Task, ctx: Context) -> str:
        return f"{self.name}: {task.input}"
