"""Helper agents shared by the tests (also hosted by node subprocesses as ``tests.support:X``)."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import anyio
import msgpack
from pydantic import BaseModel, ConfigDict

from mesh.agent import Agent
from mesh.bus import Message
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import MeshError, NoRouteError
from mesh.llm.instrument import InstrumentedModel, LLMCall
from mesh.llm.model import Model
from mesh.llm.pricing import PriceBook
from mesh.llm.types import ModelRequest


class SlowConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    delay: float = 0.2


class SlowAgent(Agent[SlowConfig]):
    """Waits ``delay`` seconds, and reports how many of its tasks ran at once."""

    name = "slow"
    config_model = SlowConfig

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.active = 0
        self.peak = 0
        self.entered = anyio.Event()

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        self.entered.set()
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await anyio.sleep(self.config.delay)
        finally:
            self.active -= 1
        return {"input": task.input, "peak": self.peak}


class SleepAgent(Agent[Any]):
    """Sleeps for as many seconds as its input says."""

    name = "sleep"

    async def execute(self, task: Task, ctx: Context) -> Any:
        await anyio.sleep(float(task.input))
        return task.input


class FailAgent(Agent[Any]):
    """Raises a plain exception, or a mesh error when the input is ``"mesh"``."""

    name = "fail"

    async def execute(self, task: Task, ctx: Context) -> Any:
        if task.input == "mesh":
            raise NoRouteError("nowhere to go")
        raise RuntimeError(f"boom on {task.input!r}")


class RelayAgent(Agent[Any]):
    """Calls the agent named in ``input["to"]`` with ``input["input"]``; returns what it got."""

    name = "relay"

    async def execute(self, task: Task, ctx: Context) -> Any:
        return await ctx.call(task.input["to"], task.input["input"])


class FanOutAgent(Agent[Any]):
    """Calls each agent in ``input["to"]`` at once and returns their outputs."""

    name = "fanout"

    async def execute(self, task: Task, ctx: Context) -> Any:
        replies = await ctx.call_many(task.input["to"], task.input["input"])
        return [reply.output for reply in replies]


class UnserialisableAgent(Agent[Any]):
    """Returns something no codec can write: an integer too large for msgpack when its input
    is ``"huge"``, else an object."""

    name = "unserialisable"

    async def execute(self, task: Task, ctx: Context) -> Any:
        return 2**64 if task.input == "huge" else object()


class TrickyAgent(Agent[Any]):
    """Echoes, unless told otherwise: ``"raise"`` raises, ``{"sleep": s}`` sleeps first,
    ``{"emit": kind}`` emits an event and then waits ``{"hold": s}`` seconds."""

    name = "tricky"

    async def execute(self, task: Task, ctx: Context) -> Any:
        value = task.input
        if value == "raise":
            raise ValueError("asked to raise")
        if isinstance(value, dict) and "sleep" in value:
            await anyio.sleep(float(value["sleep"]))
        if isinstance(value, dict) and "emit" in value:
            await ctx.emit(str(value["emit"]), task.id)
            await anyio.sleep(float(value.get("hold", 0)))
        return value


class WriterAgent(Agent[Any]):
    """Two model calls on ``scripted:pen`` (declared in the test's config), no tracking code."""

    name = "writer"

    async def execute(self, task: Task, ctx: Context) -> Any:
        draft = await ctx.llm("scripted:pen", f"draft about {task.input}")
        review = await ctx.llm("scripted:pen", f"review {draft.text}")
        return review.text


class ChiefAgent(Agent[Any]):
    """Asks ``writer`` and ``editor`` (other nodes) at once, then makes one call of its own."""

    name = "chief"

    async def execute(self, task: Task, ctx: Context) -> Any:
        replies = await ctx.call_many(["writer", "editor"], task.input)
        final = await ctx.llm("scripted:pen", "sum up")
        return [reply.unwrap() for reply in replies] + [final.text]


class PatientAgent(Agent[Any]):
    """Waits (up to 30 s) until cancelled; says when it started and when it was cancelled."""

    name = "patient"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.started = anyio.Event()
        self.cancelled = anyio.Event()

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.started.set()
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            self.cancelled.set()
            raise
        return "waited"


class CallLog:
    """Collects the `LLMCall` records published on ``mesh.telemetry.llm``.

    Use as a bus handler; ``await log.wait(n)`` returns once ``n`` records have arrived.
    """

    def __init__(self) -> None:
        self.calls: list[LLMCall] = []
        self._arrived = anyio.Event()

    async def __call__(self, message: Message) -> None:
        self.calls.append(LLMCall.model_validate(msgpack.unpackb(message.data)))
        self._arrived.set()

    async def wait(self, count: int) -> list[LLMCall]:
        while len(self.calls) < count:
            self._arrived = anyio.Event()
            await self._arrived.wait()
        return self.calls


async def measured_calls(
    model: Model, request: ModelRequest, *, stream: bool = False
) -> list[LLMCall]:
    """Make one call through the mesh's own instrumentation (at genai-prices' prices) and
    return what it recorded; a failed call is recorded too (its error is swallowed here)."""
    calls: list[LLMCall] = []

    async def record(call: LLMCall) -> None:
        calls.append(call)

    measured = InstrumentedModel(model, PriceBook(), record)
    with contextlib.suppress(MeshError):
        if stream:
            async for _ in measured.stream(request):
                pass
        else:
            await measured.complete(request)
    return calls


class RecurseAgent(Agent[Any]):
    """Calls itself with its input plus one, for ever: a cycle for the depth guard to stop."""

    name = "recurse"

    async def execute(self, task: Task, ctx: Context) -> Any:
        return await ctx.call(self.name, int(task.input) + 1)


class PeerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    peer: str
    """The agent it always calls (a plain name: the config's cycle check does not see it)."""


class PeerAgent(Agent[PeerConfig]):
    """Calls its ``peer`` with its input plus one, for ever: with a peer that calls it back,
    a cycle across processes for the depth guard to stop."""

    name = "peer"
    config_model = PeerConfig

    async def execute(self, task: Task, ctx: Context) -> Any:
        return await ctx.call(self.config.peer, int(task.input) + 1)


def free_port() -> int:
    """A TCP port free on the loopback interface now (for a process to bind next)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
