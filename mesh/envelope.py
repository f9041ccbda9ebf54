"""The wire envelope: a `Task` in, a `Reply` out, with `Usage` and a structured `ErrorInfo`.

These models are the contract documented in ``subjects.md``. Unknown fields are kept (a newer
peer may send more), and inside a process models are passed along, never re-validated dicts.
"""

from __future__ import annotations

import os
import time
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field

from mesh.errors import MeshError, error_class

__all__ = [
    "ZERO_USAGE",
    "Budget",
    "ErrorInfo",
    "Event",
    "Reply",
    "StreamRequest",
    "Task",
    "Usage",
    "new_id",
    "validated",
]

ModelT = TypeVar("ModelT", bound=BaseModel)


def validated(model: type[ModelT], fields: dict[str, Any]) -> ModelT:
    """``model(**fields)``: the same validation, without the constructor's Python wrapper,
    which costs a small model a third again (for the envelopes made on every call's path).

    Raises:
        pydantic.ValidationError: ``fields`` do not make a ``model``.
    """
    return cast("ModelT", model.__pydantic_validator__.validate_python(fields))


def new_id() -> str:
    """A fresh task id: 24 hex characters from the OS's random source, unguessable and unique
    enough across the mesh."""
    try:
        return _ids.pop()
    except IndexError:
        block = os.urandom(_ID_BYTES * _IDS_PER_READ).hex()
        step = 2 * _ID_BYTES
        _ids.extend(block[i : i + step] for i in range(step, len(block), step))
        return block[:step]


_ID_BYTES = 12
_IDS_PER_READ = 256
_ids: list[str] = []
"""Ids read ahead: one `os.urandom` per 256 tasks instead of one per task (a system call on
every call's path). `list.pop` is atomic, so no two threads get the same id, and a forked
child starts without its parent's."""
if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_ids.clear)


class Usage(BaseModel):
    """What the work cost: tokens and money, summed over every model call below a task.

    Adding two usages adds each field; the cost is unknown (``None``) as soon as one part of
    it is unknown, because a total that leaves out an unpriced call would be a lie.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    input_tokens: int = 0
    """Prompt tokens, over all calls."""
    output_tokens: int = 0
    """Completion tokens, over all calls."""
    cost_usd: float | None = 0.0
    """Cost in US dollars; ``None`` when some call's price is unknown."""
    calls: int = 0
    """Number of model calls."""

    def __add__(self, other: Usage) -> Usage:
        if other.is_zero:
            return self
        if self.is_zero:
            return other
        cost = (
            None
            if self.cost_usd is None or other.cost_usd is None
            else self.cost_usd + other.cost_usd
        )
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=cost,
            calls=self.calls + other.calls,
        )

    @property
    def is_zero(self) -> bool:
        """True for the usage of work that made no model call (most tasks' own share)."""
        return (
            not self.calls
            and not self.input_tokens
            and not self.output_tokens
            and self.cost_usd == 0
            and not self.__pydantic_extra__
        )

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


ZERO_USAGE = Usage()
"""Usage of no work at all (immutable, so it is shared)."""


class Budget(BaseModel):
    """What a task may spend on model calls, itself and every call below it.

    Each limit is optional; a task without one of them is not limited by it. A child task gets
    what is left of its parent's budget when it is sent (`Context.request`), never more.
    """

    model_config = ConfigDict(extra="allow", frozen=True)

    max_cost_usd: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """Most US dollars the task's model calls may cost in all."""
    max_tokens: int | None = Field(default=None, ge=0)
    """Most tokens (input plus output) the task's model calls may use in all."""

    def left_after(self, usage: Usage) -> Budget:
        """What is left once ``usage`` is spent (never below zero).

        A cost that is unknown (an unpriced call) leaves nothing of ``max_cost_usd``: a limit
        that cannot be checked is treated as used up.
        """
        cost = self.max_cost_usd
        if cost is not None:
            cost = 0.0 if usage.cost_usd is None else max(0.0, cost - usage.cost_usd)
        tokens = self.max_tokens
        if tokens is not None:
            tokens = max(0, tokens - usage.total_tokens)
        return self.model_copy(update={"max_cost_usd": cost, "max_tokens": tokens})

    def within(self, other: Budget | None) -> Budget:
        """The tighter of this budget and ``other``, limit by limit."""
        if other is None:
            return self
        return self.model_copy(
            update={
                "max_cost_usd": _least(self.max_cost_usd, other.max_cost_usd),
                "max_tokens": _least(self.max_tokens, other.max_tokens),
            }
        )


def _least(first: Any, second: Any) -> Any:
    if first is None:
        return second
    return first if second is None else min(first, second)


