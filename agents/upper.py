"""`upper`: a text transform, upper-casing its input (optionally with a prefix)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import BadSchemaError

__all__ = ["UpperAgent", "UpperConfig"]


class UpperConfig(BaseModel):
    """Settings of an `upper` agent."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    prefix: str = ""
    """Text put before the upper-cased input."""


class UpperAgent(Agent[UpperConfig]):
    """Upper-case a text input."""

    name = "upper"
    description = "Replies with its text input in upper case."
    config_model = UpperConfig

    async def execute(self, task: Task, ctx: Context) -> str:
        if not isinstance(task.input, str):
            raise BadSchemaError(f"upper takes text, not {type(task.input).__name__}")
        return self.config.prefix + task.input.upper()
