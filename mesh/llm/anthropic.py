"""The Anthropic provider: `AnthropicModel`, on the official SDK's async Messages client.

What the mapping does that is not one-to-one (the API version is the SDK's, ``2026-10-21``):

- ``max_tokens`` is required by the Messages API: a request without one is sent with
  `DEFAULT_MAX_TOKENS`.
- ``temperature`` is **not sent**. This API version rejects sampling parameters on every model
  (even ``1.0`` is a 400), and SDK 2.x has no argument for them; a request's temperature is
  therefore ignored for Anthropic models.
- Tool results (``tool`` messages) become ``tool_result`` blocks of a user turn; consecutive
  results share one turn, as the API requires.
- Structured output uses the API's own support (``output_config.format``, a JSON schema made
  API-compatible by the SDK's ``transform_schema``); the JSON document comes back as the text.
- ``input_tokens`` include the cache reads and writes that Anthropic reports apart;
  ``cached_tokens`` are the cache reads, ``cache_write_tokens`` the writes.

Retries with backoff (honouring ``Retry-After``) are the SDK's own. The SDK's OpenTelemetry
spans are switched off: the mesh instruments model calls itself and must not count them twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import httpx2
from anthropic.types import Message, MessageParam, ToolParam, Usage
from anthropic.types.message_create_params import MessageCreateParamsBase

from mesh.errors import (
    AuthFailedError,
    MeshError,
    MeshTimeoutError,
    ProviderError,
    RateLimitedError,
)
from mesh.llm.model import ProviderConfig
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
)

__all__ = ["DEFAULT_MAX_TOKENS", "AnthropicModel"]

DEFAULT_MAX_TOKENS = 1024
"""Output-token cap sent when a request has none (the Messages API requires one)."""

_FINISH_REASONS: dict[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# An error event inside a 200 stream has no status of its own: use the one its type has.
_STATUS_OF_ERROR_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}

# What a call may raise that is not ours: the SDK's errors, httpx2's while a stream is read, and
# what reading or mapping an answer that is not what the API documents raises.
_FOREIGN = (anthropic.AnthropicError, httpx2.HTTPError, ValueError, TypeError, AttributeError)


class AnthropicModel:
    """A Claude model behind the Anthropic Messages API; satisfies `mesh.llm.model.Model`.

    Args:
        model: The API's model id (e.g. ``claude-haiku-4-5``).
        config: Key, URL, timeout and retries; without a key the SDK reads
            ``ANTHROPIC_API_KEY`` (or its other credential sources).
        http_client: The SDK's HTTP client to send through (tests pass one with a mock
            transport); by default the SDK makes its own.

    Raises:
        AuthFailedError: A credential source the SDK was pointed at could not be loaded.
    """

    def __init__(
        self, model: str, config: ProviderConfig, *, http_client: httpx2.AsyncClient | None = None
    ) -> None:
        self._model = model
        key = config.api_key.get_secret_value() if config.api_key is not None else None
        try:
            self._client = anthropic.AsyncAnthropic(
                api_key=key,
                base_url=config.base_url,
                timeout=config.timeout,
                max_retries=config.max_retries,
                http_client=http_client,
                open_telemetry=False,
            )
        except anthropic.AnthropicError as exc:
            raise _translate_error(exc) from exc
        client = self._client
        self._has_credentials = any(
            source is not None for source in (client.api_key, client.auth_token, client.credentials)
        )

    @property
    def name(self) -> str:
        """``anthropic:<model>``."""
        return f"anthropic:{self._model}"

    def __repr__(self) -> str:
        return f"AnthropicModel({self.name!r})"

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer ``request`` in one piece.

        Raises:
            RateLimitedError, MeshTimeoutError, AuthFailedError, ProviderError: As
                `mesh.llm.model.Model` says. A request the API cannot take (a tool message
                without its call id, an output schema it cannot use) is a `ProviderError`
                that is not retryable.
        """
        params = self._params(request)
        try:
            message = await self._client.messages.create(**params)
            return _response(message)
        except _FOREIGN as exc:
            raise _translate_error(exc) from exc

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """Answer ``request`` as text deltas, then one `Completed` (usage from the stream).

        Raises:
            RateLimitedError, MeshTimeoutError, AuthFailedError, ProviderError: As `complete`;
                also a retryable `ProviderError` when the stream breaks or ends early.
        """
        params = self._params(request)
        try:
            async with self._client.messages.stream(**params) as events:
                finished = False
                async for event in events:
                    if event.type == "content_block_delta" and event.delta.type == "text_delta":
                        yield TextDelta(text=event.delta.text)
                    finished = finished or event.type == "message_stop"
                if not finished:
                    raise ProviderError("Anthropic's stream was cut short", retryable=True)
                response = _response(await events.get_final_message())
        except _FOREIGN as exc:
            raise _translate_error(exc) from exc
        yield Completed(response=response)

    async def aclose(self) -> None:
        """Close the SDK client and its connections (a client passed in is closed too)."""
        await self._client.close()

    def _params(self, request: ModelRequest) -> MessageCreateParamsBase:
        if not self._has_credentials:
            raise AuthFailedError(
                "no Anthropic API key: set the provider's api_key or ANTHROPIC_API_KEY"
            )
        params: MessageCreateParamsBase = {
            "model": self._model,
            "max_tokens": DEFAULT_MAX_TOKENS if request.max_tokens is None else request.max_tokens,
            "messages": _messages(request.messages),
        }
        if request.system:
            params["system"] = request.system
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        if request.tools:
            params["tools"] = [
                _tool(spec.name, spec.description, spec.parameters) for spec in request.tools
            ]
        if request.output_schema is not None:
            try:
                schema = anthropic.transform_schema(request.output_schema)
            except ValueError as exc:
                raise ProviderError(
                    f"output schema {request.output_name!r} is not usable for Anthropic "
                    f"structured output: {exc}",
                    retryable=False,
                ) from exc
            params["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        return params


def _translate_error(exc: BaseException) -> MeshError:
    """The mesh error for a failure of the SDK or of its answer; raise it ``from exc``.

    429 is `RateLimitedError`; 529 (overloaded) is a retryable `ProviderError`, since the
    provider is short of capacity rather than asking this client to slow down. The message has
    the status and the provider's own error text, never the key nor ``repr(exc)``.
    """
    if isinstance(exc, anthropic.APITimeoutError | httpx2.TimeoutException):
        return MeshTimeoutError("Anthropic did not answer in time")
    if isinstance(exc, anthropic.APIConnectionError | httpx2.TransportError):
        return ProviderError("could not reach Anthropic (connection failed)", retryable=True)
    if isinstance(exc, anthropic.CredentialsError):
        return AuthFailedError("Anthropic credentials could not be loaded")
    if isinstance(exc, anthropic.APIStatusError):
        status = exc.status_code
        if status < 400:  # an error event in a stream that had started fine
            status = _STATUS_OF_ERROR_TYPE.get(str(exc.type), 500)
        text = exc.api_message or str(exc.type or "no error message")
        message = f"Anthropic answered {status}: {text}"
        if status == 429:
            return RateLimitedError(message)
        if status in (401, 403):
            return AuthFailedError(message)
        if status == 408:
            return MeshTimeoutError(message)
        return ProviderError(message, retryable=status >= 500 or status == 409)
    if isinstance(exc, anthropic.AnthropicError) and not isinstance(
        exc, anthropic.APIResponseValidationError
    ):
        return ProviderError(f"Anthropic client failed: {type(exc).__name__}", retryable=False)
    return ProviderError("Anthropic sent a malformed answer", retryable=True)


def _messages(messages: tuple[ChatMessage, ...]) -> list[MessageParam]:
    turns: list[MessageParam] = []
    # The tool_result blocks of the last turn, while it is one; a tool message adds to it.
    results: list[Any] = []
    for message in messages:
        if message.role == "tool":
            if message.tool_call_id is None:
                raise ProviderError(
                    "a tool message needs the tool_call_id it answers", retryable=False
                )
            if not results:
                turns.append({"role": "user", "content": results})
            results.append(
                {
                    "type": "tool_result",
                    "tool_use_id": message.tool_call_id,
                    "content": message.content,
                }
            )
            continue
        results = []
        if message.role == "user":
            turns.append({"role": "user", "content": message.content})
        elif not message.tool_calls:
            turns.append({"role": "assistant", "content": message.content})
        else:
            blocks: list[Any] = (
                [{"type": "text", "text": message.content}] if message.content else []
            )
            blocks += [
                {"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments}
                for call in message.tool_calls
            ]
            turns.append({"role": "assistant", "content": blocks})
    return turns


def _tool(name: str, description: str, schema: dict[str, Any]) -> ToolParam:
    tool: ToolParam = {"name": name, "input_schema": schema}
    if description:
        tool["description"] = description
    return tool


def _response(message: Message) -> ModelResponse:
    text: list[str] = []
    calls: list[ToolCall] = []
    for block in message.content:
        if block.type == "text":
            text.append(block.text)
        elif block.type == "tool_use":
            calls.append(ToolCall(id=block.id, name=block.name, arguments=block.input))
    return ModelResponse(
        text="".join(text),
        tool_calls=tuple(calls),
        finish_reason=_FINISH_REASONS.get(str(message.stop_reason), "stop"),
        usage=_usage(message.usage),
        model=message.model,
    )


def _usage(usage: Usage) -> TokenUsage:
    read = usage.cache_read_input_tokens or 0
    written = usage.cache_creation_input_tokens or 0
    return TokenUsage(
        input_tokens=usage.input_tokens + read + written,
        output_tokens=usage.output_tokens,
        cached_tokens=read,
        cache_write_tokens=written,
    )
