"""What the built-in agents that call a model share.

They take their ``model`` setting as a `ModelName`, read their input with `parse_input` and
check their structured output with `checked_output`: a bad name fails when the config loads,
a bad input fails the same way everywhere, and an output that breaks a rule is retried like
any other.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, TypeVar, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    Field,
    ValidationError,
    create_model,
    model_validator,
)

from mesh.errors import BadSchemaError
from mesh.llm.model import split_model_name

__all__ = ["DEFAULT_MODEL", "ModelName", "checked_output", "one_of", "parse_input"]

DEFAULT_MODEL = "openai:gpt-4o-mini"
"""The model a built-in agent uses when its config names none."""


def _model_name(name: str) -> str:
    split_model_name(name)
    return name


ModelName = Annotated[str, AfterValidator(_model_name)]
"""A ``provider:model`` name (e.g. ``openai:gpt-4o-mini``), checked for its shape."""

InputT = TypeVar("InputT", bound=BaseModel)
OutputT = TypeVar("OutputT", bound=BaseModel)


def parse_input(model: type[InputT], value: Any, *, agent: str) -> InputT:
    """Validate a task's input into ``model``.

    Args:
        model: The pydantic model of the agent's input.
        value: The task's input, as it came.
        agent: The agent's kind, named in the message.

    Returns:
        The input, validated.

    Raises:
        BadSchemaError: It does not fit; the message lists every problem by field.
    """
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        problems = "; ".join(
            ": ".join(filter(None, (".".join(map(str, error["loc"])), error["msg"])))
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise BadSchemaError(f"{agent} input: {problems}") from exc


def checked_output(
    base: type[OutputT], *, check: Callable[[OutputT], OutputT] | None = None, **fields: Any
) -> type[OutputT]:
    """A subclass of the structured-output type ``base``, of the same name, that holds rules
    only known at run time: an answer that breaks one is then sent back to the model once,
    like one that does not fit the schema (see `mesh.llm.generate`).

    Args:
        base: The output type.
        check: Takes a valid ``base`` instance; raises ``ValueError`` saying what is wrong.
        fields: Field definitions to replace, as `pydantic.create_model` takes them (e.g.
            bounds that depend on the settings; they show in the schema the model sees).
    """
    validators = {}
    if check is not None:
        # pydantic's stubs type validators as plain callables; it takes the decorated proxy.
        validators["_check"] = cast("Callable[..., Any]", model_validator(mode="after")(check))
    return create_model(
        base.__name__,
        __base__=base,
        __module__=base.__module__,
        __doc__=base.__doc__,
        __validators__=validators,
        **fields,
    )


def one_of(base: type[OutputT], field: str, names: Sequence[str]) -> type[OutputT]:
    """`checked_output` of ``base`` whose ``field`` takes only ``names``, an enum in the
    schema (its description kept): a provider that constrains its output to the schema
    (OpenAI strict, llama.cpp's grammar) cannot answer another."""
    about = base.model_fields[field].description
    choices = cast("Any", Literal)[tuple(names)]
    replaced: dict[str, Any] = {field: (choices, Field(description=about))}
    return checked_output(base, **replaced)
