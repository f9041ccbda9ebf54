"""Helper agents of the sequential pattern's tests (nodes host them as
``tests.pattern_agents_sequential:X``)."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import error_class


class AppendConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    text: str = ""
    delay: float = 0.0


class AppendAgent(Agent[AppendConfig]):
    """Answers its input as text with ``text`` after it, after ``delay`` seconds."""

    name = "append"
    config_model = AppendConfig

    async def execute(self, task: Task, ctx: Context) -> str:
        if self.config.delay:
            await anyio.sleep(self.config.delay)
        return f"{task.input}{self.config.text}"


class BreakConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    code: str = "provider_error"
    message: str = "the model is down"


class BreakAgent(Agent[BreakConfig]):
    """Fails with the mesh error of ``code``, carrying what it was given in its details."""

    name = "break"
    config_model = BreakConfig

    async def execute(self, task: Task, ctx: Context) -> Any:
        raise error_class(self.config.code)(self.config.message, details={"got": task.input})
