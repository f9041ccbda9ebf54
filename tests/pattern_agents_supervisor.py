"""Workers for the supervisor tests (node processes host them as
``tests.pattern_agents_supervisor:X``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from patterns.supervisor import finish


class NoteTakerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    finish_after: int | None = None
    """Declare the task done once the conversation it is given has this many turns."""
    says: str | None = None
    """Say this instead of the note (to steer the ``match`` strategy)."""


class NoteTaker(Agent[NoteTakerConfig]):
    """Answers ``"<name> on <task> after [<agents of the conversation>]"``, with `` (<the
    instruction>)`` when it got one: what it was given shows in the supervisor's output."""

    name = "notes"
    config_model = NoteTakerConfig

    async def execute(self, task: Task, ctx: Context) -> Any:
        given = task.input
        seen = [turn["agent"] for turn in given["conversation"]]
        note = f"{self.name} on {given['input']} after {seen}"
        if "instruction" in given:
            note += f" ({given['instruction']})"
        if self.config.says is not None:
            note = self.config.says
        if self.config.finish_after is not None and len(seen) >= self.config.finish_after:
            return finish(note)
        return note


class Jammed(Agent[Any]):
    """Fails with a plain exception (an ``agent_error``)."""

    name = "jammed"

    async def execute(self, task: Task, ctx: Context) -> Any:
        raise RuntimeError("paper jam")
