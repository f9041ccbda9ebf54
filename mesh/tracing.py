"""Tracing: OpenTelemetry spans for the tasks a host handles, the requests callers send, the
patterns' runs and the model calls, joined into one trace across processes by W3C trace
context (``traceparent``, ``tracestate``) in the NATS message headers.

Spans follow the OpenTelemetry semantic conventions for messaging (``send`` and ``process``
spans on the task subject, ``messaging.system`` ``nats``) and for generative AI (a ``chat``
span per model call with model and tokens), and carry Langfuse's attributes so that the same
spans, sent to Langfuse, show as agents, chains and generations with usage and cost.

Off by default and free when off: a runtime without a `Tracing` (or with one built from an
exporter ``none`` config) creates no span and adds no header. Each runtime owns its
`TracerProvider`; nothing is registered globally.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import context as otel_context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic import BaseModel, ConfigDict, Field, SecretStr

if TYPE_CHECKING:
    from mesh.envelope import Reply, Task
    from mesh.llm.instrument import LLMCall
    from mesh.llm.types import ModelRequest, ModelResponse

__all__ = ["SCOPE", "LangfuseConfig", "Tracing", "TracingConfig"]

SCOPE = "agent-mesh"
"""The instrumentation scope of every span the mesh makes (Langfuse's filter keeps it)."""

_PROPAGATOR = TraceContextTextMapPropagator()
_OFF: AbstractContextManager[None] = nullcontext()
"""What a span context manager is when tracing is off (reusable, costs nothing)."""


class LangfuseConfig(BaseModel):
    """Where LLM generations and pattern spans go in Langfuse (the official SDK sends them)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    enabled: bool | None = None
    """``None``: on when keys are given here or in ``LANGFUSE_PUBLIC_KEY`` and
    ``LANGFUSE_SECRET_KEY``."""
    public_key: str | None = None
    """Default: ``LANGFUSE_PUBLIC_KEY``."""
    secret_key: SecretStr | None = None
    """Default: ``LANGFUSE_SECRET_KEY``."""
    host: str | None = None
    """Default: ``LANGFUSE_HOST``, else Langfuse Cloud."""


class TracingConfig(BaseModel):
    """Where spans go. The OTLP exporter honours the standard ``OTEL_EXPORTER_OTLP_*``
    variables (endpoint, headers, timeout, certificates)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    exporter: Literal["none", "console", "otlp"] = "none"
    """``none`` (default: no spans at all, unless Langfuse is on), ``console`` (JSON on
    standard error) or ``otlp``."""
    protocol: Literal["grpc", "http/protobuf"] | None = None
    """OTLP transport; ``None``: ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, then
    ``OTEL_EXPORTER_OTLP_PROTOCOL``, then ``http/protobuf``."""
    service_name: str | None = None
    """The ``service.name`` of this process's spans; ``None``: ``OTEL_SERVICE_NAME``, else
    ``agent-mesh``."""
    capture_content: bool = True
    """Put prompts and answers on model-call spans (Langfuse's input and output); turn off
    for privacy."""
    langfuse: LangfuseConfig = Field(default_factory=LangfuseConfig)
    """Langfuse, beside (or instead of) the exporter above."""


class Tracing:
    """The spans of one runtime, on its own tracer provider.

    Args:
        provider: Where spans go; ``None`` turns tracing off.
        capture_content: Put prompts and answers on model-call spans.
    """

    def __init__(self, provider: TracerProvider | None, *, capture_content: bool = True) -> None:
        self.provider = provider
        self.capture_content = capture_content
        self._tracer = None if provider is None else provider.get_tracer(SCOPE)
        self._langfuse: Any = None

    @classmethod
    def from_config(
        cls, config: TracingConfig, *, environ: Mapping[str, str] | None = None
    ) -> Tracing:
        """The tracing ``config`` asks for (off when it asks for nothing).

        Raises:
            ValueError: Langfuse is enabled without keys.
        """
        environ = os.environ if environ is None else environ
        langfuse = config.langfuse
        public = langfuse.public_key or environ.get("LANGFUSE_PUBLIC_KEY")
        secret = (
            langfuse.secret_key.get_secret_value() if langfuse.secret_key else None
        ) or environ.get("LANGFUSE_SECRET_KEY")
        use_langfuse = langfuse.enabled if langfuse.enabled is not None else bool(public and secret)
        if config.exporter == "none" and not use_langfuse:
            return cls(None)
        name = config.service_name or environ.get("OTEL_SERVICE_NAME") or "agent-mesh"
        provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
        exporter = _exporter(config, environ)
        if exporter is not None:
            provider.add_span_processor(BatchSpanProcessor(exporter))
        tracing = cls(provider, capture_content=config.capture_content)
        if use_langfuse:
            if not (public and secret):
                raise ValueError("tracing.langfuse is enabled but has no public and secret key")
            tracing.add_langfuse(public_key=public, secret_key=secret, host=langfuse.host)
        return tracing

    def add_langfuse(self, **options: Any) -> Any:
        """Send this provider's mesh spans to Langfuse too, through the official SDK.

        Args:
            options: For ``langfuse.Langfuse`` (keys, host, ``span_exporter`` ...); the
                provider and a span filter keeping the mesh's spans are given here.

        Returns:
            The Langfuse client.

        Raises:
            ValueError: Tracing is off (there is no provider to attach to).
        """
        if self.provider is None:
            raise ValueError("tracing is off: there is no tracer provider for Langfuse")
        from langfuse import Langfuse

        self._langfuse = Langfuse(
            tracer_provider=self.provider, should_export_span=_keep_for_langfuse, **options
        )
        return self._langfuse

    @property
    def enabled(self) -> bool:
        """Whether spans are made."""
        return self._tracer is not None

    def flush(self) -> None:
        """Export the spans still buffered (blocks: run it in a thread from async code)."""
        if self.provider is not None:
            self.provider.force_flush()
        if self._langfuse is not None:
            self._langfuse.flush()

    # -- spans ------------------------------------------------------------------------------

    def sending(self, subject: str, task: Task) -> AbstractContextManager[dict[str, str] | None]:
        """A ``send`` span around a request; gives the headers that carry its context.

        Gives ``None`` when tracing is off: nothing to carry, no header to send.
        """
        return _OFF if self._tracer is None else self._sending(subject, task)

    @contextmanager
    def _sending(self, subject: str, task: Task) -> Iterator[dict[str, str]]:
        assert self._tracer is not None
        # Few attributes on the per-message spans: the SDK checks each one, on the hot path.
        attributes = _messaging(subject, task, "send")
        with self._tracer.start_as_current_span(
            f"send {subject}", kind=SpanKind.PRODUCER, attributes=attributes
        ):
            carrier: dict[str, str] = {}
            _PROPAGATOR.inject(carrier)
            yield carrier

    def processing(
        self, subject: str, task: Task, headers: Mapping[str, str] | None
    ) -> AbstractContextManager[Span | None]:
        """A ``process`` span around a task a host runs, child of the sender's context."""
        return _OFF if self._tracer is None else self._processing(subject, task, headers)

    @contextmanager
    def _processing(
        self, subject: str, task: Task, headers: Mapping[str, str] | None
    ) -> Iterator[Span]:
        assert self._tracer is not None
        parent = _PROPAGATOR.extract(headers) if headers else otel_context.Context()
        attributes = _messaging(subject, task, "process")
        attributes["langfuse.observation.type"] = "agent"
        with self._tracer.start_as_current_span(
            f"process {subject}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    @staticmethod
    def finish_processing(span: Span | None, reply: Reply) -> None:
        """Mark a ``process`` span with how its task ended."""
        if span is None:
            return
        usage = reply.usage
        if usage.calls:
            span.set_attributes(
                {
                    "mesh.usage.input_tokens": usage.input_tokens,
                    "mesh.usage.output_tokens": usage.output_tokens,
                    "mesh.usage.calls": usage.calls,
                }
            )
            if usage.cost_usd is not None:
                span.set_attribute("mesh.usage.cost_usd", usage.cost_usd)
        if reply.error is not None:
            span.set_attribute("error.type", reply.error.code)
            span.set_status(Status(StatusCode.ERROR, reply.error.message))

    def pattern(self, kind: str, agent: str) -> AbstractContextManager[Span | None]:
        """An internal span around a pattern's run."""
        return _OFF if self._tracer is None else self._pattern(kind, agent)

    @contextmanager
    def _pattern(self, kind: str, agent: str) -> Iterator[Span]:
        assert self._tracer is not None
        attributes = {
            "mesh.pattern": kind,
            "mesh.agent": agent,
            "langfuse.observation.type": "chain",
        }
        with self._tracer.start_as_current_span(
            f"pattern {kind}", attributes=attributes, record_exception=False
        ) as span:
            yield span

    @staticmethod
    def finish_pattern(span: Span | None, outcome: str, figures: Mapping[str, Any]) -> None:
        """Mark a pattern span with its outcome and its scalar figures."""
        if span is None:
            return
        span.set_attribute("mesh.pattern.outcome", outcome)
        for name, value in figures.items():
            if isinstance(value, str | bool | int | float):
                span.set_attribute(f"mesh.pattern.{name}", value)
        if outcome != "ok":
            span.set_attribute("error.type", outcome)
            span.set_status(Status(StatusCode.ERROR))

    def start_model_call(self, model: str, request: ModelRequest) -> Span | None:
        """Start a ``chat`` span for a model call (generative-AI conventions); end it with
        `end_model_call`. Not made current: nothing runs below a model call, and a streamed
        call spans several steps of its caller."""
        if self._tracer is None:
            return None
        provider, _, name = model.partition(":")
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.request.model": name,
            "langfuse.observation.type": "generation",
            "langfuse.observation.model.name": name,
        }
        if request.temperature is not None:
            attributes["gen_ai.request.temperature"] = request.temperature
        if request.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = request.max_tokens
        if self.capture_content:
            messages = [message.model_dump(mode="json") for message in request.messages]
            attributes["langfuse.observation.input"] = json.dumps(messages, ensure_ascii=False)
        return self._tracer.start_span(f"chat {name}", kind=SpanKind.CLIENT, attributes=attributes)

    def end_model_call(
        self, span: Span | None, call: LLMCall, response: ModelResponse | None
    ) -> None:
        """End a ``chat`` span with the call's usage, cost and (if captured) answer."""
        if span is None:
            return
        span.set_attributes(
            {
                "gen_ai.usage.input_tokens": call.input_tokens,
                "gen_ai.usage.output_tokens": call.output_tokens,
                "langfuse.observation.usage_details": json.dumps(
                    {"input": call.input_tokens, "output": call.output_tokens}
                ),
            }
        )
        if call.cost_usd is not None:
            span.set_attribute("mesh.usage.cost_usd", call.cost_usd)
            span.set_attribute(
                "langfuse.observation.cost_details", json.dumps({"total": call.cost_usd})
            )
        if response is not None:
            span.set_attribute("gen_ai.response.model", response.model or call.model)
            if self.capture_content:
                output = response.model_dump(mode="json", include={"text", "tool_calls"})
                span.set_attribute(
                    "langfuse.observation.output", json.dumps(output, ensure_ascii=False)
                )
        if not call.ok:
            span.set_attribute("error.type", call.error_code or "error")
            span.set_status(Status(StatusCode.ERROR))
        span.end()


def _messaging(subject: str, task: Task, operation: str) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "nats",
        "messaging.destination.name": subject,
        "messaging.operation.name": operation,
        "messaging.operation.type": operation,
        "messaging.message.id": task.id,
    }
    if task.correlation_id is not None:
        attributes["messaging.message.conversation_id"] = task.correlation_id
    return attributes


def _keep_for_langfuse(span: ReadableSpan) -> bool:
    scope = span.instrumentation_scope
    if scope is not None and scope.name == SCOPE:
        return True
    from langfuse.span_filter import is_default_export_span

    return bool(is_default_export_span(span))


def _exporter(config: TracingConfig, environ: Mapping[str, str]) -> SpanExporter | None:
    if config.exporter == "console":
        return ConsoleSpanExporter(out=sys.stderr)
    if config.exporter == "none":
        return None
    protocol = (
        config.protocol
        or environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        return GrpcExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter()
