"""Errors of the mesh: one root, one code each, the same class on both sides of the wire.

::

    MeshError                                   (code, retryable, message)
    ├── InvalidJsonError          ValueError     invalid_json
    ├── InvalidMsgpackError       ValueError     invalid_msgpack
    ├── BadSchemaError            ValueError     bad_schema
    ├── PayloadTooLargeError      ValueError     payload_too_large
    ├── UnknownAgentError         LookupError    unknown_agent
    ├── NoRespondersError         LookupError    no_responders      retryable
    ├── MeshTimeoutError          TimeoutError   timeout            retryable
    ├── DeadlineExceededError     TimeoutError   deadline_exceeded
    ├── CancelledError                           cancelled
    ├── AgentError                               agent_error
    ├── ProviderError                            provider_error     retryable
    ├── RateLimitedError                         rate_limited       retryable
    ├── AuthFailedError           PermissionError auth_failed
    ├── BudgetExceededError                      budget_exceeded
    ├── DepthExceededError        RecursionError depth_exceeded
    ├── NoRouteError              LookupError    no_route
    ├── InsufficientAgreementError               insufficient_agreement
    ├── InvalidOutputError        ValueError     invalid_output
    ├── IdempotencyConflictError  ValueError     idempotency_conflict
    ├── StreamBrokenError                        stream_broken      retryable
    └── InternalError                            internal_error

A reply carries ``{"code", "message", "retryable"}``; :func:`error_from_info` turns it back
into the same class on the caller's side, on either bus. Foreign exceptions are translated
where they enter (one place per adapter) and chained with ``from``.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

__all__ = [
    "AgentError",
    "AuthFailedError",
    "BadSchemaError",
    "BudgetExceededError",
    "CancelledError",
    "DeadlineExceededError",
    "DepthExceededError",
    "ErrorCode",
    "IdempotencyConflictError",
    "InsufficientAgreementError",
    "InternalError",
    "InvalidJsonError",
    "InvalidMsgpackError",
    "InvalidOutputError",
    "MeshError",
    "MeshTimeoutError",
    "NoRespondersError",
    "NoRouteError",
    "PayloadTooLargeError",
    "ProviderError",
    "RateLimitedError",
    "StreamBrokenError",
    "UnknownAgentError",
    "error_class",
]


class ErrorCode(StrEnum):
    """Every error code the mesh puts on the wire (documented in ``subjects.md``)."""

    INVALID_JSON = "invalid_json"
    INVALID_MSGPACK = "invalid_msgpack"
    BAD_SCHEMA = "bad_schema"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNKNOWN_AGENT = "unknown_agent"
    NO_RESPONDERS = "no_responders"
    TIMEOUT = "timeout"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    CANCELLED = "cancelled"
    AGENT_ERROR = "agent_error"
    PROVIDER_ERROR = "provider_error"
    RATE_LIMITED = "rate_limited"
    AUTH_FAILED = "auth_failed"
    BUDGET_EXCEEDED = "budget_exceeded"
    DEPTH_EXCEEDED = "depth_exceeded"
    NO_ROUTE = "no_route"
    INSUFFICIENT_AGREEMENT = "insufficient_agreement"
    INVALID_OUTPUT = "invalid_output"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    STREAM_BROKEN = "stream_broken"
    INTERNAL_ERROR = "internal_error"


class MeshError(Exception):
    """Root of every error the mesh raises or replies with.

    Args:
        message: A message safe to send to any caller (no secrets, no ``repr`` of foreign objects).
        retryable: Overrides the class default when the cause knows better.
        details: Structured, JSON-safe data about the failure (e.g. each branch's error).
    """

    code: ClassVar[ErrorCode] = ErrorCode.AGENT_ERROR
    retryable: bool = False

    def __init__(
        self,
        message: str = "",
        *,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message or self.code.value.replace("_", " "))
        self.message = str(self.args[0])
        if retryable is not None:
            self.retryable = retryable
        self.details = details

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code.value!r}, message={self.message!r})"


class InvalidJsonError(MeshError, ValueError):
    """The message claimed to be JSON (by header or by its first byte) but did not parse."""

    code = ErrorCode.INVALID_JSON


class InvalidMsgpackError(MeshError, ValueError):
    """The message looked like msgpack but did not decode (truncated, corrupt)."""

    code = ErrorCode.INVALID_MSGPACK


class BadSchemaError(MeshError, ValueError):
    """The message decoded, but is not a valid task or reply."""

    code = ErrorCode.BAD_SCHEMA


class PayloadTooLargeError(MeshError, ValueError):
    """The message is larger than the configured limit."""

    code = ErrorCode.PAYLOAD_TOO_LARGE


class UnknownAgentError(MeshError, LookupError):
    """No agent of that name is known to the mesh."""

    code = ErrorCode.UNKNOWN_AGENT


class NoRespondersError(MeshError, LookupError):
    """Nobody subscribes to the subject right now (e.g. its nodes are restarting)."""

    code = ErrorCode.NO_RESPONDERS
    retryable = True


class MeshTimeoutError(MeshError, TimeoutError):
    """No reply arrived within the caller's timeout."""

    code = ErrorCode.TIMEOUT
    retryable = True


class DeadlineExceededError(MeshError, TimeoutError):
    """The task's deadline passed before its work finished."""

    code = ErrorCode.DEADLINE_EXCEEDED


class CancelledError(MeshError):
    """The task was cancelled by its caller."""

    code = ErrorCode.CANCELLED


class AgentError(MeshError):
    """The agent raised an exception that is not a mesh error."""

    code = ErrorCode.AGENT_ERROR


class ProviderError(MeshError):
    """The model provider failed (5xx, malformed answer, connection lost)."""

    code = ErrorCode.PROVIDER_ERROR
    retryable = True


class RateLimitedError(MeshError):
    """The model provider (or a mesh limit) asked us to slow down."""

    code = ErrorCode.RATE_LIMITED
    retryable = True


class AuthFailedError(MeshError, PermissionError):
    """Credentials were missing or refused."""

    code = ErrorCode.AUTH_FAILED


class BudgetExceededError(MeshError):
    """The task's cost or token budget would be exceeded."""

    code = ErrorCode.BUDGET_EXCEEDED


class DepthExceededError(MeshError, RecursionError):
    """The call tree is deeper than allowed, or a call would loop back on its own path."""

    code = ErrorCode.DEPTH_EXCEEDED


class NoRouteError(MeshError, LookupError):
    """A router found no route for the input and has no default."""

    code = ErrorCode.NO_ROUTE


class InsufficientAgreementError(MeshError):
    """Voters agreed less than the configured threshold."""

    code = ErrorCode.INSUFFICIENT_AGREEMENT


class InvalidOutputError(MeshError, ValueError):
    """An agent's or model's output did not match the expected structure."""

    code = ErrorCode.INVALID_OUTPUT


class IdempotencyConflictError(MeshError, ValueError):
    """A task reused an idempotency key that an earlier task with another input holds."""

    code = ErrorCode.IDEMPOTENCY_CONFLICT


class StreamBrokenError(MeshError):
    """A streamed reply arrived with a chunk missing or out of order (the stream is given up;
    the task is cancelled)."""

    code = ErrorCode.STREAM_BROKEN
    retryable = True


class InternalError(MeshError):
    """The host failed while answering, outside the agent (a bug in the mesh, logged by the
    node): the caller hears of it at once instead of at its timeout."""

    code = ErrorCode.INTERNAL_ERROR


_BY_CODE: dict[ErrorCode, type[MeshError]] = {
    cls.code: cls
    for cls in (
        InvalidJsonError,
        InvalidMsgpackError,
        BadSchemaError,
        PayloadTooLargeError,
        UnknownAgentError,
        NoRespondersError,
        MeshTimeoutError,
        DeadlineExceededError,
        CancelledError,
        AgentError,
        ProviderError,
        RateLimitedError,
        AuthFailedError,
        BudgetExceededError,
        DepthExceededError,
        NoRouteError,
        InsufficientAgreementError,
        InvalidOutputError,
        IdempotencyConflictError,
        StreamBrokenError,
        InternalError,
    )
}


def error_class(code: ErrorCode | str) -> type[MeshError]:
    """The exception class for a wire error code; unknown codes (a newer peer) give `MeshError`."""
    try:
        return _BY_CODE[ErrorCode(code)]
    except ValueError:
        return MeshError
