"""The Anthropic adapter against hand-built HTTP exchanges (the SDK's own httpx2 client, mocked
transport), and once against the real API when ``ANTHROPIC_API_KEY`` is set."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Protocol

import httpx2
import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from pydantic import SecretStr

from mesh.errors import (
    AuthFailedError,
    MeshTimeoutError,
    ProviderError,
    RateLimitedError,
)
from mesh.llm.anthropic import DEFAULT_MAX_TOKENS, AnthropicModel
from mesh.llm.model import Model, ProviderConfig
from mesh.llm.types import (
    ChatMessage,
    Completed,
    FinishReason,
    ModelRequest,
    ModelResponse,
    StreamEvent,
    TextDelta,
    TokenUsage,
    ToolCall,
    ToolSpec,
)
from tests.support import measured_calls

pytestmark = pytest.mark.anyio

KEY = "sk-ant-test-0123456789"
MODEL = "claude-haiku-4-5"
HELLO = ModelRequest(messages=(ChatMessage(role="user", content="Say hello"),))


class Exchange:
    """Answers each request with the next scripted response (an exception is raised instead)."""

    def __init__(self, *responses: httpx2.Response | Exception) -> None:
        self._responses = list(responses)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        response = self._responses.pop(0)
        if isinstance(response, Exception):
            raise response
        return response

    def body(self, index: int = 0) -> Any:
        return json.loads(self.requests[index].content)


class Connect(Protocol):
    def __call__(
        self, exchange: Exchange, *, max_retries: int = 0, key: str | None = KEY
    ) -> AnthropicModel: ...


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Builds models that talk to an `Exchange`; closes them after the test."""
    models: list[AnthropicModel] = []

    def make(exchange: Exchange, *, max_retries: int = 0, key: str | None = KEY) -> AnthropicModel:
        config = ProviderConfig(
            api_key=SecretStr(key) if key else None,
            base_url="https://anthropic.test",
            timeout=5.0,
            max_retries=max_retries,
        )
        client = httpx2.AsyncClient(transport=httpx2.MockTransport(exchange))
        models.append(AnthropicModel(MODEL, config, http_client=client))
        return models[-1]

    yield make
    for model in models:
        await model.aclose()


def message(
    content: list[dict[str, Any]],
    *,
    stop_reason: str = "end_turn",
    usage: dict[str, int] | None = None,
) -> httpx2.Response:
    """A Messages API answer, as the API sends it."""
    return httpx2.Response(
        200,
        json={
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage or {"input_tokens": 12, "output_tokens": 5},
        },
    )


def error(status: int, kind: str, text: str, **headers: str) -> httpx2.Response:
    body = {"type": "error", "error": {"type": kind, "message": text}, "request_id": "req_1"}
    return httpx2.Response(status, json=body, headers=headers)


