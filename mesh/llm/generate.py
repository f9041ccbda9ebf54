"""`generate`: one model call from a prompt, with structured output checked and retried once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from mesh.errors import InvalidOutputError
from mesh.llm.model import Model
from mesh.llm.types import ChatMessage, ModelRequest, ModelResponse, ToolSpec

__all__ = ["generate"]

_RETRY_PROMPT = (
    "Your answer did not match the required JSON schema:\n{errors}\n"
    "Answer again with only a JSON document that matches the schema."
)


async def generate(
    model: Model,
    prompt: str | Sequence[ChatMessage],
    *,
    system: str | None = None,
    output_type: type[BaseModel] | None = None,
    tools: Sequence[ToolSpec] = (),
    temperature: float | None = None,
    max_tokens: int | None = None,
    stop: Sequence[str] = (),
) -> ModelResponse:
    """Ask ``model``; with ``output_type``, the answer is parsed into it (``response.parsed``).

    An answer that does not validate is sent back once with the validation errors; a second
    failure raises.

    Args:
        model: The model (from `Context.model`, so the call is measured).
        prompt: The user's text, or the whole conversation.
        system: The system prompt.
        output_type: A pydantic model the answer must be.
        tools: Tools the model may call.
        temperature: Sampling temperature.
        max_tokens: Output token limit.
        stop: Stop sequences.

    Raises:
        InvalidOutputError: The answer did not validate twice; ``details`` carries the raw
            output and the errors.
        MeshError: The model's own failures (see `Model`).
    """
    messages = (
        (ChatMessage(role="user", content=prompt),) if isinstance(prompt, str) else tuple(prompt)
    )
    request = ModelRequest(
        messages=messages,
        system=system,
        temperature=temperature,
        max_tokens=max_tokens,
        stop=tuple(stop),
        tools=tuple(tools),
        output_schema=None if output_type is None else output_type.model_json_schema(),
        output_name=output_type.__name__ if output_type is not None else "output",
    )
    response = await model.complete(request)
    if output_type is None or response.tool_calls:
        return response
    try:
        return _parsed(response, output_type)
    except ValidationError as first:
        retry = request.model_copy(
            update={
                "messages": (
                    *messages,
                    ChatMessage(role="assistant", content=response.text),
                    ChatMessage(role="user", content=_RETRY_PROMPT.format(errors=_errors(first))),
                )
            }
        )
        response = await model.complete(retry)
        try:
            return _parsed(response, output_type)
        except ValidationError as second:
            raise InvalidOutputError(
                f"{model.name} gave no valid {output_type.__name__} in two tries: "
                f"{_errors(second)}",
                details={"raw_output": response.text, "errors": _error_list(second)},
            ) from second


def _parsed(response: ModelResponse, output_type: type[BaseModel]) -> ModelResponse:
    return response.model_copy(update={"parsed": output_type.model_validate_json(response.text)})


def _error_list(exc: ValidationError) -> list[dict[str, Any]]:
    return [
        {"field": ".".join(str(p) for p in e["loc"]) or "(root)", "problem": e["msg"]}
        for e in exc.errors(include_url=False, include_input=False)
    ]


def _errors(exc: ValidationError) -> str:
    return "; ".join(f"{e['field']}: {e['problem']}" for e in _error_list(exc))
