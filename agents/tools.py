"""Tools for tool-using agents: a `Tool` made from a plain Python function, an `AgentTool` that
asks another agent of the mesh, and `resolve_tools` for the names a YAML config gives.

The JSON schema of a tool's arguments is pydantic's, generated from the function's signature:
type hints give the types (``Annotated[..., Field(...)]`` adds constraints), defaults make a
parameter optional, and a Google-style ``Args:`` section of the docstring describes each one.
A parameter annotated `Context` is not an argument: it receives the calling agent's context.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Iterable, Mapping
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin, get_type_hints

import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from mesh.context import Context
from mesh.llm.types import ToolSpec
from mesh.refs import Piece

__all__ = [
    "AgentTool",
    "Tool",
    "ToolArgumentsError",
    "resolve_tools",
    "tool_of",
]

_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What every provider accepts as a tool name."""
_ARGS_HEADER = re.compile(r"^(Args|Arguments|Parameters):\s*$")
_ARG_LINE = re.compile(r"^(\w+)(?:\s*\([^)]*\))?:\s*(.*)$")


class ToolArgumentsError(ValueError):
    """The arguments a model gave a tool do not fit the tool's schema.

    Args:
        tool: The tool's name.
        problems: One ``{"field", "problem"}`` per validation error.
    """

    def __init__(self, tool: str, problems: list[dict[str, str]]) -> None:
        listed = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
        super().__init__(f"invalid arguments for tool {tool!r}: {listed}")
        self.tool = tool
        self.problems = problems


class _NoTitles(GenerateJsonSchema):
    """pydantic's JSON schema without the titles it derives from names (noise to a model)."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def model_schema(self, schema: core_schema.ModelSchema) -> JsonSchemaValue:
        generated = super().model_schema(schema)
        generated.pop("title", None)
        return generated


class Tool:
    """A tool made from a Python function, sync or async.

    A sync function runs in a worker thread, so a slow one does not block the event loop.

    Args:
        function: What the tool does; every parameter is keyword-callable and type-hinted
            (an unannotated one accepts anything).
        name: The name the model calls it by; defaults to the function's name.
        description: What it does, for the model; defaults to the docstring's first paragraph.

    Raises:
        ValueError: The name is not a valid tool name (letters, digits, ``_``, ``-``; at most
            64), or the signature has ``*args``, ``**kwargs``, positional-only parameters or
            hints that do not resolve.
    """

    def __init__(
        self,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        self.name: str = name or str(getattr(function, "__name__", ""))
        if not _TOOL_NAME.match(self.name):
            raise ValueError(
                f"invalid tool name {self.name!r}: use 1 to 64 letters, digits, '_' or '-'"
            )
        summary, argument_docs = _read_docstring(inspect.getdoc(function) or "")
        self.description = summary if description is None else description
        self.function = function
        self._is_async = inspect.iscoroutinefunction(function)
        self._arguments, self._context_parameter = _arguments_model(
            self.name, function, argument_docs
        )

    @functools.cached_property
    def spec(self) -> ToolSpec:
        """What the model is told about the tool: name, description, arguments' JSON schema."""
        return ToolSpec(
            name=self.name,
            description=self.description,
            parameters=self._arguments.model_json_schema(schema_generator=_NoTitles),
        )

    async def run(self, arguments: Mapping[str, Any], *, ctx: Context | None = None) -> Any:
        """Validate ``arguments`` against the schema and call the function with them.

        Args:
            arguments: The arguments as the model gave them (a JSON object).
            ctx: The calling agent's context, for a function that takes one.

        Returns:
            What the function returned.

        Raises:
            ToolArgumentsError: The arguments do not fit the schema.
            ValueError: The function takes a context and none was given.
            Exception: Whatever the function raises.
        """
        try:
            validated = self._arguments.model_validate(dict(arguments))
        except ValidationError as exc:
            raise ToolArgumentsError(self.name, _problems(exc)) from exc
        kwargs = {
            field.alias or name: getattr(validated, name)
            for name, field in type(validated).model_fields.items()
        }
        if self._context_parameter is not None:
            if ctx is None:
                raise ValueError(f"tool {self.name!r} needs the calling agent's context")
            kwargs[self._context_parameter] = ctx
        if self._is_async:
            return await self.function(**kwargs)
        return await anyio.to_thread.run_sync(functools.partial(self.function, **kwargs))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class AgentTool(Tool):
    """A tool that sends its ``input`` argument to another agent of the mesh and returns the
    agent's output (through ``ctx.call``, so deadline, path and usage follow the call).

    Args:
        agent: The agent to call.
        description: What the agent does, for the model.
        name: The tool's name; defaults to the agent's.

    Raises:
        ValueError: The name is not a valid tool name.
    """

    def __init__(self, agent: str, description: str, *, name: str | None = None) -> None:
        async def call(input: str, ctx: Context) -> Any:
            """Ask the agent.

            Args:
                input: What to send to the agent: a question, an instruction or a text.
            """
            return await ctx.call(agent, input)

        super().__init__(call, name=name or agent, description=description)
        self.agent = agent
        """The agent called."""


