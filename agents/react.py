"""`react`: a tool-using loop. The model is asked, runs the tools it calls, sees their results,
and is asked again, until it answers without calling a tool or runs out of steps
(``max_steps`` model calls, ``max_tool_calls`` tool calls) or of budget.

A tool that fails (unknown name, arguments that do not fit its schema, an exception) does not
fail the task: its error goes back to the model as the tool's result, so it can recover.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import to_jsonable_python

from agents._model import DEFAULT_MODEL, ModelName, parse_input
from agents.tools import Tool, ToolArgumentsError, resolve_tools, tool_of
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import AgentError, BudgetExceededError
from mesh.llm.types import ChatMessage, ToolCall
from mesh.refs import AgentRef, Piece

__all__ = ["DEFAULT_SYSTEM_PROMPT", "ReactAgent", "ReactConfig", "ReactInput"]

DEFAULT_SYSTEM_PROMPT = (
    "You answer the user's question. Call the tools you are given when they help; a tool's "
    "result, or its error, comes back to you. When you know the answer, reply with it "
    "without calling a tool."
)
"""The system prompt of a `react` agent whose config gives none."""


class ReactConfig(BaseModel):
    """Settings of a `react` agent."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: ModelName = DEFAULT_MODEL
    """The model to ask, ``provider:model``."""
    system: str = DEFAULT_SYSTEM_PROMPT
    """The system prompt."""
    tools: tuple[Piece, ...] = ()
    """Python functions offered as tools: pieces registered in code (`mesh.refs.Pieces`), or
    ``"package.module:function"``; in code, functions or `Tool` objects."""
    agent_tools: dict[AgentRef, str] = Field(default_factory=dict)
    """Agents of the mesh offered as tools, by name, with what each does (the model reads it)."""
    max_steps: int = Field(default=8, ge=1)
    """Most model calls for one task; past it the task fails with ``agent_error``."""
    max_tool_calls: int | None = Field(default=None, ge=1)
    """Most tool calls for one task, over all its steps (a model may ask for many at once);
    a step that would pass it fails the task with ``agent_error`` before its tools run.
    ``None``: no limit but ``max_steps``."""
    temperature: float | None = None
    """Sampling temperature; ``None`` for the provider's default."""
    max_tokens: int | None = Field(default=None, ge=1)
    """Output token limit of each model call; ``None`` for the provider's default."""

    @field_validator("tools")
    @classmethod
    def _tools_are_tools(cls, tools: tuple[Piece, ...]) -> tuple[Piece, ...]:
        for piece in tools:
            tool_of(piece)
        return tools


class ReactInput(BaseModel):
    """What a react agent is asked: the question, or ``{"question": ...}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    question: str
    """The question to answer."""

    @model_validator(mode="before")
    @classmethod
    def _plain_text(cls, data: Any) -> Any:
        return {"question": data} if isinstance(data, str) else data


class ReactAgent(Agent[ReactConfig]):
    """Answer a question by calling tools in a loop (the ReAct pattern).

    Input is the question as text, or ``{"question": ...}``. Output is ``{"answer": text,
    "steps": model calls made, "tool_calls": [{"name", "arguments", "result" | "error"}, ...]}``
    with the tool calls in the order they ran.

    Args:
        name: The name it is called by.
        config: Its settings.
        tools: Tools built in code, offered beside those the config names.

    Raises:
        ValueError: A tool does not resolve, or two tools share a name.
    """

    name = "react"
    description = "Answers a question by calling tools in a loop."
    config_model = ReactConfig

    def __init__(
        self,
        *,
        name: str | None = None,
        config: ReactConfig | None = None,
        tools: Sequence[Tool] = (),
    ) -> None:
        super().__init__(name=name, config=config)
        self.tools: Mapping[str, Tool] = resolve_tools(
            self.config.tools, self.config.agent_tools, extra=tools
        )
        """The tools offered to the model, by name."""
        self._specs = tuple(tool.spec for tool in self.tools.values())

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        """Run the loop for one question.

        Raises:
            BadSchemaError: The input is neither text nor ``{"question": text}``.
            AgentError: No answer within ``max_steps`` model calls, or the model asked for
                more than ``max_tool_calls`` tool calls; ``details`` carry the limit and the
                tool calls made.
            BudgetExceededError: The task's budget ran out: a model call was refused;
                ``details.partial`` is the output so far, with ``answer`` null.
            MeshError: The model's own failures (rate limit, auth, ...).
        """
        config = self.config
        question = parse_input(ReactInput, task.input, agent="react").question
        messages = [ChatMessage(role="user", content=question)]
        record: list[dict[str, Any]] = []
        for step in range(1, config.max_steps + 1):
            try:
                response = await ctx.llm(
                    config.model,
                    messages,
                    system=config.system,
                    tools=self._specs,
                    temperature=config.temperature,
                    max_tokens=config.max_tokens,
                )
            except BudgetExceededError as exc:
                partial = {"answer": None, "steps": step - 1, "tool_calls": record}
                details = {**(exc.details or {}), "partial": partial}
                raise BudgetExceededError(exc.message, details=details) from exc
            if not response.tool_calls:
                return {"answer": response.text, "steps": step, "tool_calls": record}
            if step == config.max_steps:
                break  # the model wants more tools than it has steps to read their results
            most = config.max_tool_calls
            if most is not None and len(record) + len(response.tool_calls) > most:
                raise AgentError(
                    f"{self.name}: the model asked for {len(response.tool_calls)} more tool "
                    f"calls after {len(record)}, past max_tool_calls={most}",
                    details={"max_tool_calls": most, "tool_calls": record},
                )
            messages.append(
                ChatMessage(role="assistant", content=response.text, tool_calls=response.tool_calls)
            )
            for call in response.tool_calls:
                content, entry = await self._run(call, ctx)
                record.append(entry)
                messages.append(ChatMessage(role="tool", content=content, tool_call_id=call.id))
        raise AgentError(
            f"{self.name} gave no answer within max_steps={config.max_steps} model calls",
            details={"max_steps": config.max_steps, "tool_calls": record},
        )

    async def _run(self, call: ToolCall, ctx: Context) -> tuple[str, dict[str, Any]]:
        """Run one tool call: the text the model sees, and the call's entry in the output."""
        entry: dict[str, Any] = {"name": call.name, "arguments": call.arguments}
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(self.tools) or "none"
            entry["error"] = f"unknown tool {call.name!r} (the tools are: {known})"
        else:
            try:
                result = to_jsonable_python(await tool.run(call.arguments, ctx=ctx), fallback=str)
            except ToolArgumentsError as exc:
                entry["error"] = str(exc)
            # Any failure of a tool is the model's to handle, not the task's: it is reported.
            except Exception as exc:  # noqa: BLE001
                entry["error"] = f"{type(exc).__name__}: {exc}"
            else:
                entry["result"] = result
                text = result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
                return text, entry
        ctx.log.info("tool call %s failed: %s", call.name, entry["error"])
        return f"Error: {entry['error']}", entry
