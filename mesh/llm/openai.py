"""`OpenAIModel`: the OpenAI Chat Completions API, and every server that speaks it.

Ollama, vLLM and llama.cpp serve the same API at their own ``base_url``; name such a provider
anything but ``"openai"`` (``"openai-compatible"``) and the adapter adjusts to it: it sends
``max_tokens`` instead of OpenAI's ``max_completion_tokens``, never falls back to
``OPENAI_API_KEY`` (that key must not leave for another server) and, without a key of its own,
sends a placeholder because the SDK refuses to start without one.

Retries with backoff that honours ``Retry-After`` are the SDK's own. The SDK builds its
response objects leniently (unknown enum values pass); the adapter then checks the shape of
what it reads, so a malformed answer becomes a retryable `ProviderError`.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import openai
from openai.types.chat import (
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
)
from openai.types.chat.completion_create_params import CompletionCreateParamsBase
from openai.types.shared_params import FunctionDefinition
from pydantic import BaseModel, ConfigDict, ValidationError

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
    ToolSpec,
)

__all__ = ["OpenAIModel", "translate_error"]

_PLACEHOLDER_KEY = "no-key"
"""Sent to an OpenAI-compatible server configured without a key (most local ones ignore it)."""

_FOREIGN = (openai.OpenAIError, json.JSONDecodeError, ValidationError)
"""What a call may raise that `translate_error` turns into a mesh error."""

_FINISH: dict[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


class OpenAIModel:
    """A chat model behind the OpenAI Chat Completions API.

    Args:
        model: The model's id on the server (``gpt-4o-mini``, ``llama3.2:1b``).
        config: Key, URL, timeout and retries; a ``None`` key reads ``OPENAI_API_KEY`` for the
            ``openai`` provider only.
        provider: ``"openai"``, or the name of an OpenAI-compatible provider (needs ``base_url``).
        http_client: The SDK's HTTP client (e.g. with a mock transport); the model closes it.
        name: The mesh's name for it, when that is not ``provider:model`` (a compatible server
            declared as ``openai-compatible:<key>`` serving another model id).

    Raises:
        AuthFailedError: The ``openai`` provider has no key, in the config or the environment.
        ValueError: An OpenAI-compatible provider has no ``base_url``.
    """

    def __init__(
        self,
        model: str,
        config: ProviderConfig,
        *,
        provider: str = "openai",
        http_client: httpx2.AsyncClient | None = None,
        name: str | None = None,
    ) -> None:
        self._model = model
        self._provider = provider
        self._name = name or f"{provider}:{model}"
        self._is_openai = provider == "openai"
        key = config.api_key.get_secret_value() if config.api_key is not None else None
        if not self._is_openai:
            if config.base_url is None:
                raise ValueError(f"provider {provider!r} is OpenAI-compatible: it needs a base_url")
            key = key or _PLACEHOLDER_KEY
        try:
            self._client = openai.AsyncOpenAI(
                api_key=key,
                base_url=config.base_url,
                timeout=config.timeout,
                max_retries=config.max_retries,
                http_client=http_client,
            )
        except openai.OpenAIError as exc:  # the SDK's "Missing credentials"
            raise AuthFailedError(
                f"{self.name}: no API key (set OPENAI_API_KEY or the provider's api_key)"
            ) from exc
        key = self._client.api_key  # possibly read from OPENAI_API_KEY
        self._secrets = (key,) if key and key != _PLACEHOLDER_KEY else ()

    @property
    def name(self) -> str:
        """``provider:model``, e.g. ``openai:gpt-4o-mini``, ``openai-compatible:local``."""
        return self._name

    def __repr__(self) -> str:
        return f"OpenAIModel({self.name!r})"

    async def aclose(self) -> None:
        """Close the HTTP client and its connections."""
        await self._client.close()

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Answer ``request`` in one piece (`mesh.llm.model.Model` lists what it raises)."""
        answer = _Answer(model=self._model)
        try:
            raw = await self._client.chat.completions.create(**self._params(request))
            completion = _Completion.model_validate(raw, from_attributes=True)
        except _FOREIGN as exc:
            raise translate_error(exc, self.name, self._secrets) from exc
        if not completion.choices or completion.choices[0].message is None:
            raise ProviderError(f"{self.name}: malformed response (no message)", retryable=True)
        answer.add(completion)
        return answer.response(self.name)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        """Answer ``request`` as text deltas, then one `Completed` carrying the usage."""
        answer = _Answer(model=self._model)
        params = self._params(request)
        params["stream_options"] = {"include_usage": True}
        try:
            chunks = await self._client.chat.completions.create(**params, stream=True)
            async with chunks:
                async for raw in chunks:
                    text = answer.add(_Completion.model_validate(raw, from_attributes=True))
                    if text:
                        yield TextDelta(text=text)
        except _FOREIGN as exc:
            raise translate_error(exc, self.name, self._secrets) from exc
        yield Completed(response=answer.response(self.name))

    def _params(self, request: ModelRequest) -> CompletionCreateParamsBase:
        messages: list[ChatCompletionMessageParam] = []
        if request.system is not None:
            messages.append({"role": "system", "content": request.system})
        messages.extend(_message(m) for m in request.messages)
        params: CompletionCreateParamsBase = {"model": self._model, "messages": messages}
        if request.temperature is not None:
            params["temperature"] = request.temperature
        # OpenAI's reasoning models refuse max_tokens; local servers know only max_tokens.
        if request.max_tokens is not None and self._is_openai:
            params["max_completion_tokens"] = request.max_tokens
        elif request.max_tokens is not None:
            params["max_tokens"] = request.max_tokens
        if request.stop:
            params["stop"] = list(request.stop)
        if request.tools:
            params["tools"] = [_tool(spec) for spec in request.tools]
        if request.output_schema is not None:
            params["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.output_name,
                    "schema": request.output_schema,
                    "strict": _allows_strict(request.output_schema),
                },
            }
        return params


