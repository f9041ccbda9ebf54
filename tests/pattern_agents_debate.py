"""Helper agents for the debate pattern's tests (node processes host them as
``tests.pattern_agents_debate:Class``)."""

from __future__ import annotations

from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import error_class


class DebaterConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    arguments: list[Any] = []
    """What it answers in each round (from round 1; the last one again after the list)."""
    fail_round: int | None = None
    """A round it fails in instead of answering."""
    fail: str = "provider_error"
    """The error code it fails with."""


class Meeting:
    """Lets ``count`` callers through once they have all arrived (proves they overlap)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.arrived = 0
        self._all = anyio.Event()

    async def arrive(self) -> None:
        self.arrived += 1
        if self.arrived % self.count == 0:
            self._all.set()
            self._all = anyio.Event()
        else:
            await self._all.wait()


class DebaterAgent(Agent[DebaterConfig]):
    """Answers each round's argument as configured, and keeps what it was sent (``heard``);
    with a `Meeting`, it answers only once every debater of the round has been called."""

    name = "debater"
    config_model = DebaterConfig

    def __init__(self, *, meeting: Meeting | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.meeting = meeting
        self.heard: list[Any] = []

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.heard.append(task.input)
        if self.meeting is not None:
            await self.meeting.arrive()
        round = task.input["round"]
        if round == self.config.fail_round:
            raise error_class(self.config.fail)(f"lost for words in round {round}")
        arguments = self.config.arguments
        return arguments[min(round, len(arguments)) - 1]


class JudgeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    output: Any = None
    """What it answers."""
    fail: str | None = None
    """An error code to fail with instead."""


class JudgeAgent(Agent[JudgeConfig]):
    """Answers the configured ``output``, and keeps what it was sent (``heard``)."""

    name = "judge"
    config_model = JudgeConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.heard: list[Any] = []

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.heard.append(task.input)
        if self.config.fail is not None:
            raise error_class(self.config.fail)("the bench is empty")
        return self.config.output


def debater(name: str, *arguments: Any, **settings: Any) -> DebaterAgent:
    """A `DebaterAgent` called ``name`` answering ``arguments`` round by round."""
    meeting = settings.pop("meeting", None)
    config = DebaterConfig(arguments=list(arguments), **settings)
    return DebaterAgent(name=name, config=config, meeting=meeting)


def judge(output: Any, *, fail: str | None = None) -> JudgeAgent:
    """A `JudgeAgent` called ``judge`` answering ``output`` (or failing with ``fail``)."""
    return JudgeAgent(name="judge", config=JudgeConfig(output=output, fail=fail))