def sse(*events: dict[str, Any]) -> httpx2.Response:
    """A streamed answer: one server-sent event per dict, named by its ``type``."""
    text = "".join(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n" for event in events)
    return httpx2.Response(200, text=text, headers={"content-type": "text/event-stream"})


def text_delta(text: str) -> dict[str, Any]:
    return {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": text},
    }


STREAM_START: dict[str, Any] = {
    "id": "msg_02",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5-20251001",
    "content": [],
    "stop_reason": None,
    "stop_sequence": None,
    "usage": {"input_tokens": 20, "output_tokens": 1, "cache_read_input_tokens": 8},
}
STREAMED: list[dict[str, Any]] = [
    {"type": "message_start", "message": STREAM_START},
    {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    *(text_delta(piece) for piece in ("Hel", "lo", "!")),
    {"type": "content_block_stop", "index": 0},
    {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 7},
    },
    {"type": "message_stop"},
]
"""A streamed "Hello!": 20 input tokens (8 of them cached) at the start, 7 output at the end."""


class BrokenStream(httpx2.AsyncByteStream):
    """A body that sends some bytes, then loses its connection."""

    def __init__(self, sent: bytes) -> None:
        self._sent = sent

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self._sent
        raise httpx2.ReadError("connection reset by peer")


async def collect(events: AsyncIterator[StreamEvent]) -> list[StreamEvent]:
    return [event async for event in events]


async def test_complete_returns_the_answer(connect: Connect) -> None:
    model = connect(Exchange(message([{"type": "text", "text": "Hello!"}])))

    response = await model.complete(HELLO)

    assert response == ModelResponse(
        text="Hello!",
        finish_reason="stop",
        usage=TokenUsage(input_tokens=12, output_tokens=5),
        model="claude-haiku-4-5-20251001",
    )


async def test_complete_sends_the_request_as_the_messages_api_wants(connect: Connect) -> None:
    exchange = Exchange(message([{"type": "text", "text": "Hi"}]))
    request = ModelRequest(
        messages=(ChatMessage(role="user", content="Say hello"),),
        system="Be brief.",
        max_tokens=200,
        stop=("END",),
    )

    await connect(exchange).complete(request)

    sent = exchange.requests[0]
    assert (sent.method, str(sent.url)) == ("POST", "https://anthropic.test/v1/messages")
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert exchange.body() == {
        "model": MODEL,
        "max_tokens": 200,
        "messages": [{"role": "user", "content": "Say hello"}],
        "system": "Be brief.",
        "stop_sequences": ["END"],
    }


async def test_max_tokens_defaults_when_the_request_has_none(connect: Connect) -> None:
    exchange = Exchange(message([{"type": "text", "text": "Hi"}]))

    await connect(exchange).complete(HELLO)

    assert exchange.body()["max_tokens"] == DEFAULT_MAX_TOKENS == 1024


async def test_temperature_is_not_sent_as_this_api_version_rejects_it(connect: Connect) -> None:
    exchange = Exchange(message([{"type": "text", "text": "Hi"}]))

    await connect(exchange).complete(HELLO.model_copy(update={"temperature": 0.2}))

    assert "temperature" not in exchange.body()


async def test_stream_yields_deltas_then_the_response_with_the_stream_usage(
    connect: Connect,
) -> None:
    exchange = Exchange(sse(*STREAMED))

    events = await collect(connect(exchange).stream(HELLO))

    assert events == [
        TextDelta(text="Hel"),
        TextDelta(text="lo"),
        TextDelta(text="!"),
        Completed(
            response=ModelResponse(
                text="Hello!",
                finish_reason="stop",
                usage=TokenUsage(input_tokens=28, output_tokens=7, cached_tokens=8),
                model="claude-haiku-4-5-20251001",
            )
        ),
    ]
    assert exchange.body()["stream"] is True


async def test_stream_cut_short_raises_a_retryable_provider_error(connect: Connect) -> None:
    model = connect(Exchange(sse(*STREAMED[:4])))

    with pytest.raises(ProviderError, match="cut short") as caught:
        await collect(model.stream(HELLO))

    assert caught.value.retryable


async def test_stream_losing_its_connection_raises_a_retryable_provider_error(
    connect: Connect,
) -> None:
    sent = sse(*STREAMED[:4]).content
    broken = httpx2.Response(
        200, stream=BrokenStream(sent), headers={"content-type": "text/event-stream"}
    )
    model = connect(Exchange(broken))

    with pytest.raises(ProviderError, match="could not reach Anthropic") as caught:
        await collect(model.stream(HELLO))

    assert caught.value.retryable


async def test_error_event_in_a_stream_is_translated(connect: Connect) -> None:
    overloaded = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    model = connect(Exchange(sse(overloaded)))

    with pytest.raises(ProviderError, match="529: Overloaded") as caught:
        await collect(model.stream(HELLO))

    assert caught.value.retryable


async def test_tool_use_is_returned_as_tool_calls(connect: Connect) -> None:
    exchange = Exchange(
        message(
            [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
            ],
            stop_reason="tool_use",
        )
    )
    tool = ToolSpec(
        name="weather",
        description="Weather of a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )

    response = await connect(exchange).complete(HELLO.model_copy(update={"tools": (tool,)}))

    assert response == ModelResponse(
        text="Let me look.",
        tool_calls=(ToolCall(id="toolu_1", name="weather", arguments={"city": "Oslo"}),),
        finish_reason="tool_calls",
        usage=TokenUsage(input_tokens=12, output_tokens=5),
        model="claude-haiku-4-5-20251001",
    )
    assert exchange.body()["tools"] == [
        {"name": "weather", "description": "Weather of a city", "input_schema": tool.parameters}
    ]


async def test_tool_results_are_sent_back_in_one_user_turn(connect: Connect) -> None:
    exchange = Exchange(message([{"type": "text", "text": "Oslo 3°C, Rome 18°C."}]))
    calls = (
        ToolCall(id="toolu_1", name="weather", arguments={"city": "Oslo"}),
        ToolCall(id="toolu_2", name="weather", arguments={"city": "Rome"}),
    )
    request = ModelRequest(
        messages=(
            ChatMessage(role="user", content="Weather in Oslo and Rome?"),
            ChatMessage(role="assistant", content="Checking.", tool_calls=calls),
            ChatMessage(role="tool", content="3°C", tool_call_id="toolu_1"),
            ChatMessage(role="tool", content="18°C", tool_call_id="toolu_2"),
        )
    )

    await connect(exchange).complete(request)

    assert exchange.body()["messages"] == [
        {"role": "user", "content": "Weather in Oslo and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "3°C"},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "18°C"},
            ],
        },
    ]


async def test_structured_output_uses_the_api_json_schema_format(connect: Connect) -> None:
    exchange = Exchange(message([{"type": "text", "text": '{"answer":42}'}]))
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer", "minimum": 0}},
        "required": ["answer"],
    }

    response = await connect(exchange).complete(
        HELLO.model_copy(update={"output_schema": schema, "output_name": "result"})
    )

    assert response.text == '{"answer":42}'
    # The SDK's transform_schema closes objects and moves unsupported limits to descriptions.
    assert exchange.body()["output_config"] == {
        "format": {
            "type": "json_schema",
            "schema": {
                "type": "object",
                "properties": {"answer": {"type": "integer", "description": "{minimum: 0}"}},
                "additionalProperties": False,
                "required": ["answer"],
            },
        }
    }
    assert "tool_choice" not in exchange.body()