class ErrorInfo(BaseModel):
    """A structured error as it travels in a reply."""

    model_config = ConfigDict(extra="allow")

    code: str
    """One of `ErrorCode` (a newer peer may send a code this version does not know)."""
    message: str
    """A message safe to show to the caller."""
    retryable: bool = False
    """Whether the same task may succeed if sent again."""
    details: dict[str, Any] | None = None
    """Structured data about the failure, when the error has some."""

    @classmethod
    def from_exception(cls, exc: MeshError) -> ErrorInfo:
        """The wire form of a mesh error."""
        return cls(
            code=exc.code.value, message=exc.message, retryable=exc.retryable, details=exc.details
        )

    def to_exception(self) -> MeshError:
        """The same exception class the other side raised, rebuilt from the code."""
        return error_class(self.code)(self.message, retryable=self.retryable, details=self.details)


class StreamRequest(BaseModel):
    """How a caller wants its reply streamed (``task.stream``)."""

    model_config = ConfigDict(extra="allow")

    window: int = Field(default=64, ge=1, le=10_000)
    """Chunks the producer may send beyond the last one the caller acknowledged."""
    forward: Literal["all", "text", "none"] = "all"
    """``all``: chunks from the whole call tree, tagged with their path; ``text``: only the
    called agent's own text; ``none``: no chunks, only the final reply."""


class Task(BaseModel):
    """A unit of work sent to an agent on ``mesh.agent.<name>.run``."""

    model_config = ConfigDict(extra="allow")

    input: Any
    """What the agent works on: text, or any JSON/msgpack value."""
    id: str = Field(default_factory=new_id)
    """Unique id of this task; the reply carries it back."""
    correlation_id: str | None = None
    """Id of the top-level task of the call tree this task belongs to."""
    sender: str | None = None
    """Who sent it: the calling agent's name, or a client's."""
    context: dict[str, Any] = Field(default_factory=dict)
    """Metadata passed down the call tree (caller-defined keys)."""
    deadline: float | None = Field(default=None, allow_inf_nan=False)
    """Absolute deadline, Unix time in seconds; past it the work is abandoned."""
    path: list[str] = Field(default_factory=list)
    """Agents the call went through, from the top; the guard against cycles and depth."""
    idempotency_key: str | None = None
    """The same for every try of one logical task: a host that finished a task with this key
    (for this agent) answers again with the stored reply instead of running it again."""
    budget: Budget | None = None
    """What the task's model calls may still spend, with every call below it; a model call
    that would go past it is refused with ``budget_exceeded``. ``None``: no limit."""
    stream: StreamRequest | None = None
    """Set by a caller that wants the reply streamed: chunks, then the final reply (see
    `mesh.streaming`)."""

    def remaining(self, now: float | None = None) -> float | None:
        """Seconds left before the deadline (negative once past), or ``None`` without one."""
        if self.deadline is None:
            return None
        return self.deadline - (time.time() if now is None else now)


class Reply(BaseModel):
    """The answer to a task: its output or an error, and what it cost."""

    model_config = ConfigDict(extra="allow")

    id: str
    """The id of the task answered."""
    correlation_id: str | None = None
    """The task's correlation id, echoed."""
    output: Any = None
    """The agent's result when it succeeded."""
    error: ErrorInfo | None = None
    """Why it failed; ``None`` on success."""
    usage: Usage = ZERO_USAGE
    """Tokens and cost of this task and every call below it."""
    meta: dict[str, Any] = Field(default_factory=dict)
    """About the handling: ``agent``, ``instance``, ``duration_ms``."""

    @property
    def ok(self) -> bool:
        """True when the task succeeded."""
        return self.error is None

    def unwrap(self) -> Any:
        """The output, or the reply's error raised as its `MeshError` class."""
        if self.error is not None:
            raise self.error.to_exception()
        return self.output

    @classmethod
    def failure(cls, task_id: str, exc: MeshError, **fields: Any) -> Reply:
        """A reply carrying ``exc`` for the task ``task_id``."""
        return cls(id=task_id, error=ErrorInfo.from_exception(exc), **fields)


class Event(BaseModel):
    """Something an agent announces on ``mesh.events.<agent>.<kind>`` (fire-and-forget)."""

    model_config = ConfigDict(extra="allow")

    source: str
    """The agent that published it."""
    kind: str
    """What happened, one subject token (e.g. ``progress``, ``alert``)."""
    data: Any = None
    """The payload."""
    id: str = Field(default_factory=new_id)
    """Unique id of the event."""
    time: float = Field(default_factory=time.time)
    """When it was published, Unix time in seconds."""
