"""Counting a prompt's tokens before it is sent: what budgets and prompt-size limits check.

A model that knows its own count says so by having a ``prompt_tokens(request)`` method
(`PromptCounter`; the scripted model counts exactly what it will report). For the others the
count is an estimate, `estimate_prompt_tokens`: no tokenizer is shipped (tiktoken fetches its
vocabularies from the network at run time, and covers OpenAI's models only), so it assumes
three bytes of UTF-8 a token, plus a few tokens a message for the chat format. That errs
high for English prose and code (about four characters a token), so a limit refuses a little
early rather than late; it is close for text in non-Latin scripts.
"""

from __future__ import annotations

import json
import math
from typing import Protocol, runtime_checkable

from mesh.llm.types import ModelRequest

__all__ = [
    "BYTES_PER_TOKEN",
    "MESSAGE_OVERHEAD_TOKENS",
    "PromptCounter",
    "estimate_prompt_tokens",
    "prompt_text",
    "prompt_tokens",
]

BYTES_PER_TOKEN = 3
"""Bytes of UTF-8 the estimate counts as one token."""
MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens the estimate adds for each message (role and separators of the chat format)."""


@runtime_checkable
class PromptCounter(Protocol):
    """A model that counts a request's input tokens itself, as it will bill them."""

    def prompt_tokens(self, request: ModelRequest) -> int:
        """Input tokens ``request`` will be billed."""
        ...


def prompt_text(request: ModelRequest) -> str:
    """Everything of ``request`` a model reads: system prompt, messages, tools, schema."""
    parts = [request.system or ""]
    for message in request.messages:
        parts.append(message.content)
        parts += [json.dumps(call.arguments) for call in message.tool_calls]
    parts += [json.dumps(tool.model_dump()) for tool in request.tools]
    if request.output_schema is not None:
        parts.append(json.dumps(request.output_schema))
    return "\n".join(parts)


def estimate_prompt_tokens(request: ModelRequest) -> int:
    """An estimate of ``request``'s input tokens that errs high (see the module docstring)."""
    written = len(prompt_text(request).encode())
    messages = len(request.messages) + (1 if request.system else 0)
    return math.ceil(written / BYTES_PER_TOKEN) + MESSAGE_OVERHEAD_TOKENS * messages


def prompt_tokens(model: object, request: ModelRequest) -> int:
    """``request``'s input tokens: the model's own count if it has one, else the estimate."""
    if isinstance(model, PromptCounter):
        return model.prompt_tokens(request)
    return estimate_prompt_tokens(request)