async def test_unusable_output_schema_raises_a_provider_error_not_to_retry(
    connect: Connect,
) -> None:
    exchange = Exchange()
    untyped = {"description": "anything at all"}

    with pytest.raises(ProviderError, match="'result' is not usable") as caught:
        await connect(exchange).complete(
            HELLO.model_copy(update={"output_schema": untyped, "output_name": "result"})
        )

    assert not caught.value.retryable
    assert exchange.requests == []


async def test_cached_tokens_are_part_of_input_tokens(connect: Connect) -> None:
    usage = {
        "input_tokens": 10,
        "cache_read_input_tokens": 900,
        "cache_creation_input_tokens": 50,
        "output_tokens": 4,
    }
    model = connect(Exchange(message([{"type": "text", "text": "ok"}], usage=usage)))

    response = await model.complete(HELLO)

    assert response.usage == TokenUsage(
        input_tokens=960, output_tokens=4, cached_tokens=900, cache_write_tokens=50
    )


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
    ],
)
async def test_stop_reason_becomes_finish_reason(
    connect: Connect, stop_reason: str, finish_reason: FinishReason
) -> None:
    model = connect(Exchange(message([{"type": "text", "text": "x"}], stop_reason=stop_reason)))

    response = await model.complete(HELLO)

    assert response.finish_reason == finish_reason


async def test_rate_limit_is_retried_after_retry_after(connect: Connect) -> None:
    exchange = Exchange(
        error(429, "rate_limit_error", "Slow down", **{"retry-after": "0.001"}),
        message([{"type": "text", "text": "Hello!"}]),
    )

    response = await connect(exchange, max_retries=2).complete(HELLO)

    assert response.text == "Hello!"
    assert len(exchange.requests) == 2


