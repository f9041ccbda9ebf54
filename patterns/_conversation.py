"""What the swarm and supervisor patterns share: a conversation of turns that travels with the
task, and the one way their input is read.

Both take either the task itself (any value) or ``{"input": ..., "conversation"?: [...]}``;
an object with an ``"input"`` key is the second form. Since what they pass to their agents has
that same shape, a swarm or a supervisor can itself be a member or a worker and carry the
conversation on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from agents._model import parse_input

__all__ = ["ConversationInput", "Turn", "as_text", "read_input"]


class Turn(BaseModel):
    """One agent's contribution to the conversation: ``{"agent", "content"}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    agent: str
    """Who spoke."""
    content: Any = None
    """What it said: its output (text, or any JSON value)."""


class ConversationInput(BaseModel):
    """A task with the conversation so far: ``{"input", "conversation"?}``.

    Keys it does not know are ignored, so the input one pattern gives its agents may be given
    as is to another pattern.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, use_attribute_docstrings=True)

    input: Any
    """The original task."""
    conversation: tuple[Turn, ...] = ()
    """The turns so far, oldest first."""


InputT = TypeVar("InputT", bound=ConversationInput)


def read_input(model: type[InputT], value: Any, *, pattern: str) -> InputT:
    """Read a task's input: an object with an ``"input"`` key is validated into ``model``;
    any other value is the task itself, with no conversation yet.

    Raises:
        BadSchemaError: The object form does not fit ``model`` (e.g. a turn without ``agent``).
    """
    if isinstance(value, Mapping) and "input" in value:
        return parse_input(model, value, agent=pattern)
    return model(input=value)


def as_text(content: Any) -> str:
    """``content`` as text: itself if it is text, else its JSON."""
    if isinstance(content, str):
        return content
    return json.dumps(content, ensure_ascii=False, default=str)
