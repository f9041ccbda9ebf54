"""Helper agents for the ensemble pattern's tests (node processes host them as
``tests.pattern_agents_ensemble:FixedAgent``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import error_class


class SureAnswer(BaseModel):
    """A member's structured answer."""

    answer: str
    confidence: float = Field(ge=0, le=1)


class SureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    """The (scripted) model asked for ``{"answer", "confidence"}``."""


class SureAgent(Agent[SureConfig]):
    """Asks its model for an answer and how sure it is; replies ``{"answer", "confidence"}``."""

    name = "sure"
    config_model = SureConfig

    async def execute(self, task: Task, ctx: Context) -> Any:
        response = await ctx.llm(self.config.model, str(task.input), output_type=SureAnswer)
        parsed: SureAnswer = response.parsed
        return parsed.model_dump()


class FixedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    answer: Any = None
    """What it answers."""
    fail: str | None = None
    """An error code to fail with instead."""
    message: str = "failed on purpose"
    """The message it fails with."""


class FixedAgent(Agent[FixedConfig]):
    """Answers ``answer`` (or fails with ``fail``), keeping every input it was given."""

    name = "fixed"
    config_model = FixedConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inputs: list[Any] = []

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.inputs.append(task.input)
        if self.config.fail is not None:
            raise error_class(self.config.fail)(self.config.message)
        return self.config.answer


def fixed(name: str, answer: Any = None, **settings: Any) -> FixedAgent:
    """A `FixedAgent` called ``name``."""
    return FixedAgent(name=name, config=FixedConfig(answer=answer, **settings))
