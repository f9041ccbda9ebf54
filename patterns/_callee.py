"""What a coordinator does with what its callees answer: take the output in the shape it needs,
or raise the callee's error with the coordinator's context added. The code stays the callee's,
so a caller can still act on it (retry a ``provider_error``, wait out ``no_responders``)."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mesh.envelope import Reply
from mesh.errors import InvalidOutputError, MeshError, error_class

__all__ = ["failure", "json_in_text", "output_of", "parse_output", "rebuilt", "text_of"]

ModelT = TypeVar("ModelT", bound=BaseModel)


def failure(reply: Reply, what: str, **details: Any) -> MeshError:
    """The error of the failed ``reply``, to raise from the coordinator.

    Args:
        reply: A callee's failed reply (from `Context.request`).
        what: Says which call it was, e.g. ``"reflection: the critic 'critic' failed in
            iteration 2"``; the callee's message follows it.
        details: Put in the error's ``details``, beside ``error`` (the callee's code, message
            and details).

    Returns:
        The class of the callee's code, with its ``retryable`` and the message
        ``"<what>: <callee's message>"``.
    """
    error = reply.error
    if error is None:
        raise ValueError("the reply did not fail")
    cause: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details:
        cause["details"] = error.details
    return error_class(error.code)(
        f"{what}: {error.message}", retryable=error.retryable, details={**details, "error": cause}
    )


def output_of(reply: Reply, what: str, **details: Any) -> Any:
    """The output of ``reply``.

    Raises:
        MeshError: The callee failed: `failure` of the reply.
    """
    if reply.error is not None:
        raise failure(reply, what, **details)
    return reply.output


def text_of(output: Any, what: str) -> str:
    """``output`` if it is text.

    Raises:
        InvalidOutputError: It is not; the message names ``what`` and the type received.
    """
    if isinstance(output, str):
        return output
    raise InvalidOutputError(f"{what} must be text, not {type(output).__name__}")


def json_in_text(text: str) -> Any:
    """The JSON document a model wrote as text, a Markdown code fence around it allowed.

    Raises:
        ValueError: The text is not JSON.
    """
    stripped = text.strip()
    if stripped.startswith("```"):  # models often fence their JSON
        stripped = stripped.split("\n", 1)[-1] if "\n" in stripped else ""
        stripped = stripped.removesuffix("```")
    return json.loads(stripped)


def parse_output(model: type[ModelT], output: Any, what: str, **details: Any) -> ModelT:
    """``output`` validated into ``model``.

    Raises:
        InvalidOutputError: It does not fit; the message is ``what`` and every problem by field.
    """
    try:
        return model.model_validate(output)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'output'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise InvalidOutputError(f"{what} ({problems})", details=details or None) from exc


def rebuilt(exc: MeshError, what: str) -> MeshError:
    """``exc`` again, as its own class, with ``what`` before its message (details kept)."""
    return type(exc)(f"{what}: {exc.message}", retryable=exc.retryable, details=exc.details)
