"""`ScriptedModel` (``scripted:<name>``): an offline model for tests, examples and the demo.

It answers from a script: rules first (a regular expression searched in the last message),
then ordered replies, then a default. It can call tools and give structured output, reports
usage counted from the text (about four characters a token; `ScriptedModel.prompt_tokens`
gives the input count before the call), and can take its time.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
from pydantic import BaseModel, ConfigDict, Field

from mesh.errors import ProviderError
from mesh.llm.types import (
    Completed,
    FinishReason,
    ModelRequest,
    ModelResponse,
    StreamEvent,
    TextDelta,
    TokenUsage,
    ToolCall,
)

__all__ = ["ScriptRule", "ScriptedConfig", "ScriptedModel", "ScriptedReply", "count_tokens"]


class ScriptedToolCall(BaseModel):
    """A tool call the script makes."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str
    """The tool's name, as the agent offers it to the model."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    """The arguments passed to the tool, as a model would send them."""


class ScriptedReply(BaseModel):
    """One answer of the script."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    text: str = ""
    """The text answered."""
    output: Any = None
    """Structured output: written as the answer's JSON text (overrides ``text``)."""
    tool_calls: tuple[ScriptedToolCall, ...] = ()
    """Tools to call (the finish reason is then ``tool_calls``)."""
    finish_reason: FinishReason | None = None
    """Overrides the finish reason."""


class ScriptRule(ScriptedReply):
    """Answer this whenever the last message matches ``match``."""

    match: str
    """A regular expression, searched (not anchored) in the last message's text."""


class ScriptedConfig(BaseModel):
    """A scripted model as the config declares it (``llm.scripted.<name>``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    rules: tuple[ScriptRule, ...] = ()
    """Tried in order, before the replies."""
    replies: tuple[ScriptedReply | str, ...] = ()
    """Answered in order, one per call that no rule matched."""
    default: ScriptedReply | str | None = None
    """Answered when no rule matches and the replies are used up; else the call fails."""
    latency: float = Field(default=0.0, ge=0)
    """Seconds each answer takes."""


def count_tokens(text: str) -> int:
    """A deterministic token count: about four characters a token."""
    return math.ceil(len(text) / 4) if text else 0


class ScriptedModel:
    """A model that answers from a script; see the module docstring.

    Args:
        name: The part after ``scripted:``.
        config: The script (or give ``replies`` and ``rules`` directly).
    """

    def __init__(
        self,
        name: str = "test",
        config: ScriptedConfig | None = None,
        *,
        replies: Sequence[ScriptedReply | str] = (),
        rules: Sequence[ScriptRule] = (),
        default: ScriptedReply | str | None = None,
        latency: float = 0.0,
    ) -> None:
        self._config = config or ScriptedConfig(
            rules=tuple(rules), replies=tuple(replies), default=default, latency=latency
        )
        self._name = f"scripted:{name}"
        self._next_reply = 0
        self._call_ids = itertools.count(1)
        self.requests: list[ModelRequest] = []
        """Every request received, in order (for tests to inspect)."""

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"ScriptedModel({self._name!r})"

    def prompt_tokens(self, request: ModelRequest) -> int:
        """The input tokens this model will report for ``request``: budgets check it exactly."""
        return count_tokens(_prompt_text(request))

    async def complete(self, request: ModelRequest) -> ModelResponse:
        self.requests.append(request)
        reply = self._choose(request)
        if self._config.latency:
            await anyio.sleep(self._config.latency)
        return self._respond(request, reply)

    async def stream(self, request: ModelRequest) -> AsyncIterator[StreamEvent]:
        response = await self.complete(request)
        for piece in _pieces(response.text):
            yield TextDelta(text=piece)
        yield Completed(response=response)

    def _choose(self, request: ModelRequest) -> ScriptedReply:
        last = request.messages[-1].content if request.messages else ""
        for rule in self._config.rules:
            if _search(rule.match, last):
                return rule
        if self._next_reply < len(self._config.replies):
            reply = self._config.replies[self._next_reply]
            self._next_reply += 1
            return ScriptedReply(text=reply) if isinstance(reply, str) else reply
        if self._config.default is not None:
            default = self._config.default
            return ScriptedReply(text=default) if isinstance(default, str) else default
        raise ProviderError(
            f"{self._name}: the script has no answer left for {last[:80]!r}", retryable=False
        )

    def _respond(self, request: ModelRequest, reply: ScriptedReply) -> ModelResponse:
        text = reply.text if reply.output is None else json.dumps(reply.output)
        calls = tuple(
            ToolCall(id=f"call_{next(self._call_ids)}", name=call.name, arguments=call.arguments)
            for call in reply.tool_calls
        )
        finish = reply.finish_reason or ("tool_calls" if calls else "stop")
        return ModelResponse(
            text=text,
            tool_calls=calls,
            finish_reason=finish,
            usage=TokenUsage(
                input_tokens=self.prompt_tokens(request),
                output_tokens=count_tokens(text + "".join(json.dumps(c.arguments) for c in calls)),
            ),
            model=self._name.partition(":")[2],
        )


def _search(pattern: str, text: str) -> bool:
    return re.search(pattern, text) is not None


def _prompt_text(request: ModelRequest) -> str:
    parts = [request.system or ""]
    parts += [message.content for message in request.messages]
    parts += [json.dumps(tool.model_dump()) for tool in request.tools]
    if request.output_schema is not None:
        parts.append(json.dumps(request.output_schema))
    return "\n".join(parts)


def _pieces(text: str) -> list[str]:
    """The text in word-sized deltas (spaces kept), as a provider would stream it."""
    words = text.split(" ")
    return [word + " " for word in words[:-1]] + ([words[-1]] if words[-1] else [])