async def test_rate_limit_after_retries_raises_rate_limited(connect: Connect) -> None:
    exchange = Exchange(error(429, "rate_limit_error", "Slow down"))

    with pytest.raises(RateLimitedError, match="429: Slow down"):
        await connect(exchange).complete(HELLO)


async def test_unauthorized_raises_auth_failed_without_the_key(connect: Connect) -> None:
    exchange = Exchange(error(401, "authentication_error", "invalid x-api-key"))

    with pytest.raises(AuthFailedError) as caught:
        await connect(exchange, max_retries=2).complete(HELLO)

    assert caught.value.message == "Anthropic answered 401: invalid x-api-key"
    assert KEY not in repr(caught.value)
    assert len(exchange.requests) == 1


async def test_bad_request_raises_a_provider_error_not_to_retry(connect: Connect) -> None:
    exchange = Exchange(error(400, "invalid_request_error", "messages: field required"))

    with pytest.raises(ProviderError) as caught:
        await connect(exchange, max_retries=2).complete(HELLO)

    assert caught.value.message == "Anthropic answered 400: messages: field required"
    assert not caught.value.retryable
    assert len(exchange.requests) == 1


async def test_server_error_after_retries_raises_a_retryable_provider_error(
    connect: Connect,
) -> None:
    failure = error(500, "api_error", "Internal server error", **{"retry-after": "0.001"})
    exchange = Exchange(failure, failure, failure)

    with pytest.raises(ProviderError, match="500: Internal server error") as caught:
        await connect(exchange, max_retries=2).complete(HELLO)

    assert caught.value.retryable
    assert len(exchange.requests) == 3


async def test_overloaded_raises_a_retryable_provider_error(connect: Connect) -> None:
    exchange = Exchange(error(529, "overloaded_error", "Overloaded"))

    with pytest.raises(ProviderError, match="529: Overloaded") as caught:
        await connect(exchange).complete(HELLO)

    assert caught.value.retryable


async def test_timeout_raises_mesh_timeout(connect: Connect) -> None:
    exchange = Exchange(httpx2.ReadTimeout("read timed out"))

    with pytest.raises(MeshTimeoutError):
        await connect(exchange).complete(HELLO)


async def test_connection_failure_raises_a_retryable_provider_error(connect: Connect) -> None:
    exchange = Exchange(httpx2.ConnectError("connection refused"))

    with pytest.raises(ProviderError, match="could not reach Anthropic") as caught:
        await connect(exchange).complete(HELLO)

    assert caught.value.retryable


@pytest.mark.parametrize(
    "body",
    [
        b"<html>Bad gateway</html>",
        b'{"id": "msg_01", "type": "message"}',
        b'{"type": "message", "content": [], "model": "m", "usage": {"input_tokens": "many"}}',
    ],
    ids=["not-json", "fields-missing", "usage-not-a-number"],
)
async def test_malformed_body_raises_a_retryable_provider_error(
    connect: Connect, body: bytes
) -> None:
    answer = httpx2.Response(200, content=body, headers={"content-type": "application/json"})

    with pytest.raises(ProviderError, match="malformed") as caught:
        await connect(Exchange(answer)).complete(HELLO)

    assert caught.value.retryable


