"""Measurement of every model call: tokens, cost, latency, time to first token, outcome.

`InstrumentedModel` wraps a model; the runtime hands agents only wrapped models (through
`Context.model` and `Context.llm`), so no call escapes. A call first passes the task's
`CallGuard` (prompt size, budget, spend limit), if it has one; a refused call never reaches
the provider. Each call, refused ones included, ends in one `LLMCall` record, given to a
recorder: the context adds its usage to the task's, and the runtime publishes it on
``mesh.telemetry.llm``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from mesh.envelope import Usage
from mesh.errors import MeshError
from mesh.llm.guard import Admission
from mesh.llm.types import Completed, ModelRequest, ModelResponse, StreamEvent, TextDelta

if TYPE_CHECKING:
    from opentelemetry.trace import Span

    from mesh.llm.guard import CallGuard
    from mesh.llm.model import Model
    from mesh.llm.pricing import PriceBook
    from mesh.tracing import Tracing

__all__ = ["InstrumentedModel", "LLMCall", "Recorder"]


class LLMCall(BaseModel):
    """One model call, as measured (published on ``mesh.telemetry.llm``)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    model: str
    """``provider:model`` as asked for."""
    provider: str
    """The provider part of ``model``."""
    agent: str | None = None
    """The agent that made the call."""
    task_id: str | None = None
    """The task it was working on."""
    correlation_id: str | None = None
    """The top-level task of the tree."""
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: float | None = None
    """US dollars; ``None`` when the model's price is unknown."""
    latency_ms: float = 0.0
    """From the call to the whole answer."""
    ttft_ms: float | None = None
    """Time to the first text, for streamed calls."""
    streamed: bool = False
    ok: bool = True
    error_code: str | None = None
    """The mesh error code of a failed call."""
    time: float = Field(default_factory=time.time)
    """When the call ended, Unix time in seconds."""

    @property
    def usage(self) -> Usage:
        """What this call adds to its task's usage."""
        return Usage(
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cost_usd=self.cost_usd,
            calls=1,
        )


Recorder = Callable[[LLMCall], Awaitable[None]]
"""Receives each finished call; it must not raise, nor wait on anything slow."""


class InstrumentedModel:
    """A model whose every call is measured and given to ``recorder``.

    Args:
        inner: The model that answers.
        prices: Prices the calls.
        recorder: Receives one `LLMCall` per call, failed ones included.
        agent: The calling agent's name, for the record.
        task_id: The task being worked on.
        correlation_id: The top-level task of the tree.
        tracing: Makes a span per call, when on.
        guard: Checks each call before it is made (budget, limits); ``None``: no checks.
    """

    def __init__(
        self,
        inner: Model,
        prices: PriceBook,
        recorder: Recorder,
        *,
        agent: str | None = None,
        task_id: str | None = None,
        correlation_id: str | None = None,
        tracing: Tracing | None = None,
        guard: CallGuard | None = None,
    ) -> None:
        self._inner = inner
        self._guard = guard
        self._tracing = tracing
        self._prices = prices
        self._recorder = recorder
        self._who = {"agent": agent, "task_id": task_id, "correlation_id": correlation_id}

    @property
    def name(self) -> str:
        return self._inner.name

    def __repr__(self) -> str:
        return f"InstrumentedModel({self._inner.name!r})"

    def _admitted(self, request: ModelRequest) -> AbstractAsyncContextManager[Admission]:
        if self._guard is None:
            return contextlib.nullcontext(Admission(0, None))
        return self._guard.admit(self._inner, request)

    async def complete(self, request: ModelRequest) -> ModelResponse:
        span = self._tracing.start_model_call(self.name, request) if self._tracing else None
        started = time.perf_counter()
        try:
            async with self._admitted(request) as admission:
                response = await self._inner.complete(request)
                call = await self._record(response, started, streamed=False, ttft=None, span=span)
                admission.usage = call.usage
        except MeshError as exc:
            await self._record_failure(exc, started, streamed=False, ttft=None, span=span)
            raise
        return response

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        span = self._tracing.start_model_call(self.name, request) if self._tracing else None
        started = time.perf_counter()
        ttft: float | None = None
        try:
            async with self._admitted(request) as admission:
                async for event in self._inner.stream(request):
                    if isinstance(event, TextDelta) and ttft is None:
                        ttft = time.perf_counter() - started
                    elif isinstance(event, Completed):
                        call = await self._record(
                            event.response, started, streamed=True, ttft=ttft, span=span
                        )
                        admission.usage = call.usage
                        span = None
                    yield event
        except MeshError as exc:
            await self._record_failure(exc, started, streamed=True, ttft=ttft, span=span)
            span = None
            raise
        finally:
            if span is not None:  # the stream stopped before it completed
                span.end()

    async def _record(
        self,
        response: ModelResponse,
        started: float,
        *,
        streamed: bool,
        ttft: float | None,
        span: Span | None,
    ) -> LLMCall:
        usage = response.usage
        call = LLMCall(
            model=self.name,
            provider=self.name.partition(":")[0],
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cached_tokens=usage.cached_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            cost_usd=self._prices.cost(self.name, usage),
            latency_ms=(time.perf_counter() - started) * 1000,
            ttft_ms=None if ttft is None else ttft * 1000,
            streamed=streamed,
            **self._who,
        )
        if self._tracing is not None:
            self._tracing.end_model_call(span, call, response)
        await self._recorder(call)
        return call

    async def _record_failure(
        self,
        exc: MeshError,
        started: float,
        *,
        streamed: bool,
        ttft: float | None,
        span: Span | None,
    ) -> None:
        call = LLMCall(
            model=self.name,
            provider=self.name.partition(":")[0],
            cost_usd=0.0,
            latency_ms=(time.perf_counter() - started) * 1000,
            ttft_ms=None if ttft is None else ttft * 1000,
            streamed=streamed,
            ok=False,
            error_code=exc.code.value,
            **self._who,
        )
        if self._tracing is not None:
            self._tracing.end_model_call(span, call, None)
        await self._recorder(call)
