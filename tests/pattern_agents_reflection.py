"""Helper agents for the reflection and RAG tests (node processes host them as
``tests.pattern_agents_reflection:Class``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task


class ConstantConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    output: Any = None
    """What every task is answered."""


class ConstantAgent(Agent[ConstantConfig]):
    """Answers every task with the configured ``output``, and keeps what it was asked."""

    name = "constant"
    config_model = ConstantConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.asked: list[Any] = []

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.asked.append(task.input)
        return self.config.output
