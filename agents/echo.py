"""`echo`: answers with its input, unchanged. The smallest agent there is."""

from __future__ import annotations

from typing import Any

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task

__all__ = ["EchoAgent"]


class EchoAgent(Agent[Any]):
    """Reply with the task's input."""

    name = "echo"
    description = "Replies with its input unchanged."

    async def execute(self, task: Task, ctx: Context) -> Any:
        return task.input
