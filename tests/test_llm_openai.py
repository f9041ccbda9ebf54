"""The OpenAI adapter against HTTP exchanges built here, through the SDK's own HTTP client."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from pydantic import SecretStr

from mesh.errors import (
    AuthFailedError,
    MeshTimeoutError,
    ProviderError,
    RateLimitedError,
)
from mesh.llm.model import ProviderConfig
from mesh.llm.openai import OpenAIModel
from mesh.llm.types import (
    ChatMessage,
    Completed,
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

KEY = "sk-test-0123456789abcdefSECRET"
SERVED_MODEL = "gpt-4o-mini-2024-07-18"
USAGE = {
    "prompt_tokens": 21,
    "completion_tokens": 7,
    "total_tokens": 28,
    "prompt_tokens_details": {"cached_tokens": 5},
}
HELLO = ModelRequest(messages=(ChatMessage(role="user", content="Hello"),))


@dataclass
class Server:
    """Answers each request with the next scripted response, and keeps what it was sent."""

    responses: list[httpx2.Response | Exception]
    requests: list[httpx2.Request] = field(default_factory=list)

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        response = self.responses.pop(0)
        if isinstance(response, Exception):
            raise response
        return response

    def body(self, index: int = 0) -> Any:
        return json.loads(self.requests[index].content)


Connect = Callable[..., OpenAIModel]


@pytest.fixture(autouse=True)
def _no_ambient_openai_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_CUSTOM_HEADERS", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
async def connect() -> AsyncIterator[Connect]:
    """Builds models whose HTTP client answers from a `Server`; closes them after the test."""
    models: list[OpenAIModel] = []

    def make(
        server: Server,
        *,
        model: str = "gpt-4o-mini",
        provider: str = "openai",
        base_url: str | None = None,
        max_retries: int = 2,
    ) -> OpenAIModel:
        config = ProviderConfig(
            api_key=SecretStr(KEY) if provider == "openai" else None,
            base_url=base_url,
            timeout=5,
            max_retries=max_retries,
        )
        client = httpx2.AsyncClient(transport=httpx2.MockTransport(server))
        models.append(OpenAIModel(model, config, provider=provider, http_client=client))
        return models[-1]

    yield make
    for model in models:
        await model.aclose()


def completion(message: dict[str, Any], *, finish: str = "stop") -> httpx2.Response:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": SERVED_MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "refusal": None, **message},
                "logprobs": None,
                "finish_reason": finish,
            }
        ],
        "usage": USAGE,
    }
    return httpx2.Response(200, json=body)


def chunks(*chunks: dict[str, Any]) -> httpx2.Response:
    """A server-sent event stream of chat completion chunks, ended by ``[DONE]``."""
    events = [
        "data: "
        + json.dumps(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": SERVED_MODEL,
                "usage": None,
                **chunk,
            }
        )
        for chunk in chunks
    ]
    text = "\n\n".join([*events, "data: [DONE]"]) + "\n\n"
    return httpx2.Response(200, text=text, headers={"content-type": "text/event-stream"})


def delta(finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def error(status: int, message: str, **headers: str) -> httpx2.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "code": None}}
    return httpx2.Response(status, json=body, headers=headers)


async def test_complete_maps_text_finish_reason_usage_and_model(connect: Connect) -> None:
    model = connect(Server([completion({"content": "Hi there"})]))

    response = await model.complete(HELLO)

    assert response == ModelResponse(
        text="Hi there",
        finish_reason="stop",
        usage=TokenUsage(input_tokens=21, output_tokens=7, cached_tokens=5),
        model=SERVED_MODEL,
    )


async def test_complete_sends_the_whole_request(connect: Connect) -> None:
    server = Server([completion({"content": "{}"})])
    model = connect(server)
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    weather = ToolSpec(
        name="weather",
        description="Weather in a city",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}},
    )
    request = ModelRequest(
        system="Be brief.",
        messages=(
            ChatMessage(role="user", content="Weather in Paris?"),
            ChatMessage(
                role="assistant",
                tool_calls=(ToolCall(id="call_1", name="weather", arguments={"city": "Paris"}),),
            ),
            ChatMessage(role="tool", content="Sunny", tool_call_id="call_1"),
        ),
        temperature=0.2,
        max_tokens=50,
        stop=("END",),
        tools=(weather,),
        output_schema=schema,
        output_name="answer",
    )

    await model.complete(request)

    assert str(server.requests[0].url) == "https://api.openai.com/v1/chat/completions"
    assert server.body() == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "content": "Sunny", "tool_call_id": "call_1"},
        ],
        "temperature": 0.2,
        "max_completion_tokens": 50,
        "stop": ["END"],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "Weather in a city",
                    "parameters": weather.parameters,
                },
            }
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": schema, "strict": False},
        },
    }


async def test_closed_output_schema_asks_for_strict_mode(connect: Connect) -> None:
    server = Server([completion({"content": "{}"})])
    model = connect(server)
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string"}},
        "required": ["answer"],
        "additionalProperties": False,
    }

    await model.complete(HELLO.model_copy(update={"output_schema": schema}))

    assert server.body()["response_format"]["json_schema"]["strict"] is True


async def test_key_is_sent_as_a_bearer_token(connect: Connect) -> None:
    server = Server([completion({"content": "Hi"})])

    await connect(server).complete(HELLO)

    assert server.requests[0].headers["authorization"] == f"Bearer {KEY}"


async def test_stream_yields_deltas_then_completed_with_usage(connect: Connect) -> None:
    server = Server(
        [
            chunks(
                delta(role="assistant", content=""),
                delta(content="Hi"),
                delta(content=" there"),
                delta(finish="stop"),
                {"choices": [], "usage": USAGE},
            )
        ]
    )
    model = connect(server)

    events: list[StreamEvent] = [event async for event in model.stream(HELLO)]

    assert events == [
        TextDelta(text="Hi"),
        TextDelta(text=" there"),
        Completed(
            response=ModelResponse(
                text="Hi there",
                usage=TokenUsage(input_tokens=21, output_tokens=7, cached_tokens=5),
                model=SERVED_MODEL,
            )
        ),
    ]
    assert server.body()["stream"] is True
    assert server.body()["stream_options"] == {"include_usage": True}


async def test_error_event_in_a_stream_raises_a_retryable_provider_error(
    connect: Connect,
) -> None:
    server = Server([chunks(delta(content="Hi"), {"error": {"message": "Overloaded"}})])
    stream = connect(server).stream(HELLO)
    first = await anext(stream)

    with pytest.raises(ProviderError) as caught:
        await anext(stream)

    assert first == TextDelta(text="Hi")
    assert (caught.value.message, caught.value.retryable) == (
        "openai:gpt-4o-mini: Overloaded",
        True,
    )


async def test_tool_call_arguments_are_parsed(connect: Connect) -> None:
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "weather", "arguments": '{"city": "Paris", "days": 2}'},
    }
    model = connect(
        Server([completion({"content": None, "tool_calls": [call]}, finish="tool_calls")])
    )

    response = await model.complete(HELLO)

    assert response == ModelResponse(
        tool_calls=(ToolCall(id="call_1", name="weather", arguments={"city": "Paris", "days": 2}),),
        finish_reason="tool_calls",
        usage=TokenUsage(input_tokens=21, output_tokens=7, cached_tokens=5),
        model=SERVED_MODEL,
    )


async def test_streamed_tool_call_is_put_together(connect: Connect) -> None:
    first = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "weather"}}
    parts = [{"index": 0, "function": {"arguments": text}} for text in ('{"city"', ': "Paris"}')]
    server = Server(
        [
            chunks(
                delta(role="assistant", tool_calls=[first]),
                delta(tool_calls=[parts[0]]),
                delta(tool_calls=[parts[1]]),
                delta(finish="tool_calls"),
            )
        ]
    )

    events = [event async for event in connect(server).stream(HELLO)]

    assert events == [
        Completed(
            response=ModelResponse(
                tool_calls=(ToolCall(id="call_1", name="weather", arguments={"city": "Paris"}),),
                finish_reason="tool_calls",
                model=SERVED_MODEL,
            )
        )
    ]


async def test_unparseable_tool_arguments_raise_a_retryable_provider_error(
    connect: Connect,
) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{"}}
    model = connect(Server([completion({"content": None, "tool_calls": [call]})]))

    with pytest.raises(ProviderError, match="arguments of tool call 'weather'") as caught:
        await model.complete(HELLO)

    assert caught.value.retryable is True


async def test_rate_limit_is_retried_after_retry_after(connect: Connect) -> None:
    server = Server(
        [
            error(429, "Rate limit reached", **{"retry-after-ms": "10"}),
            completion({"content": "Hi"}),
        ]
    )

    response = await connect(server).complete(HELLO)

    assert response.text == "Hi"
    assert len(server.requests) == 2


async def test_rate_limit_without_retries_left_raises_rate_limited(connect: Connect) -> None:
    model = connect(Server([error(429, "Rate limit reached")]), max_retries=0)

    with pytest.raises(RateLimitedError) as caught:
        await model.complete(HELLO)

    assert (caught.value.message, caught.value.retryable) == (
        "openai:gpt-4o-mini: HTTP 429: Rate limit reached",
        True,
    )


async def test_401_raises_auth_failed_without_the_key(connect: Connect) -> None:
    model = connect(Server([error(401, f"Incorrect API key provided: {KEY}.")]))

    with pytest.raises(AuthFailedError) as caught:
        await model.complete(HELLO)

    assert (caught.value.message, caught.value.retryable) == (
        "openai:gpt-4o-mini: HTTP 401: Incorrect API key provided: ***.",
        False,
    )
    assert "SECRET" not in repr(caught.value)


async def test_400_raises_a_provider_error_that_is_not_retryable(connect: Connect) -> None:
    server = Server([error(400, "Invalid value for 'temperature'")])

    with pytest.raises(ProviderError) as caught:
        await connect(server).complete(HELLO)

    assert (caught.value.message, caught.value.retryable) == (
        "openai:gpt-4o-mini: HTTP 400: Invalid value for 'temperature'",
        False,
    )
    assert len(server.requests) == 1


async def test_500_after_retries_raises_a_retryable_provider_error(connect: Connect) -> None:
    failures: list[httpx2.Response | Exception] = [
        error(500, "The server had an error", **{"retry-after-ms": "1"}) for _ in range(3)
    ]
    server = Server(failures)

    with pytest.raises(ProviderError) as caught:
        await connect(server, max_retries=2).complete(HELLO)

    assert (caught.value.message, caught.value.retryable) == (
        "openai:gpt-4o-mini: HTTP 500: The server had an error",
        True,
    )
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    "response",
    [
        httpx2.Response(200, text="{not json", headers={"content-type": "application/json"}),
        httpx2.Response(
            200, text="<html>Bad gateway</html>", headers={"content-type": "text/html"}
        ),
        httpx2.Response(200, json={"choices": None}),
        httpx2.Response(200, json={"choices": [{"message": "Hi"}]}),
    ],
    ids=["invalid-json", "html", "no-choices", "message-not-an-object"],
)
async def test_malformed_body_raises_a_retryable_provider_error(
    connect: Connect, response: httpx2.Response
) -> None:
    model = connect(Server([response]))

    with pytest.raises(ProviderError, match="malformed response") as caught:
        await model.complete(HELLO)

    assert caught.value.retryable is True


async def test_timeout_raises_mesh_timeout(connect: Connect) -> None:
    model = connect(Server([httpx2.ReadTimeout("read timed out")]), max_retries=0)

    with pytest.raises(MeshTimeoutError):
        await model.complete(HELLO)


async def test_connection_failure_raises_a_retryable_provider_error(connect: Connect) -> None:
    model = connect(Server([httpx2.ConnectError("connection refused")]), max_retries=0)

    with pytest.raises(ProviderError) as caught:
        await model.complete(HELLO)

    assert (caught.value.message, caught.value.retryable) == (
        "openai:gpt-4o-mini: could not connect",
        True,
    )


async def test_compatible_server_is_reached_at_its_base_url(connect: Connect) -> None:
    server = Server([completion({"content": "Hi"})])
    model = connect(server, provider="openai-compatible", base_url="http://localhost:11434/v1")

    await model.complete(HELLO)

    assert str(server.requests[0].url) == "http://localhost:11434/v1/chat/completions"


async def test_compatible_model_is_named_after_its_provider(connect: Connect) -> None:
    model = connect(
        Server([]), model="llama3.2:1b", provider="openai-compatible", base_url="http://h/v1"
    )

    assert model.name == "openai-compatible:llama3.2:1b"


async def test_compatible_server_gets_max_tokens(connect: Connect) -> None:
    server = Server([completion({"content": "Hi"})])
    model = connect(server, provider="openai-compatible", base_url="http://localhost:11434/v1")

    await model.complete(HELLO.model_copy(update={"max_tokens": 50}))

    assert (server.body().get("max_tokens"), "max_completion_tokens" in server.body()) == (
        50,
        False,
    )


async def test_compatible_server_never_gets_the_openai_key(
    connect: Connect, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    server = Server([completion({"content": "Hi"})])
    model = connect(server, provider="openai-compatible", base_url="http://localhost:11434/v1")

    await model.complete(HELLO)

    assert server.requests[0].headers["authorization"] == "Bearer no-key"


def test_compatible_provider_without_base_url_is_refused() -> None:
    with pytest.raises(ValueError, match="needs a base_url"):
        OpenAIModel("llama3.2:1b", ProviderConfig(), provider="openai-compatible")


def test_openai_without_a_key_raises_auth_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)

    with pytest.raises(AuthFailedError, match="no API key"):
        OpenAIModel("gpt-4o-mini", ProviderConfig())


async def test_repr_shows_the_name_only(connect: Connect) -> None:
    model = connect(Server([]))

    assert repr(model) == "OpenAIModel('openai:gpt-4o-mini')"


@pytest.mark.skipif(not os.environ.get("OPENAI_API_KEY"), reason="OPENAI_API_KEY not set")
async def test_live_openai_reports_usage() -> None:
    model = OpenAIModel("gpt-4o-mini", ProviderConfig(timeout=30))
    try:
        response = await model.complete(
            ModelRequest(messages=(ChatMessage(role="user", content="Say OK."),), max_tokens=5)
        )
    finally:
        await model.aclose()

    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0


# -- tokens and cost, as the mesh measures each call -------------------------------------------

# gpt-4o-mini in genai-prices: $0.15 per million input tokens, $0.075 cached, $0.60 output.
# USAGE: 21 input tokens of which 5 cached, 7 output.
HAND_COST = (16 * 0.15 + 5 * 0.075 + 7 * 0.60) / 1_000_000
TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
}


@pytest.mark.parametrize(
    "responses",
    [
        [completion({"content": "Hi"})],
        [completion({"content": None, "tool_calls": [TOOL_CALL]}, finish="tool_calls")],
        [error(429, "slow down", **{"retry-after-ms": "10"}), completion({"content": "Hi"})],
    ],
    ids=["completion", "tool-call", "429-then-success"],
)
async def test_call_is_measured_at_the_price_data_cost(
    connect: Connect, responses: list[httpx2.Response]
) -> None:
    (call,) = await measured_calls(connect(Server(responses), max_retries=1), HELLO)
    assert (call.model, call.input_tokens, call.cached_tokens, call.output_tokens, call.ok) == (
        "openai:gpt-4o-mini",
        21,
        5,
        7,
        True,
    )
    assert call.cost_usd == pytest.approx(HAND_COST)


async def test_streamed_call_is_measured_at_the_price_data_cost(connect: Connect) -> None:
    server = Server(
        [chunks(delta(content="Hi"), delta(finish="stop"), {"choices": [], "usage": USAGE})]
    )
    (call,) = await measured_calls(connect(server), HELLO, stream=True)
    assert (call.streamed, call.input_tokens, call.output_tokens) == (True, 21, 7)
    assert call.cost_usd == pytest.approx(HAND_COST)
    assert call.ttft_ms is not None


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (error(401, "Incorrect API key"), "auth_failed"),
        (httpx2.Response(200, text="<html>oops</html>"), "provider_error"),
    ],
    ids=["401", "malformed"],
)
async def test_failed_call_is_measured_as_failed_and_free(
    connect: Connect, response: httpx2.Response, code: str
) -> None:
    (call,) = await measured_calls(connect(Server([response])), HELLO)
    assert (call.ok, call.error_code, call.cost_usd, call.input_tokens) == (False, code, 0.0, 0)
