"""References in settings: to other agents (`AgentRef`) and to code (`Piece`, from `Pieces`).

A pattern's settings name the agents it calls and, where code adds something (a merge
function, a routing function, a tool), the piece of code. Both are checked where the
configuration is loaded: `mesh.config.load_config` validates every agent's settings with a
`References` in the pydantic validation context, so a name that is not declared, or not
registered, is refused with the file and line of the setting. Settings built in code (no
context) check only the form of a name, and accept functions themselves as pieces.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar, overload

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    ValidationInfo,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from mesh.subjects import validate_agent_name

__all__ = ["REFERENCES", "AgentCall", "AgentRef", "Piece", "Pieces", "References"]

_T = TypeVar("_T")

REFERENCES = "mesh.references"
"""The key of the `References` in a pydantic validation context."""


@dataclass
class References:
    """What settings may refer to, and what they did refer to (the validation context).

    Args:
        agents: The declared agent names; ``None`` accepts any well-formed name.
        pieces: The registered pieces; import paths resolve without it.
    """

    agents: Collection[str] | None = None
    pieces: Pieces | None = None
    found: list[str] = field(default_factory=list)
    """Every agent name met while validating, in order (for the cycle check)."""


def _references(info: ValidationInfo) -> References | None:
    context = info.context
    found = context.get(REFERENCES) if isinstance(context, dict) else None
    return found if isinstance(found, References) else None


def _check_agent_ref(name: str, info: ValidationInfo) -> str:
    validate_agent_name(name)
    references = _references(info)
    if references is not None:
        if references.agents is not None and name not in references.agents:
            declared = ", ".join(sorted(references.agents)) or "none"
            raise ValueError(f"unknown agent {name!r}: it is not declared (declared: {declared})")
        references.found.append(name)
    return name


AgentRef = Annotated[str, AfterValidator(_check_agent_ref)]
"""The name of an agent the settings call: checked against the declared agents on loading."""


class AgentCall(BaseModel):
    """Settings of a call to one agent; a bare agent name is the call with nothing else set.

    Subclasses add the options (a branch's name, a step's input) and keep the shorthand,
    which the JSON Schema shows too.
    """

    model_config = ConfigDict(use_attribute_docstrings=True)

    agent: AgentRef
    """The agent called."""

    @model_validator(mode="before")
    @classmethod
    def _bare_name(cls, data: Any) -> Any:
        return {"agent": data} if isinstance(data, str) else data

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"anyOf": [{"type": "string", "description": "the agent's name"}, handler(schema)]}


@dataclass(frozen=True)
class Piece:
    """A piece of code named in settings: a registered name or ``package.module:attribute``.

    In settings it is written (and serialised) as its ``ref``; in code, a function may be
    given instead and becomes a piece named after it.
    """

    ref: str
    """How the settings name it."""
    target: Any = field(compare=False)
    """What it names: a function, or another object (a tool); the setting using it checks
    that it is what it needs."""

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.with_info_plain_validator_function(
            _validate_piece,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda piece: piece.ref),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "description": "a piece of code registered by name, or 'package.module:attribute'",
        }


def _validate_piece(value: Any, info: ValidationInfo) -> Piece:
    if isinstance(value, Piece):
        return value
    if isinstance(value, str):
        references = _references(info)
        return (references.pieces if references and references.pieces else Pieces()).resolve(value)
    name = getattr(value, "__qualname__", None) or getattr(value, "name", None)
    return Piece(name if isinstance(name, str) else repr(value), value)


class Pieces:
    """Code that YAML settings may name: register functions (or tools) here, by name.

    Example::

        pieces = Pieces()

        @pieces.register
        def by_length(text: str) -> str:
            return "long" if len(text) > 200 else "short"

        config = load_config("mesh.yaml", pieces=pieces)  # labeller: by_length
    """

    def __init__(self) -> None:
        self._by_name: dict[str, Any] = {}

    @overload
    def register(self, target: _T, /, *, name: str | None = None) -> _T: ...

    @overload
    def register(
        self, target: None = None, /, *, name: str | None = None
    ) -> Callable[[_T], _T]: ...

    def register(self, target: Any = None, /, *, name: str | None = None) -> Any:
        """Register ``target`` under ``name`` (default: its ``__name__``); usable as a decorator.

        Returns:
            ``target`` itself (or, called without it, a decorator that registers).

        Raises:
            ValueError: The name is taken by another piece, is empty or contains ``:``.
        """
        if target is None:
            return lambda function: self.register(function, name=name)
        key = name or getattr(target, "__name__", None) or getattr(target, "name", None)
        if not isinstance(key, str) or not key or ":" in key:
            raise ValueError(f"a piece needs a name without ':' (got {key!r}); pass name=")
        if self._by_name.get(key, target) is not target:
            raise ValueError(f"a different piece is already registered as {key!r}")
        self._by_name[key] = target
        return target

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._by_name))

    def resolve(self, ref: str) -> Piece:
        """The piece ``ref`` names: a registered name, else ``package.module:attribute``.

        Raises:
            ValueError: Nothing is registered under the name, or the import path does not
                import.
        """
        if ref in self._by_name:
            return Piece(ref, self._by_name[ref])
        module_name, _, attribute = ref.partition(":")
        if not module_name or not attribute:
            registered = ", ".join(self) or "none"
            raise ValueError(
                f"no piece named {ref!r} (registered: {registered}); register it in code "
                "(Pieces.register) or give 'package.module:attribute'"
            )
        try:
            target = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import {ref!r}: {exc}") from exc
        return Piece(ref, target)