def _message(message: ChatMessage) -> ChatCompletionMessageParam:
    if message.role == "user":
        return {"role": "user", "content": message.content}
    if message.role == "tool":
        return {
            "role": "tool",
            "content": message.content,
            "tool_call_id": message.tool_call_id or "",
        }
    if not message.tool_calls:
        return {"role": "assistant", "content": message.content}
    calls: list[ChatCompletionMessageFunctionToolCallParam] = [
        {
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
        }
        for c in message.tool_calls
    ]
    # Content is optional beside tool calls: leave it out rather than send an empty one.
    if not message.content:
        return {"role": "assistant", "tool_calls": calls}
    return {"role": "assistant", "content": message.content, "tool_calls": calls}


def _tool(spec: ToolSpec) -> ChatCompletionFunctionToolParam:
    function: FunctionDefinition = {"name": spec.name, "parameters": spec.parameters}
    if spec.description:
        function["description"] = spec.description
    return {"type": "function", "function": function}


def _allows_strict(node: object) -> bool:
    """Whether OpenAI's strict mode takes the schema: objects closed, all properties required."""
    if isinstance(node, list):
        return all(_allows_strict(item) for item in node)
    if not isinstance(node, dict):
        return True
    if node.get("type") == "object" or "properties" in node:
        properties = node.get("properties", {})
        if node.get("additionalProperties") is not False:
            return False
        if not isinstance(properties, dict) or set(node.get("required", ())) != set(properties):
            return False
    return all(_allows_strict(value) for value in node.values())


def _arguments(name: str, tool: str, text: str | None) -> dict[str, Any]:
    """A tool call's arguments; a model that wrote broken JSON may well write it right again.

    Raises:
        ProviderError: The arguments are not a JSON object (retryable).
    """
    if text is None or not text.strip():
        return {}
    try:
        arguments = json.loads(text)
    except json.JSONDecodeError:
        arguments = None
    if not isinstance(arguments, dict):
        message = f"{name}: the arguments of tool call {tool!r} are not a JSON object"
        raise ProviderError(message, retryable=True)
    return arguments


def _usage(usage: _Usage | None) -> TokenUsage:
    if usage is None:
        return TokenUsage()
    details = usage.prompt_tokens_details
    return TokenUsage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cached_tokens=(details.cached_tokens if details is not None else None) or 0,
    )