def tool_of(piece: Piece) -> Tool:
    """The tool a piece of settings names: a `Tool` as it is, a function made into one.

    Raises:
        ValueError: It names something that is neither a function nor a `Tool`, or a
            function that cannot be a tool (see `Tool`).
    """
    target = piece.target
    if isinstance(target, Tool):
        return target
    if not callable(target) or isinstance(target, type):
        raise ValueError(f"tool {piece.ref!r} is not a function")
    return Tool(target)


def resolve_tools(
    tools: Iterable[Piece] = (),
    agent_tools: Mapping[str, str] | None = None,
    *,
    extra: Iterable[Tool] = (),
) -> dict[str, Tool]:
    """The tools a config names, by tool name.

    Args:
        tools: Functions or tools named in settings (see `mesh.refs.Piece`).
        agent_tools: Agents to offer as tools, with the description the model sees.
        extra: Tools built in code.

    Raises:
        ValueError: A reference does not resolve, or two tools share a name.
    """
    every = [tool_of(piece) for piece in tools]
    every += [AgentTool(agent, text) for agent, text in (agent_tools or {}).items()]
    every += list(extra)
    by_name: dict[str, Tool] = {}
    for tool in every:
        if tool.name in by_name:
            raise ValueError(f"two tools are named {tool.name!r}")
        by_name[tool.name] = tool
    return by_name


def _arguments_model(
    name: str, function: Callable[..., Any], docs: Mapping[str, str]
) -> tuple[type[BaseModel], str | None]:
    """The pydantic model of the function's arguments, and its context parameter if any."""
    try:
        hints = get_type_hints(function, include_extras=True)
        signature = inspect.signature(function)
    except (NameError, TypeError, ValueError) as exc:
        raise ValueError(f"cannot read the signature of tool {name!r}: {exc}") from exc
    fields: dict[str, Any] = {}
    context_parameter: str | None = None
    for parameter in signature.parameters.values():
        if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            raise ValueError(
                f"tool {name!r}: parameter {parameter.name!r} must be passable by keyword "
                "(no *args, **kwargs or positional-only parameters)"
            )
        hint = hints.get(parameter.name, Any)
        if _is_context(hint):
            context_parameter = parameter.name
            continue
        default = ... if parameter.default is parameter.empty else parameter.default
        # Fields are named apart and aliased to the parameter: a parameter may then be called
        # anything (``json``, ``model_name``) without clashing with pydantic's own names.
        field = Field(default, alias=parameter.name)
        if parameter.name in docs and not _has_description(hint):
            field = Field(default, alias=parameter.name, description=docs[parameter.name])
        fields[f"arg_{parameter.name}"] = (hint, field)
    model = create_model(
        f"{name}_arguments",
        __config__=ConfigDict(extra="forbid", protected_namespaces=()),
        **fields,
    )
    return model, context_parameter


def _is_context(hint: Any) -> bool:
    """Whether the hint is `Context`, optional or annotated."""
    if get_origin(hint) is Annotated:
        hint = get_args(hint)[0]
    members = get_args(hint) if get_origin(hint) in (Union, UnionType) else (hint,)
    return any(isinstance(member, type) and issubclass(member, Context) for member in members)


def _has_description(hint: Any) -> bool:
    """Whether an ``Annotated`` hint already describes the parameter (it wins over the doc)."""
    if get_origin(hint) is not Annotated:
        return False
    return any(getattr(extra, "description", None) for extra in get_args(hint)[1:])


def _read_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The first paragraph, and each parameter's description from a Google-style ``Args:``."""
    lines = doc.splitlines()
    summary: list[str] = []
    for line in lines:
        if not line.strip() or _ARGS_HEADER.match(line):
            break
        summary.append(line.strip())
    described: dict[str, str] = {}
    start = next((i for i, line in enumerate(lines) if _ARGS_HEADER.match(line)), len(lines))
    entry_indent: int | None = None
    current: str | None = None
    for line in lines[start + 1 :]:
        indent = len(line) - len(line.lstrip())
        if not line.strip():
            continue
        if indent == 0:
            break  # the next section (Returns:, Raises:, ...)
        entry_indent = entry_indent or indent
        entry = _ARG_LINE.match(line.strip())
        if indent == entry_indent and entry:
            current = entry.group(1)
            described[current] = entry.group(2)
        elif current is not None:
            described[current] = f"{described[current]} {line.strip()}".strip()
    return " ".join(summary), described


def _problems(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "(arguments)",
            "problem": error["msg"],
        }
        for error in exc.errors(include_url=False, include_input=False)
    ]
