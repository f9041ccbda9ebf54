"""`llm`: one model call, its prompt filled from a template."""

from __future__ import annotations

import json
import string
from collections.abc import Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
)

from agents._model import DEFAULT_MODEL, ModelName
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import BadSchemaError

__all__ = ["LLMAgent", "LLMAgentConfig", "template_fields"]


def template_fields(template: str) -> tuple[str, ...]:
    """The names a ``str.format``-style template asks for, in order (repeats kept once).

    Raises:
        ValueError: The template does not parse, or a field is not a plain name (positional
            ``{}``, attribute ``{a.b}`` and index ``{a[0]}`` fields are refused, so an input
            can never reach into the objects it is formatted from).
    """
    names: list[str] = []
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if conversion not in (None, "r", "s", "a"):
            raise ValueError(f"template field {{{field}}} has an unknown conversion !{conversion}")
        if not field.isidentifier():
            raise ValueError(
                f"template field {{{field}}} is not a plain name: use {{input}} or a key of "
                "the input (write {{ and }} for literal braces)"
            )
        if spec and "{" in spec:
            raise ValueError(f"template field {{{field}}} has a nested field in its format spec")
        if field not in names:
            names.append(field)
    return tuple(names)


class LLMAgentConfig(BaseModel):
    """Settings of an `llm` agent."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: ModelName = DEFAULT_MODEL
    """The model to ask, ``provider:model``."""
    system: str | None = None
    """The system prompt (sent as written, not a template)."""
    prompt: str = "{input}"
    """The user prompt: a ``str.format`` template of ``{input}`` and the keys of an object
    input (``{{`` and ``}}`` are literal braces)."""
    temperature: float | None = Field(default=None, ge=0, le=2)
    """Sampling temperature; ``None`` for the provider's default."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Upper bound on output tokens; ``None`` for the provider's default."""

    @field_validator("prompt")
    @classmethod
    def _prompt_is_a_template(cls, prompt: str) -> str:
        template_fields(prompt)
        return prompt


class LLMAgent(Agent[LLMAgentConfig]):
    """Fill the prompt template from the input, ask the model once, reply with its text.

    Input: text, which is ``{input}``; or an object whose keys are the template's fields,
    where ``{input}`` is its ``"input"`` key if it has one, else the whole object as JSON.
    Text and numbers are written as they are, other values as JSON.

    Output: the model's text.

    Raises:
        BadSchemaError: The input is neither text nor an object, or lacks a field the
            template names.
        MeshError: The model's failure (see `Context.llm`).
    """

    name = "llm"
    description = "Asks a model once, with a prompt filled in from its input."
    config_model = LLMAgentConfig

    def __init__(self, *, name: str | None = None, config: LLMAgentConfig | None = None) -> None:
        super().__init__(name=name, config=config)
        self._fields = template_fields(self.config.prompt)

    async def execute(self, task: Task, ctx: Context) -> str:
        prompt = self.render(task.input)
        config = self.config
        response = await ctx.llm(
            config.model,
            prompt,
            system=config.system,
            temperature=config.temperature,
            max_tokens=config.max_tokens,
        )
        return response.text

    def render(self, input: Any) -> str:
        """The user prompt for ``input`` (see the class docstring).

        Raises:
            BadSchemaError: As `execute` does for a bad input.
        """
        values = _template_values(input)
        missing = [name for name in self._fields if name not in values]
        if missing:
            given = ", ".join(sorted(values)) or "none"
            wanted = ", ".join(repr(name) for name in missing)
            raise BadSchemaError(
                f"llm input: the prompt template needs {wanted}, which the input lacks "
                f"(it has: {given})"
            )
        try:
            return self.config.prompt.format_map(values)
        except ValueError as exc:  # a format spec that does not suit the value, e.g. {n:d}
            raise BadSchemaError(f"llm input: the prompt template cannot be filled: {exc}") from exc


def _template_values(input: Any) -> dict[str, Any]:
    if isinstance(input, str):
        return {"input": input}
    if not isinstance(input, Mapping):
        raise BadSchemaError(
            f"llm input: takes text or an object of template fields, not {type(input).__name__}"
        )
    values = {key: _writable(value) for key, value in input.items() if isinstance(key, str)}
    if "input" not in values:
        values["input"] = _writable(dict(input))
    return values


def _writable(value: Any) -> Any:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return value
    return json.dumps(value, ensure_ascii=False, default=str, skipkeys=True)
