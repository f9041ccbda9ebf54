"""Agents the benchmark hosts besides ``echo`` (``kind: _agents:FixedLatencyAgent`` in its YAML;
``bench/`` is on the path of the benchmark and of the processes it starts)."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task

__all__ = ["FixedLatencyAgent", "LatencyConfig"]


class LatencyConfig(BaseModel):
    """Settings of a `FixedLatencyAgent`."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    latency: float = Field(default=0.1, ge=0)
    """Seconds each task takes."""


class FixedLatencyAgent(Agent[LatencyConfig]):
    """Answers with its input after a fixed latency: a model call without the model, so a
    fan-out's figures show the coordinator's cost and nothing else."""

    name = "fixed_latency"
    description = "Waits a fixed time, then replies with its input."
    config_model = LatencyConfig

    async def execute(self, task: Task, ctx: Context) -> Any:
        await anyio.sleep(self.config.latency)
        return task.input