def translate_error(exc: Exception, name: str, secrets: tuple[str, ...]) -> MeshError:
    """The mesh error for a failure of the SDK or a malformed answer, with a safe message."""
    if isinstance(exc, openai.APITimeoutError):
        return MeshTimeoutError(f"{name}: no answer within the timeout")
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(f"{name}: could not connect", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        message = _redact(f"{name}: HTTP {status}{_detail(exc.body)}", secrets)
        details = {"status": status}
        if status == 429:
            return RateLimitedError(message, details=details)
        if status in (401, 403):
            return AuthFailedError(message, details=details)
        retryable = status >= 500 or status in (408, 409)
        return ProviderError(message, retryable=retryable, details=details)
    if isinstance(exc, openai.APIResponseValidationError | json.JSONDecodeError | ValidationError):
        return ProviderError(f"{name}: malformed response ({type(exc).__name__})", retryable=True)
    if isinstance(exc, openai.APIError):  # an error event in the middle of a stream
        return ProviderError(_redact(f"{name}: {exc.message}", secrets), retryable=True)
    return ProviderError(f"{name}: the OpenAI SDK failed ({type(exc).__name__})")


def _detail(body: object) -> str:
    """The provider's own words: a JSON error's message, or the start of a text body."""
    message = body.get("message") if isinstance(body, dict) else body
    if isinstance(message, str) and message.strip():
        return f": {message.strip()[:300]}"
    return ""


_KEY_LIKE = re.compile(r"\bsk-[\w*.-]+")


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` without the key, nor the masked key some error messages quote."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return _KEY_LIKE.sub("sk-***", text)


@dataclass
class _Answer:
    """An answer read from one completion, or put together from a stream's chunks."""

    model: str
    text: list[str] = field(default_factory=list)
    refusal: str = ""
    calls: dict[int, tuple[str, str, str]] = field(default_factory=dict)
    """Tool calls by index: id, name and the arguments so far."""
    finish: str | None = None
    usage: _Usage | None = None

    def add(self, part: _Completion) -> str:
        """Take in a completion or a chunk; return its text."""
        self.model = part.model or self.model
        self.usage = part.usage or self.usage
        text = ""
        for choice in part.choices or ():
            message = choice.delta or choice.message or _Message()
            text += message.content or ""
            self.refusal += message.refusal or ""
            self.finish = choice.finish_reason or self.finish
            for position, call in enumerate(message.tool_calls or ()):
                index = position if call.index is None else call.index
                id_, tool, arguments = self.calls.get(index, ("", "", ""))
                function = call.function or _Function()
                self.calls[index] = (
                    call.id or id_,
                    function.name or tool,
                    arguments + (function.arguments or ""),
                )
        if text:
            self.text.append(text)
        return text

    def response(self, name: str) -> ModelResponse:
        """The whole answer.

        Raises:
            ProviderError: A tool call's arguments are not a JSON object (retryable).
        """
        tool_calls = tuple(
            ToolCall(id=id_, name=tool, arguments=_arguments(name, tool, arguments))
            for id_, tool, arguments in self.calls.values()
        )
        text = "".join(self.text)
        reason = _FINISH.get(self.finish or "stop", "stop")
        if reason == "stop" and tool_calls:
            reason = "tool_calls"  # some compatible servers say "stop" after calling tools
        if self.refusal and not text:
            text, reason = self.refusal, "content_filter"
        return ModelResponse(
            text=text,
            tool_calls=tool_calls,
            finish_reason=reason,
            usage=_usage(self.usage),
            model=self.model,
        )


class _Wire(BaseModel):
    """Reads the SDK's objects, checking the shape of what the adapter uses and nothing else."""

    model_config = ConfigDict(from_attributes=True)


class _Function(_Wire):
    name: str | None = None
    arguments: str | None = None


class _Call(_Wire):
    index: int | None = None  # in streams only, where a call comes in pieces
    id: str | None = None
    function: _Function | None = None


class _Message(_Wire):
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[_Call] | None = None


class _Choice(_Wire):
    message: _Message | None = None  # in a completion
    delta: _Message | None = None  # in a stream's chunk
    finish_reason: str | None = None


class _PromptDetails(_Wire):
    cached_tokens: int | None = None


class _Usage(_Wire):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None


class _Completion(_Wire):
    """A completion, or a stream's chunk (whose last one has no choices, only the usage)."""

    model: str | None = None
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
