"""Tracing: one trace per task tree, W3C trace context in the message headers, spans after
the messaging and generative-AI conventions, Langfuse generations, nothing when off."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import nats
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from agents.echo import EchoAgent
from agents.llm import LLMAgent, LLMAgentConfig
from agents.upper import UpperAgent
from mesh.bus import Message
from mesh.codec import encode
from mesh.envelope import Task
from mesh.llm.config import LLMConfig
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedModel
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from mesh.tracing import SCOPE, Tracing, TracingConfig
from patterns.sequential import SequentialConfig, SequentialPattern

pytestmark = pytest.mark.anyio

LLM = LLMConfig(prices={"scripted:pen": Price(input=1.0, output=2.0)})
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracing(exporter: InMemorySpanExporter) -> Iterator[Tracing]:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield Tracing(provider)
    provider.shutdown()


def make_runtime(bus: str, request: pytest.FixtureRequest, tracing: Tracing | None) -> Runtime:
    if bus == "memory":
        return LocalRuntime(llm=LLM, tracing=tracing)
    return DistributedRuntime(request.getfixturevalue("nats_url"), llm=LLM, tracing=tracing)


@pytest.fixture(params=["memory", "nats"])
async def traced(request: pytest.FixtureRequest, tracing: Tracing) -> AsyncIterator[Runtime]:
    runtime = make_runtime(request.param, request, tracing)
    runtime.models.register(ScriptedModel("pen", default="a draft", latency=0.01))
    runtime.register(LLMAgent(name="writer", config=LLMAgentConfig(model="scripted:pen")))
    runtime.register(UpperAgent(name="shout"))
    steps = SequentialConfig.model_validate({"steps": ["writer", "shout"]})
    runtime.register(SequentialPattern(name="pipe", config=steps))
    async with runtime:
        yield runtime


def by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), [span.name for span in spans]
    return named


def parent_name(span: ReadableSpan, spans: dict[str, ReadableSpan]) -> str | None:
    if span.parent is None:
        return None
    ids = {other.context.span_id: name for name, other in spans.items()}
    return ids.get(span.parent.span_id, "<outside>")


async def test_a_task_tree_is_one_trace_with_each_span_under_its_cause(
    traced: Runtime, exporter: InMemorySpanExporter
) -> None:
    with anyio.fail_after(10):
        reply = await traced.request("pipe", "topic")
    assert reply.ok
    spans = by_name(exporter.get_finished_spans())
    assert {name: parent_name(span, spans) for name, span in spans.items()} == {
        "send mesh.agent.pipe.run": None,
        "process mesh.agent.pipe.run": "send mesh.agent.pipe.run",
        "pattern sequential": "process mesh.agent.pipe.run",
        "send mesh.agent.writer.run": "pattern sequential",
        "process mesh.agent.writer.run": "send mesh.agent.writer.run",
        "chat pen": "process mesh.agent.writer.run",
        "send mesh.agent.shout.run": "pattern sequential",
        "process mesh.agent.shout.run": "send mesh.agent.shout.run",
    }
    assert len({span.context.trace_id for span in spans.values()}) == 1
    assert {span.instrumentation_scope.name for span in spans.values()} == {SCOPE}


async def test_spans_follow_the_messaging_and_gen_ai_conventions(
    traced: Runtime, exporter: InMemorySpanExporter
) -> None:
    with anyio.fail_after(10):
        reply = await traced.request("pipe", "topic")
    spans = by_name(exporter.get_finished_spans())
    send, process = spans["send mesh.agent.writer.run"], spans["process mesh.agent.writer.run"]
    assert (send.kind, process.kind) == (SpanKind.PRODUCER, SpanKind.CONSUMER)
    assert send.attributes is not None
    assert {
        key: send.attributes[key] for key in ("messaging.system", "messaging.operation.name")
    } == {
        "messaging.system": "nats",
        "messaging.operation.name": "send",
    }
    assert send.attributes["messaging.destination.name"] == "mesh.agent.writer.run"
    assert send.attributes["messaging.message.conversation_id"] == reply.id
    chat = spans["chat pen"]
    assert chat.kind is SpanKind.CLIENT
    assert chat.attributes is not None
    usage = reply.usage
    assert {
        key: chat.attributes[key]
        for key in (
            "gen_ai.operation.name",
            "gen_ai.provider.name",
            "gen_ai.request.model",
            "gen_ai.usage.input_tokens",
            "gen_ai.usage.output_tokens",
            "mesh.usage.cost_usd",
        )
    } == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "scripted",
        "gen_ai.request.model": "pen",
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
        "mesh.usage.cost_usd": usage.cost_usd,
    }
    top = spans["process mesh.agent.pipe.run"].attributes
    assert top is not None
    assert top["mesh.usage.cost_usd"] == usage.cost_usd
    assert spans["pattern sequential"].attributes["mesh.pattern.outcome"] == "ok"  # type: ignore[index]


async def test_a_failed_task_marks_its_span(
    traced: Runtime, exporter: InMemorySpanExporter
) -> None:
    with anyio.fail_after(10):
        reply = await traced.request("shout", {"not": "text"})
    assert reply.error is not None
    process = by_name(exporter.get_finished_spans())["process mesh.agent.shout.run"]
    assert process.status.status_code is StatusCode.ERROR
    assert process.attributes is not None
    assert process.attributes["error.type"] == reply.error.code


async def test_a_task_sent_with_a_traceparent_continues_that_trace(
    traced: Runtime, exporter: InMemorySpanExporter
) -> None:
    headers = {"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"}
    with anyio.fail_after(10):
        await traced.bus.request(
            "mesh.agent.shout.run", encode(Task(input="hi")), timeout=5, headers=headers
        )
    process = by_name(exporter.get_finished_spans())["process mesh.agent.shout.run"]
    assert process.parent is not None
    assert (f"{process.context.trace_id:032x}", f"{process.parent.span_id:016x}") == (
        PARENT_TRACE,
        PARENT_SPAN,
    )


async def test_a_raw_nats_client_traceparent_is_honoured(
    nats_url: str, tracing: Tracing, exporter: InMemorySpanExporter
) -> None:
    runtime = DistributedRuntime(nats_url, tracing=tracing)
    runtime.register(EchoAgent(name="echo"))
    async with runtime:
        client = await nats.connect(nats_url)
        try:
            with anyio.fail_after(10):
                await client.request(
                    "mesh.agent.echo.run",
                    b'{"input": "hi"}',
                    timeout=5,
                    headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"},
                )
        finally:
            await client.close()
    process = by_name(exporter.get_finished_spans())["process mesh.agent.echo.run"]
    assert f"{process.context.trace_id:032x}" == PARENT_TRACE


@pytest.mark.parametrize("on", [False, True], ids=["off", "on"])
async def test_trace_headers_travel_only_when_tracing_is_on(
    request: pytest.FixtureRequest, tracing: Tracing, on: bool
) -> None:
    # NATS only: on the in-memory bus a call is handed to its host in process, no message.
    runtime = make_runtime("nats", request, tracing if on else None)
    runtime.register(EchoAgent(name="echo"))
    seen: list[Message] = []
    async with runtime:
        got = anyio.Event()

        async def watch(message: Message) -> None:
            seen.append(message)
            got.set()

        await runtime.bus.subscribe("mesh.agent.echo.run", watch)
        with anyio.fail_after(10):
            await runtime.request("echo", "hi")
            await got.wait()
    headers = seen[0].headers or {}
    assert ("traceparent" in headers) is on
    if not on:
        assert seen[0].headers is None


# -- configuration and Langfuse --------------------------------------------------------------


def test_tracing_is_off_unless_configured() -> None:
    assert not Tracing.from_config(TracingConfig(), environ={}).enabled
    console = Tracing.from_config(TracingConfig(exporter="console"), environ={})
    assert console.enabled


def test_otlp_honours_the_standard_variables() -> None:
    environ = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_SERVICE_NAME": "billing"}
    tracing = Tracing.from_config(TracingConfig(exporter="otlp"), environ=environ)
    assert tracing.provider is not None
    assert tracing.provider.resource.attributes["service.name"] == "billing"
    processors = tracing.provider._active_span_processor._span_processors
    exporter = processors[0].span_exporter  # type: ignore[attr-defined]
    assert type(exporter).__module__ == "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"
    tracing.provider.shutdown()


async def langfuse_run(capture_content: bool) -> tuple[list[ReadableSpan], Any]:
    sent = InMemorySpanExporter()
    tracing = Tracing(TracerProvider(), capture_content=capture_content)
    # The SDK keeps one client per public key for the process: a fresh key, a fresh exporter.
    client = tracing.add_langfuse(
        public_key=f"pk-{uuid.uuid4().hex}",
        secret_key="sk-test",
        host="http://127.0.0.1:9",
        span_exporter=sent,
    )
    runtime = LocalRuntime(llm=LLM, tracing=tracing)
    runtime.models.register(ScriptedModel("pen", default="a draft"))
    runtime.register(LLMAgent(name="writer", config=LLMAgentConfig(model="scripted:pen")))
    steps = SequentialConfig.model_validate({"steps": ["writer", "writer"]})
    runtime.register(SequentialPattern(name="pipe", config=steps))
    try:
        async with runtime:
            with anyio.fail_after(10):
                reply = await runtime.request("pipe", "topic")
        await anyio.to_thread.run_sync(tracing.flush)
    finally:
        client.shutdown()
        assert tracing.provider is not None
        tracing.provider.shutdown()
    return list(sent.get_finished_spans()), reply


async def test_langfuse_gets_every_generation_with_model_usage_and_cost() -> None:
    spans, reply = await langfuse_run(capture_content=True)
    generations = [
        s for s in spans if (s.attributes or {}).get("langfuse.observation.type") == "generation"
    ]
    assert len(generations) == 2
    for span in generations:
        attributes = span.attributes or {}
        assert attributes["langfuse.observation.model.name"] == "pen"
        usage = reply.usage
        assert json.loads(str(attributes["langfuse.observation.usage_details"])) == {
            "input": usage.input_tokens // 2,
            "output": usage.output_tokens // 2,
        }
        assert attributes["langfuse.observation.cost_details"] == (
            f'{{"total": {reply.usage.cost_usd / 2}}}'
        )
        assert "a draft" in str(attributes["langfuse.observation.output"])
    inputs = [str((span.attributes or {})["langfuse.observation.input"]) for span in generations]
    assert ['"content": "topic"' in text for text in inputs] == [True, False]
    kinds = {(s.attributes or {}).get("langfuse.observation.type") for s in spans}
    assert {"chain", "agent", "generation"} <= kinds  # the pattern and the tasks go too


async def test_langfuse_input_and_output_capture_can_be_turned_off() -> None:
    spans, _ = await langfuse_run(capture_content=False)
    captured = [
        key
        for span in spans
        for key in (span.attributes or {})
        if key in ("langfuse.observation.input", "langfuse.observation.output")
    ]
    assert spans
    assert captured == []


def test_langfuse_is_on_when_its_keys_are_in_the_environment() -> None:
    environ = {
        "LANGFUSE_PUBLIC_KEY": "pk",
        "LANGFUSE_SECRET_KEY": "sk",
        "LANGFUSE_HOST": "http://127.0.0.1:9",
    }
    tracing = Tracing.from_config(TracingConfig(), environ=environ)
    assert tracing.enabled
    assert tracing.provider is not None
    tracing.provider.shutdown()
