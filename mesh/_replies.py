"""How a host writes a reply: in the request's encoding, with the NATS service error headers
on failures (so `nats` CLI users and micro clients see them), by claim check above the
server's ``max_payload``; and the copy a caller in the same process gets instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic_core import PydanticSerializationError

from mesh.claim_check import CLAIM_HEADER
from mesh.codec import CONTENT_TYPE, Encoding, encode, isolated
from mesh.envelope import ErrorInfo, Reply
from mesh.errors import ErrorCode, InvalidOutputError, MeshError, PayloadTooLargeError

if TYPE_CHECKING:
    from mesh.runtime import Runtime

__all__ = ["ERROR_CODE_HEADER", "ERROR_HEADER", "delivered", "failed", "reply_headers", "respond"]

# The NATS service error headers, so `nats` CLI users and micro clients see failures.
ERROR_HEADER = "Nats-Service-Error"
ERROR_CODE_HEADER = "Nats-Service-Error-Code"
_STATUS = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_MSGPACK: 400,
    ErrorCode.BAD_SCHEMA: 400,
    ErrorCode.INVALID_OUTPUT: 500,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.UNKNOWN_AGENT: 404,
    ErrorCode.NO_ROUTE: 404,
    ErrorCode.NO_RESPONDERS: 503,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.DEADLINE_EXCEEDED: 504,
    ErrorCode.CANCELLED: 499,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.AUTH_FAILED: 401,
    ErrorCode.BUDGET_EXCEEDED: 402,
    ErrorCode.DEPTH_EXCEEDED: 508,
    ErrorCode.IDEMPOTENCY_CONFLICT: 409,
    ErrorCode.INTERNAL_ERROR: 500,
}


async def respond(
    runtime: Runtime, subject: str, reply: Reply, encoding: Encoding, *, claim: bool = True
) -> None:
    """Publish ``reply`` on ``subject``; above the server's ``max_payload``, by claim check
    when ``claim`` and JetStream allow, else as a ``payload_too_large`` failure. An output
    that cannot be written becomes an ``invalid_output`` failure."""
    try:
        data = encode(reply, encoding)
    except (PydanticSerializationError, TypeError, ValueError) as exc:
        reply = failed(reply, InvalidOutputError(f"the output cannot be serialised: {exc}"))
        data = encode(reply, encoding)
    bus = runtime.bus
    headers = reply_headers(reply, encoding)
    try:
        await bus.publish(subject, data, headers=headers)
    except PayloadTooLargeError as exc:
        failure: MeshError = exc
        claims = runtime.claims
        if claim and claims is not None:
            try:
                stored = await claims.store(data)
            except MeshError as refused:  # no JetStream: payload_too_large, saying so
                failure = refused
            else:
                claimed = {**(headers or {}), CLAIM_HEADER: stored}
                await bus.publish(subject, b"", headers=claimed)
                return
        reply = failed(reply, failure)
        await bus.publish(subject, encode(reply, encoding), headers=reply_headers(reply, encoding))


def delivered(reply: Reply, max_payload: int) -> Reply:
    """``reply`` as its caller would get it by message: its output and meta copied, or the
    error the message would have had (not serialisable, too large)."""
    try:
        (output, meta), size = isolated((reply.output, reply.meta))
    except TypeError as exc:
        return failed(reply, InvalidOutputError(f"the output cannot be serialised: {exc}"))
    if size > max_payload:
        too_large = f"message of {size} bytes exceeds max_payload of {max_payload}"
        return failed(reply, PayloadTooLargeError(too_large))
    # The host built this reply for this call alone: set the copies in place (in its
    # fields as pydantic holds them: its per-attribute `__setattr__` costs more).
    reply.__dict__.update(output=output, meta=meta)
    return reply


def failed(reply: Reply, exc: MeshError) -> Reply:
    """``reply`` failed with ``exc`` instead of its output."""
    return reply.model_copy(update={"output": None, "error": ErrorInfo.from_exception(exc)})


def _status(code: str) -> int:
    try:
        return _STATUS.get(ErrorCode(code), 500)
    except ValueError:
        return 500


def reply_headers(reply: Reply, encoding: Encoding) -> dict[str, str] | None:
    """The headers of ``reply``: its content type unless msgpack, the service error headers
    when it failed; ``None`` when there are none (the common case)."""
    headers: dict[str, str] = {}
    if encoding is not Encoding.MSGPACK:
        headers[CONTENT_TYPE] = Encoding.JSON.value
    if reply.error is not None:
        headers[ERROR_HEADER] = " ".join(reply.error.message.split())[:1000]
        headers[ERROR_CODE_HEADER] = str(_status(reply.error.code))
    return headers or None