async def test_key_comes_from_the_environment_when_not_configured(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-env")
    exchange = Exchange(message([{"type": "text", "text": "Hi"}]))

    await connect(exchange, key=None).complete(HELLO)

    assert exchange.requests[0].headers["authorization"] == "Bearer sk-ant-from-env"


async def test_no_key_anywhere_raises_auth_failed_before_sending(
    connect: Connect, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("ANTHROPIC_CONFIG_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no profile on disk either
    exchange = Exchange()

    with pytest.raises(AuthFailedError, match="ANTHROPIC_API_KEY"):
        await connect(exchange, key=None).complete(HELLO)

    assert exchange.requests == []


async def test_repr_shows_the_name_only(connect: Connect) -> None:
    model: Model = connect(Exchange())  # and mypy checks that it is a Model

    assert (repr(model), model.name) == (f"AnthropicModel('{model.name}')", f"anthropic:{MODEL}")
    assert KEY not in repr(model)


async def test_sdk_tracing_is_off(connect: Connect, monkeypatch: pytest.MonkeyPatch) -> None:
    # With its tracing on, the SDK opens a span under the current one and sends its traceparent.
    monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "true")
    exchange = Exchange(message([{"type": "text", "text": "Hi"}]))
    model = connect(exchange)
    parent = SpanContext(trace_id=0x1234, span_id=0x5678, is_remote=True, trace_flags=TraceFlags(1))

    with trace.use_span(NonRecordingSpan(parent)):
        await model.complete(HELLO)

    assert "traceparent" not in exchange.requests[0].headers


# Not claude-3-5-haiku-latest: Claude 3.5 Haiku was retired in February 2026, and requests to it
# fail; claude-haiku-4-5 is its replacement (and in this SDK's model list).
LIVE_MODEL = os.environ.get("MESH_ANTHROPIC_LIVE_MODEL", "claude-haiku-4-5")


@pytest.mark.skipif(
    not os.environ.get("ANTHROPIC_API_KEY"),
    reason="live Anthropic test: set ANTHROPIC_API_KEY to run it",
)
async def test_live_completion_reports_usage() -> None:
    model = AnthropicModel(LIVE_MODEL, ProviderConfig(max_retries=1))
    try:
        response = await model.complete(
            ModelRequest(messages=(ChatMessage(role="user", content="Say hi."),), max_tokens=16)
        )
    finally:
        await model.aclose()

    assert response.text
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0


# -- tokens and cost, as the mesh measures each call -------------------------------------------

# claude-haiku-4-5 in genai-prices, per million tokens: $1 input, $0.10 cache read,
# $1.25 cache write, $5 output.


async def test_call_is_measured_at_the_price_data_cost(connect: Connect) -> None:
    (call,) = await measured_calls(
        connect(Exchange(message([{"type": "text", "text": "Hi"}]))), HELLO
    )
    assert (call.model, call.input_tokens, call.output_tokens, call.ok) == (
        "anthropic:claude-haiku-4-5",
        12,
        5,
        True,
    )
    assert call.cost_usd == pytest.approx((12 * 1.0 + 5 * 5.0) / 1_000_000)


async def test_cache_reads_and_writes_are_priced_apart(connect: Connect) -> None:
    usage = {
        "input_tokens": 10,
        "cache_read_input_tokens": 900,
        "cache_creation_input_tokens": 50,
        "output_tokens": 4,
    }
    exchange = Exchange(message([{"type": "text", "text": "ok"}], usage=usage))
    (call,) = await measured_calls(connect(exchange), HELLO)
    assert call.cost_usd == pytest.approx((10 * 1.0 + 900 * 0.10 + 50 * 1.25 + 4 * 5.0) / 1e6)


async def test_rate_limited_then_served_call_is_measured_once(connect: Connect) -> None:
    exchange = Exchange(
        error(429, "rate_limit_error", "slow down", **{"retry-after": "0.001"}),
        message([{"type": "text", "text": "Hi"}]),
    )
    (call,) = await measured_calls(connect(exchange, max_retries=1), HELLO)
    assert (call.ok, call.input_tokens, call.output_tokens) == (True, 12, 5)
    assert call.cost_usd == pytest.approx(37 / 1_000_000)


async def test_streamed_call_is_measured_with_its_stream_usage(connect: Connect) -> None:
    (call,) = await measured_calls(connect(Exchange(sse(*STREAMED))), HELLO, stream=True)
    assert (call.streamed, call.input_tokens, call.cached_tokens, call.output_tokens) == (
        True,
        28,
        8,
        7,
    )
    assert call.cost_usd == pytest.approx((20 * 1.0 + 8 * 0.10 + 7 * 5.0) / 1_000_000)


async def test_failed_call_is_measured_as_failed_and_free(connect: Connect) -> None:
    exchange = Exchange(error(401, "authentication_error", "invalid x-api-key"))
    (call,) = await measured_calls(connect(exchange), HELLO)
    assert (call.ok, call.error_code, call.cost_usd) == (False, "auth_failed", 0.0)
