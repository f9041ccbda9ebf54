"""What goes into a model call and what comes out, whatever the provider.

Provider adapters translate these to and from their SDK's types; agents and patterns only
ever see these.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatMessage",
    "Completed",
    "FinishReason",
    "ModelRequest",
    "ModelResponse",
    "StreamEvent",
    "TextDelta",
    "TokenUsage",
    "ToolCall",
    "ToolSpec",
]

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "error"]
"""Why the model stopped: a normal end, the token limit, to call tools, a filter, a failure."""


class ToolCall(BaseModel):
    """A model's request to call a tool."""

    model_config = ConfigDict(frozen=True)

    id: str
    """The provider's id for the call; the tool's result refers to it."""
    name: str
    """The tool's name."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    """The arguments, parsed from the model's JSON (unvalidated: the caller checks them)."""


class ToolSpec(BaseModel):
    """A tool the model may call."""

    model_config = ConfigDict(frozen=True)

    name: str
    """Name the model calls it by."""
    description: str = ""
    """What it does, for the model."""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    """JSON Schema of its arguments (an object)."""


class ChatMessage(BaseModel):
    """One turn of a conversation."""

    model_config = ConfigDict(frozen=True)

    role: Literal["user", "assistant", "tool"]
    """Who speaks; the system prompt is `ModelRequest.system`, not a message."""
    content: str = ""
    """The text (for a ``tool`` message, the tool's result)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tools an ``assistant`` turn asked for."""
    tool_call_id: str | None = None
    """For a ``tool`` message: the call it answers."""


class ModelRequest(BaseModel):
    """A chat completion request."""

    model_config = ConfigDict(frozen=True)

    messages: tuple[ChatMessage, ...]
    """The conversation so far; the last turn is usually the user's."""
    system: str | None = None
    """The system prompt."""
    temperature: float | None = None
    """Sampling temperature; ``None`` for the provider's default."""
    max_tokens: int | None = None
    """Upper bound on output tokens; ``None`` for the provider's default."""
    stop: tuple[str, ...] = ()
    """Sequences that end the output."""
    tools: tuple[ToolSpec, ...] = ()
    """Tools the model may call."""
    output_schema: dict[str, Any] | None = None
    """JSON Schema the answer must follow (structured output), or ``None`` for free text."""
    output_name: str = "output"
    """Name of the structured output (some providers need one)."""


class TokenUsage(BaseModel):
    """Tokens one call used, as the provider reported them."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    """Prompt tokens, cached ones included."""
    output_tokens: int = 0
    """Completion tokens."""
    cached_tokens: int = 0
    """Prompt tokens read from the provider's cache (part of ``input_tokens``)."""
    cache_write_tokens: int = 0
    """Prompt tokens written to the provider's cache (part of ``input_tokens``; Anthropic
    charges them above the input price)."""


class ModelResponse(BaseModel):
    """A model's answer."""

    model_config = ConfigDict(frozen=True)

    text: str = ""
    """The text of the answer (the JSON document, for structured output)."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tools the model asks to call."""
    finish_reason: FinishReason = "stop"
    """Why it stopped."""
    usage: TokenUsage = Field(default_factory=TokenUsage)
    """Tokens used."""
    model: str = ""
    """The model that answered, as the provider names it (may be more precise than asked)."""
    parsed: Any = None
    """The structured output, validated (set by `mesh.llm.generate` when asked for one)."""


class TextDelta(BaseModel):
    """A piece of text as the model streams it."""

    model_config = ConfigDict(frozen=True)

    text: str


class Completed(BaseModel):
    """The end of a stream: the whole response."""

    model_config = ConfigDict(frozen=True)

    response: ModelResponse


StreamEvent = TextDelta | Completed
"""What `Model.stream` yields: text deltas, then exactly one `Completed`."""
