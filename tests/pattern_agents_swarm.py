"""Members for the swarm tests (node processes host them as ``tests.pattern_agents_swarm:X``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import RateLimitedError
from patterns.swarm import SwarmState, handoff


class MemberConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    to: str | None = None
    """Hand off to this member; ``None`` answers."""
    message: str = ""
    context: dict[str, Any] = Field(default_factory=dict)
    answer: str = "answered"


class Member(Agent[MemberConfig]):
    """Hands off as configured, or answers with what it was given (so a test sees it all)."""

    name = "member"
    config_model = MemberConfig

    async def execute(self, task: Task, ctx: Context) -> Any:
        state = SwarmState.model_validate(task.input)
        if self.config.to is not None:
            return handoff(self.config.to, message=self.config.message, context=self.config.context)
        return {"answer": self.config.answer, "by": self.name, "saw": state.model_dump()}


class Malformed(Agent[Any]):
    """Returns a handoff without a target."""

    name = "malformed"

    async def execute(self, task: Task, ctx: Context) -> Any:
        return {"handoff": {"message": "over to someone"}}


class Overloaded(Agent[Any]):
    """Fails with a retryable mesh error."""

    name = "overloaded"

    async def execute(self, task: Task, ctx: Context) -> Any:
        raise RateLimitedError("quota used up")
