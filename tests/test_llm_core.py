"""The LLM layer's core: scripted model, prices, structured output, and automatic measurement."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task, Usage
from mesh.errors import AuthFailedError, InvalidOutputError, ProviderError
from mesh.llm.config import LLMConfig
from mesh.llm.generate import generate
from mesh.llm.pricing import Price, PriceBook
from mesh.llm.registry import ModelRegistry
from mesh.llm.scripted import (
    ScriptedConfig,
    ScriptedModel,
    ScriptedReply,
    ScriptRule,
    count_tokens,
)
from mesh.llm.types import ChatMessage, Completed, ModelRequest, TextDelta, TokenUsage
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from mesh.subjects import TELEMETRY_LLM
from tests.support import CallLog

pytestmark = pytest.mark.anyio

PRICE = Price(input=2.0, output=8.0)  # USD per million tokens


def ask(text: str) -> ModelRequest:
    return ModelRequest(messages=(ChatMessage(role="user", content=text),))


# -- scripted model ----------------------------------------------------------------------------


async def test_scripted_replies_come_in_order_then_the_default() -> None:
    model = ScriptedModel(replies=["one", "two"], default="again")
    texts = [(await model.complete(ask("x"))).text for _ in range(4)]
    assert texts == ["one", "two", "again", "again"]


async def test_scripted_rules_match_the_last_message_before_replies() -> None:
    model = ScriptedModel(
        rules=[ScriptRule(match=r"weather in \w+", text="sunny")], replies=["fallback"]
    )
    assert (await model.complete(ask("what is the weather in Oslo?"))).text == "sunny"
    assert (await model.complete(ask("hello"))).text == "fallback"


async def test_scripted_model_without_an_answer_fails_clearly() -> None:
    with pytest.raises(ProviderError, match="no answer left"):
        await ScriptedModel("empty").complete(ask("anything"))


async def test_scripted_tool_calls_and_structured_output() -> None:
    model = ScriptedModel(
        replies=[
            ScriptedReply(tool_calls=({"name": "add", "arguments": {"a": 1}},)),  # type: ignore[arg-type]
            ScriptedReply(output={"label": "x"}),
        ]
    )
    first = await model.complete(ask("go"))
    second = await model.complete(ask("go"))
    assert (first.finish_reason, first.tool_calls[0].name, first.tool_calls[0].arguments) == (
        "tool_calls",
        "add",
        {"a": 1},
    )
    assert json.loads(second.text) == {"label": "x"}


async def test_scripted_usage_is_counted_from_the_text() -> None:
    request = ModelRequest(messages=(ChatMessage(role="user", content="a" * 40),), system="s" * 8)
    response = await ScriptedModel(replies=["b" * 12]).complete(request)
    prompt = "s" * 8 + "\n" + "a" * 40
    assert response.usage == TokenUsage(input_tokens=count_tokens(prompt), output_tokens=3)


async def test_scripted_stream_gives_deltas_then_the_response() -> None:
    events = [e async for e in ScriptedModel(replies=["hello big world"]).stream(ask("x"))]
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["hello ", "big ", "world"]
    assert isinstance(events[-1], Completed)
    assert events[-1].response.text == "hello big world"


# -- prices ------------------------------------------------------------------------------------


def test_known_model_is_priced_from_genai_prices() -> None:
    usage = TokenUsage(input_tokens=1000, output_tokens=500, cached_tokens=200)
    # gpt-4o-mini: $0.15/M input, $0.075/M cached input, $0.60/M output.
    expected = (800 * 0.15 + 200 * 0.075 + 500 * 0.60) / 1_000_000
    assert PriceBook().cost("openai:gpt-4o-mini", usage) == pytest.approx(expected)


def test_override_wins_and_prices_cached_tokens_apart() -> None:
    book = PriceBook({"openai:gpt-4o-mini": Price(input=1.0, output=2.0, cached_input=0.5)})
    usage = TokenUsage(input_tokens=1000, output_tokens=100, cached_tokens=400)
    assert book.cost("openai:gpt-4o-mini", usage) == pytest.approx(
        (600 * 1.0 + 400 * 0.5 + 100 * 2.0) / 1_000_000
    )


def test_unknown_model_costs_none_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    book = PriceBook()
    with caplog.at_level(logging.WARNING, logger="mesh.llm"):
        costs = [book.cost("openai-compatible:my-llama", TokenUsage(input_tokens=5)) for _ in "ab"]
    assert costs == [None, None]
    assert [r.getMessage() for r in caplog.records].count(
        "no price known for 'openai-compatible:my-llama': its calls are counted with cost "
        "unknown (add it to llm.prices in the config)"
    ) == 1


# -- structured output -------------------------------------------------------------------------


class Verdict(BaseModel):
    label: str
    confidence: float


async def test_structured_output_is_parsed() -> None:
    model = ScriptedModel(replies=[ScriptedReply(output={"label": "spam", "confidence": 0.9})])
    response = await generate(model, "classify this", output_type=Verdict)
    assert response.parsed == Verdict(label="spam", confidence=0.9)
    assert model.requests[0].output_schema == Verdict.model_json_schema()


async def test_invalid_structured_output_is_retried_once_with_the_error() -> None:
    model = ScriptedModel(
        replies=["not json", ScriptedReply(output={"label": "ham", "confidence": 0.2})]
    )
    response = await generate(model, "classify", output_type=Verdict)
    assert response.parsed == Verdict(label="ham", confidence=0.2)
    retry = model.requests[1].messages
    assert [m.role for m in retry] == ["user", "assistant", "user"]
    assert "did not match the required JSON schema" in retry[-1].content


async def test_invalid_structured_output_twice_fails_with_the_raw_output() -> None:
    model = ScriptedModel(replies=["nope", ScriptedReply(output={"label": "x"})])
    with pytest.raises(InvalidOutputError, match="no valid Verdict in two tries") as caught:
        await generate(model, "classify", output_type=Verdict)
    assert caught.value.details is not None
    assert caught.value.details["raw_output"] == '{"label": "x"}'
    assert caught.value.details["errors"] == [{"field": "confidence", "problem": "Field required"}]


# -- registry ----------------------------------------------------------------------------------


def test_registry_builds_declared_scripted_models_once() -> None:
    registry = ModelRegistry(LLMConfig(scripted={"demo": ScriptedConfig(replies=("hi",))}))
    assert registry.get("scripted:demo") is registry.get("scripted:demo")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gpt-4o", "'provider:model'"),
        ("mystery:model", "unknown provider 'mystery'"),
        ("scripted:ghost", "declare llm.scripted.ghost"),
    ],
)
def test_registry_refuses_unknown_names(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ModelRegistry().get(name)


def test_offline_registry_refuses_real_providers() -> None:
    registry = ModelRegistry(environ={"MESH_LLM__OFFLINE": "1"})
    with pytest.raises(AuthFailedError, match="switched off"):
        registry.get("openai:gpt-4o-mini")


# -- measurement through the context, on both buses --------------------------------------------


class Writer(Agent[Any]):
    """An agent with no tracking code at all: two model calls, one structured."""

    name = "writer"

    async def execute(self, task: Task, ctx: Context) -> Any:
        draft = await ctx.llm("scripted:pen", f"draft about {task.input}")
        verdict = await ctx.llm("scripted:pen", draft.text, output_type=Verdict)
        return {"draft": draft.text, "label": verdict.parsed.label}


class Editor(Agent[Any]):
    """Calls two writers (sub-agents) and makes one call of its own."""

    name = "editor"

    async def execute(self, task: Task, ctx: Context) -> Any:
        replies = await ctx.call_many(["writer", "writer"], inputs=["a", "b"])
        summary = await ctx.llm("scripted:pen", "summarise")
        return [r.unwrap()["label"] for r in replies] + [summary.text]


def pen() -> ScriptedModel:
    return ScriptedModel(
        "pen",
        rules=[ScriptRule(match="^draft", text="a draft of twenty-four ch")],
        default=ScriptedReply(output={"label": "ok", "confidence": 1.0}),
    )


@pytest.fixture(params=["memory", "nats"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    llm = LLMConfig(prices={"scripted:pen": PRICE})
    if request.param == "memory":
        return LocalRuntime(llm=llm)
    return DistributedRuntime(request.getfixturevalue("nats_url"), llm=llm)


async def test_calls_of_an_untracked_agent_are_counted_in_its_reply(runtime: Runtime) -> None:
    model = pen()
    runtime.models.register(model)
    runtime.register(Writer())
    log = CallLog()
    async with runtime:
        await runtime.bus.subscribe(TELEMETRY_LLM, log)
        with anyio.fail_after(5):
            reply = await runtime.request("writer", "cats")
            calls = await log.wait(2)
    assert reply.output == {"draft": "a draft of twenty-four ch", "label": "ok"}
    assert [(c.agent, c.model, c.task_id, c.ok) for c in calls] == [
        ("writer", "scripted:pen", reply.id, True)
    ] * 2
    tokens_in = sum(c.input_tokens for c in calls)
    tokens_out = sum(c.output_tokens for c in calls)
    assert reply.usage.model_dump() == {
        "input_tokens": tokens_in,
        "output_tokens": tokens_out,
        "cost_usd": pytest.approx((tokens_in * 2.0 + tokens_out * 8.0) / 1_000_000),
        "calls": 2,
    }


async def test_usage_rolls_up_through_nested_calls(runtime: Runtime) -> None:
    model = pen()
    runtime.models.register(model)
    runtime.register(Writer())
    runtime.register(Editor())
    async with runtime:
        with anyio.fail_after(5):
            reply = await runtime.request("editor", None)
    assert reply.output == ["ok", "ok", '{"label": "ok", "confidence": 1.0}']
    responses = [await pen().complete(r) for r in model.requests]  # the same script, replayed
    tokens_in = sum(r.usage.input_tokens for r in responses)
    tokens_out = sum(r.usage.output_tokens for r in responses)
    assert reply.usage.calls == 5
    assert (reply.usage.input_tokens, reply.usage.output_tokens) == (tokens_in, tokens_out)
    assert reply.usage.cost_usd == pytest.approx((tokens_in * 2.0 + tokens_out * 8.0) / 1e6)


async def test_a_failed_call_is_reported_and_costs_nothing(runtime: Runtime) -> None:
    class Asker(Agent[Any]):
        name = "asker"

        async def execute(self, task: Task, ctx: Context) -> Any:
            return (await ctx.llm("scripted:silent", "hello")).text

    runtime.models.register(ScriptedModel("silent"))
    runtime.register(Asker())
    log = CallLog()
    async with runtime:
        await runtime.bus.subscribe(TELEMETRY_LLM, log)
        with anyio.fail_after(5):
            reply = await runtime.request("asker", None)
            calls = await log.wait(1)
    assert reply.error is not None
    assert reply.error.code == "provider_error"
    assert reply.usage == Usage()
    assert (calls[0].ok, calls[0].error_code, calls[0].cost_usd) == (False, "provider_error", 0.0)


async def test_streamed_calls_are_measured_with_time_to_first_token(runtime: Runtime) -> None:
    class Streamer(Agent[Any]):
        name = "streamer"

        async def execute(self, task: Task, ctx: Context) -> Any:
            pieces = [
                event.text
                async for event in ctx.model("scripted:pen").stream(ask("tell me"))
                if isinstance(event, TextDelta)
            ]
            return "".join(pieces)

    runtime.models.register(ScriptedModel("pen", replies=["streamed words here"]))
    runtime.register(Streamer())
    log = CallLog()
    async with runtime:
        await runtime.bus.subscribe(TELEMETRY_LLM, log)
        with anyio.fail_after(5):
            reply = await runtime.request("streamer", None)
            calls = await log.wait(1)
    assert reply.output == "streamed words here"
    assert reply.usage.calls == 1
    (call,) = calls
    assert (call.streamed, call.ok, call.output_tokens) == (True, True, 5)
    assert call.ttft_ms is not None
    assert 0 <= call.ttft_ms <= call.latency_ms


def test_compatible_server_answers_to_its_declared_name() -> None:
    from mesh.llm.config import CompatibleServer

    config = LLMConfig(
        compatible={"local": CompatibleServer(base_url="http://127.0.0.1:9/v1", model="llama3.2")}
    )
    assert ModelRegistry(config, environ={}).get("openai-compatible:local").name == (
        "openai-compatible:local"
    )


def test_undeclared_compatible_server_is_refused() -> None:
    with pytest.raises(ValueError, match=r"declare llm\.compatible\.local"):
        ModelRegistry(environ={}).get("openai-compatible:local")


async def test_a_failing_telemetry_publish_never_fails_the_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runtime = LocalRuntime(llm=LLMConfig(prices={"scripted:pen": PRICE}))
    runtime.models.register(pen())
    runtime.register(Writer())
    async with runtime:
        publish = runtime.bus.publish

        async def broken(subject: str, data: bytes, **kwargs: Any) -> None:
            if subject == TELEMETRY_LLM:
                raise ConnectionError("telemetry link down")
            await publish(subject, data, **kwargs)

        monkeypatch.setattr(runtime.bus, "publish", broken)
        with anyio.fail_after(5):
            reply = await runtime.request("writer", "cats")
    assert reply.output == {"draft": "a draft of twenty-four ch", "label": "ok"}
    assert reply.usage.calls == 2
