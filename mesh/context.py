"""`Context`: everything an agent may do, and the seam where the mesh keeps its promises.

Each call made through a context is stamped with what is left of the caller's deadline and
budget (never more), the call path and the correlation id of the tree; the callee's usage is
added to the caller's, so the reply to a top-level task carries the cost of everything below
it. Each model call passes the task's `CallGuard` first (budget, prompt size, spend limit).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio

from mesh.envelope import ZERO_USAGE, Budget, Event, Reply, StreamRequest, Task, Usage
from mesh.llm.embeddings import Embedder, MeasuredEmbedder
from mesh.llm.generate import generate
from mesh.llm.guard import CallGuard
from mesh.llm.instrument import InstrumentedModel
from mesh.spend import SpendMeter
from mesh.streaming import (
    CALL,
    TEXT,
    Chunk,
    StreamingModel,
    StreamWriter,
    call_ended,
    child_label,
)
from mesh.subjects import TELEMETRY_LLM

if TYPE_CHECKING:
    from pydantic import BaseModel

    from mesh.bus import Subscription
    from mesh.delivery import RetryPolicy
    from mesh.llm.instrument import LLMCall
    from mesh.llm.model import Model
    from mesh.llm.types import ChatMessage, ModelResponse, ToolSpec
    from mesh.runtime import Runtime
    from mesh.tracing import Tracing

__all__ = ["Context", "EventHandler"]

EventHandler = Callable[[Event], Awaitable[None]]
"""Called with each event a subscription receives."""


class Context:
    """What an agent may do while it handles a task (or runs, for `Agent.start`).

    Created by the runtime; an agent never builds one. ``task`` is ``None`` for the context
    given to `Agent.start`.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        agent: str,
        task: Task | None = None,
        deadline: float | None = None,
        stream: StreamWriter | None = None,
    ) -> None:
        self._runtime = runtime
        self.agent = agent
        """Name of the agent this context belongs to."""
        self.task = task
        """The task being handled, or ``None`` in `Agent.start`."""
        self.deadline = deadline
        """Absolute deadline (Unix seconds) of the work, or ``None``."""
        self.usage = ZERO_USAGE
        """Usage of every call made through this context so far."""
        self.calls_made = 0
        """Agent calls made through this context so far."""
        self.meta: dict[str, Any] = {}
        """Merged into the reply's ``meta`` (patterns keep their metrics here)."""
        self.budget: Budget | None = task.budget if task else None
        """The task's budget as it arrived (`remaining_budget` is what is left of it)."""
        self.stream_writer = stream
        """Where this task's chunks go when its caller asked for a stream, else ``None``:
        `emit`, model calls and (with ``forward: all``) the calls below write to it."""
        self._streamed: dict[str, int] = {}  # calls forwarded so far, by callee

    @functools.cached_property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger that tags records with the agent and the task id."""
        return logging.LoggerAdapter(
            logging.getLogger(f"mesh.agent.{self.agent}"),
            {"agent": self.agent, "task_id": self.task.id if self.task else None},
        )

    @property
    def tracing(self) -> Tracing:
        """The runtime's tracing: spans of your own go in the task's trace through it."""
        return self._runtime.tracing

    @property
    def path(self) -> tuple[str, ...]:
        """Agents from the top of the call tree down to this one."""
        above = tuple(self.task.path) if self.task else ()
        return (*above, self.agent)

    def remaining(self) -> float | None:
        """Seconds left before the deadline, or ``None`` without one."""
        return None if self.deadline is None else self.deadline - time.time()

    def remaining_budget(self) -> Budget | None:
        """What is left of the task's budget after what it has spent so far, or ``None``."""
        return None if self.budget is None else self.budget.left_after(self.usage)

    def add_usage(self, usage: Usage) -> None:
        """Count usage made by this agent itself (the LLM layer calls it for every model call)."""
        self.usage = self.usage + usage

    async def request(
        self,
        agent: str,
        input: Any,
        *,
        timeout: float | None = None,
        context: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
        budget: Budget | None = None,
    ) -> Reply:
        """Send a task to ``agent`` and return its reply, failed or not (errors never raise).

        Args:
            agent: The callee's name.
            input: What it works on.
            timeout: Seconds to allow; capped by what is left of this task's deadline.
            context: Metadata merged over this task's context for the callee.
            idempotency_key: The same for every try of this logical task: a callee that
                finished it answers again from the stored reply (see `subjects.md`).
            retry: How to retry; default: the callee's policy from the config.
            budget: A budget for the callee; it gets the tighter of this and what is left
                of this task's (`remaining_budget`), never more.
        """
        task = self._child_task(input, context, idempotency_key=idempotency_key, budget=budget)
        self.calls_made += 1
        writer = self.stream_writer
        if writer is not None and writer.forwards_children:
            # The caller wants the whole tree live: stream the callee, and pass its chunks on.
            reply = await self._forwarded(agent, task, writer, timeout=timeout)
        else:
            reply = await self._runtime.send(
                agent, task, timeout=timeout, deadline=self.deadline, retry=retry
            )
        self.add_usage(reply.usage)
        return reply

    def _child_task(
        self,
        input: Any,
        context: dict[str, Any] | None,
        *,
        idempotency_key: str | None = None,
        budget: Budget | None = None,
        stream: StreamRequest | None = None,
    ) -> Task:
        """A task for a call from this one: this task's context under ``context``, the tree's
        correlation id, the call path, and what is left of the budget (or ``budget``, if
        tighter)."""
        parent = self.task
        left = self.remaining_budget()
        merged = {**parent.context, **(context or {})} if parent else dict(context or {})
        return Task(
            input=input,
            correlation_id=(parent.correlation_id or parent.id) if parent else None,
            sender=self.agent,
            context=merged,
            path=list(self.path),
            idempotency_key=idempotency_key,
            budget=budget if left is None else left.within(budget),
            stream=stream,
        )

    async def _forwarded(
        self, agent: str, task: Task, writer: StreamWriter, *, timeout: float | None
    ) -> Reply:
        earlier = self._streamed.get(agent, 0)
        self._streamed[agent] = earlier + 1
        label = child_label(agent, earlier)
        task.stream = StreamRequest(forward="all")
        reply: Reply | None = None
        started = time.perf_counter()
        await writer.send(CALL, data={"agent": agent, "state": "started"}, path=label)
        async for item in self._runtime.open_stream(
            agent, task, timeout=timeout, deadline=self.deadline
        ):
            if isinstance(item, Reply):
                reply = item
            else:
                below = item.path.partition("/")[2]
                path = f"{label}/{below}" if below else label
                await writer.send(item.kind, text=item.text, data=item.data, path=path)
        assert reply is not None  # a stream always ends with its reply
        ended = call_ended(agent, reply, (time.perf_counter() - started) * 1000)
        await writer.send(CALL, data=ended, path=label)
        return reply

    async def stream(
        self,
        agent: str,
        input: Any,
        *,
        timeout: float | None = None,
        context: dict[str, Any] | None = None,
        window: int = 64,
        forward: str = "all",
    ) -> AsyncIterator[Chunk | Reply]:
        """Call ``agent`` and yield its reply as it is made: `mesh.streaming.Chunk` s (text
        as it is written, events, the chunks of the agents below it, each with its path),
        then the final `Reply` (failed or not; its usage is added to this task's).

        Stopping early (``break``) cancels the callee and everything below it.

        Args:
            agent: The callee's name.
            input: What it works on.
            timeout: Seconds to allow; capped by what is left of this task's deadline.
            context: Metadata merged over this task's context for the callee.
            window: Chunks the callee may send ahead of what has been read.
            forward: ``all``, ``text`` (the callee's own text only) or ``none``.
        """
        task = self._child_task(
            input, context, stream=StreamRequest(window=window, forward=forward)
        )
        self.calls_made += 1
        async for item in self._runtime.open_stream(
            agent, task, timeout=timeout, deadline=self.deadline
        ):
            if isinstance(item, Reply):
                self.add_usage(item.usage)
            yield item

    async def call(
        self,
        agent: str,
        input: Any,
        *,
        timeout: float | None = None,
        context: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
        retry: RetryPolicy | None = None,
        budget: Budget | None = None,
    ) -> Any:
        """Send a task to ``agent`` and return its output (options as for `request`).

        Raises:
            MeshError: The callee's error, rebuilt as the same class (e.g. `NoRespondersError`,
                `DeadlineExceededError`, or whatever the callee raised).
        """
        reply = await self.request(
            agent,
            input,
            timeout=timeout,
            context=context,
            idempotency_key=idempotency_key,
            retry=retry,
            budget=budget,
        )
        return reply.unwrap()

    async def call_many(
        self,
        agents: Sequence[str],
        input: Any = None,
        *,
        inputs: Sequence[Any] | None = None,
        timeout: float | None = None,
    ) -> list[Reply]:
        """Send tasks to several agents at once and return their replies in the same order.

        Args:
            agents: The callees (a name may repeat).
            input: One input for all of them...
            inputs: ...or one per agent.
            timeout: Seconds to allow each call (capped by the deadline).

        Raises:
            ValueError: ``inputs`` does not have one entry per agent.
        """
        if inputs is None:
            inputs = [input] * len(agents)
        elif len(inputs) != len(agents):
            raise ValueError(f"{len(inputs)} inputs for {len(agents)} agents")
        replies: list[Reply | None] = [None] * len(agents)

        async def one(index: int) -> None:
            replies[index] = await self.request(agents[index], inputs[index], timeout=timeout)

        async with anyio.create_task_group() as group:
            for index in range(len(agents)):
                group.start_soon(one, index)
        return [reply for reply in replies if reply is not None]

    def model(self, name: str) -> Model:
        """The model ``name`` (``provider:model``), measured: each call's tokens and cost are
        added to this task's usage and published on ``mesh.telemetry.llm``.

        Raises:
            ValueError: Unknown provider, or an undeclared scripted model or server.
            AuthFailedError: Real providers are switched off.
        """
        task = self.task
        measured = InstrumentedModel(
            self._runtime.models.get(name),
            self._runtime.prices,
            self._record_llm_call,
            agent=self.agent,
            task_id=task.id if task else None,
            correlation_id=(task.correlation_id or task.id) if task else None,
            tracing=self.tracing,
            guard=self._guard,
        )
        writer = self.stream_writer
        if writer is None or writer.forward == "none":
            return measured
        return StreamingModel(measured, writer)

    @functools.cached_property
    def _guard(self) -> CallGuard | None:
        """The checks of this task's model calls; ``None`` without a budget or limits."""
        limits = self._runtime.models.limits(self.agent)
        if self.budget is None and limits is None:
            return None
        spend = limits is not None and limits.spend is not None
        return CallGuard(
            agent=self.agent,
            prices=self._runtime.prices,
            budget=self.budget,
            spent=lambda: self.usage,
            limits=limits,
            meter=SpendMeter(self._runtime.ledger.store) if spend else None,
        )

    def embedder(self, embedder: str | Embedder) -> Embedder:
        """An embedder (by name: ``hash``, ``openai:text-embedding-3-small``; or one built in
        code), measured: each call's tokens and cost are added to this task's usage.

        Raises:
            ValueError: Not an embedder name.
            AuthFailedError: Real providers are switched off, or there is no key.
        """
        inner = self._runtime.models.embedder(embedder) if isinstance(embedder, str) else embedder
        return MeasuredEmbedder(inner, self._runtime.prices, self.add_usage)

    async def llm(
        self,
        model: str,
        prompt: str | Sequence[ChatMessage],
        *,
        system: str | None = None,
        output_type: type[BaseModel] | None = None,
        tools: Sequence[ToolSpec] = (),
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop: Sequence[str] = (),
    ) -> ModelResponse:
        """One measured model call (see `mesh.llm.generate`); with ``output_type`` the answer
        is validated into ``response.parsed``, retried once if it does not fit.

        Raises:
            InvalidOutputError: No valid structured output in two tries.
            MeshError: The provider's failure (rate limit, timeout, auth, ...).
        """
        return await generate(
            self.model(model),
            prompt,
            system=system,
            output_type=output_type,
            tools=tools,
            temperature=temperature,
            max_tokens=max_tokens,
            stop=stop,
        )

    async def _record_llm_call(self, call: LLMCall) -> None:
        if call.ok:
            self.add_usage(call.usage)
        await self.publish_telemetry(TELEMETRY_LLM, call)

    async def publish_telemetry(self, subject: str, record: BaseModel) -> None:
        """Publish a telemetry record on ``subject`` (fire-and-forget: never raises)."""
        await self._runtime.publish_telemetry(subject, record)

    async def emit(self, kind: str, data: Any = None) -> None:
        """Publish an event on ``mesh.events.<agent>.<kind>`` (fire-and-forget), and, when
        the caller asked for a stream, send it to the caller as a chunk.

        ``emit("text", "...")`` is text for a streaming caller (as a model's deltas are): it
        goes only to the stream, never to the events subject.
        """
        writer = self.stream_writer
        if kind == TEXT:
            if writer is not None:
                await writer.send(TEXT, text=str(data))
            return
        if writer is not None:
            await writer.send(kind, data=data)
        await self._runtime.emit(Event(source=self.agent, kind=kind, data=data))

    async def subscribe(self, subject: str, handler: EventHandler) -> Subscription:
        """Receive the events matching ``subject`` (e.g. ``mesh.events.*.alert``)."""
        return await self._runtime.subscribe(subject, handler)
