"""Agents for the retry, idempotency and durable tests (node processes import them as
``tests.durable_agents:Class``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import RateLimitedError


class CountingAgent(Agent[Any]):
    """Counts the tasks it ran; answers with the input, its run number and the task's key."""

    name = "counting"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs = 0

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.runs += 1
        return {"input": task.input, "run": self.runs, "key": task.idempotency_key}


class FlakyConfig(BaseModel):
    """Settings of a `FlakyAgent`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    failures: int = 1_000_000
    """Runs that fail (rate limited) before the agent starts answering."""


class FlakyAgent(Agent[FlakyConfig]):
    """Fails with a retryable ``rate_limited`` for its first ``failures`` runs, then answers."""

    name = "flaky"
    config_model = FlakyConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs = 0

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.runs += 1
        if self.runs <= self.config.failures:
            raise RateLimitedError(f"run {self.runs}: slow down")
        return f"ok after {self.runs} runs"


class HangFirstAgent(Agent[Any]):
    """Never answers its first task (until cancelled); answers the next ones at once."""

    name = "hang_first"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs = 0

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.runs += 1
        if self.runs == 1:
            await anyio.sleep_forever()
        return f"answered run {self.runs}"


class LedgerConfig(BaseModel):
    """Settings of a `LedgerAgent`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    directory: str
    """Where runs are logged and side effects are applied."""
    delay: float = 0.0
    """Seconds each run takes."""


class LedgerAgent(Agent[LedgerConfig]):
    """Does a side effect that a test can count, made idempotent by the task's key.

    Every run appends ``<key> <instance>`` to ``runs.log`` (one line per run, appended in one
    write, so concurrent nodes never interleave). The side effect is creating
    ``effects/<key>`` exclusively: the second run of one key finds it there and does not apply
    it again, which is how an agent uses ``ctx.task.idempotency_key`` for effects beyond the
    mesh's own guarantee (a node killed between the effect and the stored result).
    """

    name = "ledger"
    config_model = LedgerConfig

    async def execute(self, task: Task, ctx: Context) -> Any:
        key = task.idempotency_key or task.id
        directory = Path(self.config.directory)
        line = f"{key} {os.getpid()}\n".encode()
        descriptor = os.open(directory / "runs.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(descriptor, line)
        finally:
            os.close(descriptor)
        if self.config.delay:
            await anyio.sleep(self.config.delay)
        try:
            os.close(os.open(directory / "effects" / key, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            applied = True
        except FileExistsError:
            applied = False
        return {"key": key, "pid": os.getpid(), "applied": applied}


class LongAgent(Agent[Any]):
    """Works for as many seconds as its input says, and counts its runs."""

    name = "long"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runs = 0

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.runs += 1
        await anyio.sleep(float(task.input))
        return f"worked {task.input}s"
