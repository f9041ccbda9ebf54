"""`swarm`: agents pass control to each other by handing off, until one of them answers.

The entry member gets the task first. A member's output is either its answer, which ends the
swarm, or a handoff, which gives control to another member::

    {"handoff": {"to": "billing", "message"?: "card charged twice", "context"?: {"order": 7}}}

(build it with `handoff`). Any output that is not an object with a ``"handoff"`` key is an
answer. Each member is given a `SwarmState`::

    {"input": <the original task>, "conversation": [{"agent", "content"}, ...], "context": {...}}

where the conversation holds one turn per member that acted before it (a handoff's turn is its
message, ``""`` without one) and the context is the one carried so far: each handoff's context
is merged over it (its keys win). ``max_handoffs`` stops loops.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import DepthExceededError, InvalidOutputError, UnknownAgentError
from mesh.refs import AgentRef
from patterns._callee import failure, json_in_text
from patterns._conversation import ConversationInput, Turn, read_input
from patterns._metrics import measured, partial_on_budget

__all__ = [
    "DEFAULT_MAX_HANDOFFS",
    "Handoff",
    "HandoffOutput",
    "SwarmConfig",
    "SwarmPattern",
    "SwarmState",
    "handoff",
]

DEFAULT_MAX_HANDOFFS = 10
"""Most handoffs in one task unless the config says otherwise."""


class SwarmConfig(BaseModel):
    """Settings of a `swarm` pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    members: tuple[AgentRef, ...] = Field(min_length=1)
    """The agents of the swarm, by name; a handoff may name only one of them."""
    entry: str | None = None
    """The member that gets the task first; ``None`` for the first member."""
    max_handoffs: int = Field(default=DEFAULT_MAX_HANDOFFS, ge=0)
    """Most handoffs in one task; a member handing off once more fails the task with
    ``depth_exceeded`` (the guard against members passing the task around forever)."""

    @field_validator("members")
    @classmethod
    def _distinct_names(cls, members: tuple[str, ...]) -> tuple[str, ...]:
        repeated = sorted({name for name in members if members.count(name) > 1})
        if repeated:
            raise ValueError(f"members repeat: {repeated}")
        return members

    @model_validator(mode="after")
    def _entry_is_a_member(self) -> SwarmConfig:
        if self.entry is not None and self.entry not in self.members:
            raise ValueError(f"entry {self.entry!r} is not one of the members {list(self.members)}")
        return self

    @property
    def first(self) -> str:
        """The member that gets the task first."""
        return self.entry or self.members[0]


class Handoff(BaseModel):
    """What a member hands over: the value of the ``"handoff"`` key of its output."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    to: str
    """The member that acts next."""
    message: str = ""
    """What this member says as it hands off (its turn in the conversation)."""
    context: dict[str, Any] = Field(default_factory=dict)
    """Keys merged over the context carried so far."""


class HandoffOutput(BaseModel):
    """A member's output that hands off: ``{"handoff": {"to", "message"?, "context"?}}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    handoff: Handoff
    """Who acts next, and what goes with the task."""


class SwarmState(ConversationInput):
    """What each member is given, and what a swarm may be given:
    ``{"input", "conversation", "context"}``."""

    context: dict[str, Any] = Field(default_factory=dict)
    """What the members handed over so far, merged."""


def handoff(
    to: str, *, message: str = "", context: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The output with which a member hands the task to the member ``to``.

    Args:
        to: The member that acts next.
        message: What this member says (its turn in the conversation).
        context: Keys to carry, merged over the context so far.

    Returns:
        ``{"handoff": {"to", "message", "context"}}``.
    """
    passed = Handoff(to=to, message=message, context=dict(context or {}))
    return HandoffOutput(handoff=passed).model_dump()


class SwarmPattern(Agent[SwarmConfig]):
    """Let the members hand the task to each other until one answers (see the module
    docstring).

    Input: the task (any value), or ``{"input", "conversation"?, "context"?}`` to start with
    a conversation and a context (any object with an ``"input"`` key is read so).

    Output: ``{"output", "path", "handoffs"}``: the answering member's output, the members
    in the order they acted, and how many handoffs there were.

    Figures (``meta["pattern"]["figures"]``): ``handoffs``, ``path``.

    Raises:
        BadSchemaError: The input's conversation or context is malformed.
        UnknownAgentError: A member handed off to an agent that is not a member; ``details``
            has ``agent``, ``from``, ``members`` and ``path``.
        DepthExceededError: A member handed off once more than ``max_handoffs``; ``details``
            has ``max_handoffs``, ``next`` and ``path``.
        InvalidOutputError: A member's output has a ``"handoff"`` key but is no handoff.
        MeshError: A member failed: its error class and code, the message naming it;
            ``details`` has ``agent``, ``path`` and the member's ``error``.
        BudgetExceededError: A member ran out of the task's budget: as above, and
            ``details.partial`` is ``{"output": null, "path", "handoffs", "conversation"}``
            so far.
    """

    name = "swarm"
    description = "Agents hand a task to each other until one of them answers it."
    config_model = SwarmConfig

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        state = read_input(SwarmState, task.input, pattern="swarm")
        async with measured(ctx, "swarm") as figures:
            conversation = list(state.conversation)
            context = dict(state.context)
            path: list[str] = []
            figures.update(handoffs=0, path=path)
            member = self.config.first
            with partial_on_budget(lambda: _partial(path, conversation)):
                while True:
                    path.append(member)
                    given = SwarmState(
                        input=state.input, conversation=tuple(conversation), context=context
                    )
                    reply = await ctx.request(member, given.model_dump())
                    if reply.error is not None:
                        where = f"swarm {self.name!r}: member {member!r} failed"
                        raise failure(reply, where, agent=member, path=path)
                    passed = self._handoff(member, reply.output)
                    if passed is None:
                        return {"output": reply.output, "path": path, "handoffs": len(path) - 1}
                    self._check(member, passed.to, path)
                    conversation.append(Turn(agent=member, content=passed.message))
                    context.update(passed.context)
                    figures["handoffs"] = len(path)
                    member = passed.to

    def _handoff(self, member: str, output: Any) -> Handoff | None:
        """The handoff in ``output`` (an object, or a model's JSON text), or ``None`` if it is
        an answer."""
        if isinstance(output, str) and '"handoff"' in output:
            try:  # an LLM agent hands off by writing the handoff as JSON
                output = json_in_text(output)
            except ValueError:
                return None
        if not (isinstance(output, Mapping) and "handoff" in output):
            return None
        try:
            return HandoffOutput.model_validate(output).handoff
        except ValidationError as exc:
            errors = [
                {"field": ".".join(map(str, e["loc"])), "problem": e["msg"]}
                for e in exc.errors(include_url=False, include_input=False)
            ]
            problems = "; ".join(f"{error['field']}: {error['problem']}" for error in errors)
            raise InvalidOutputError(
                f"swarm {self.name!r}: member {member!r} returned a malformed handoff "
                f"({problems}); a handoff is {{'handoff': {{'to', 'message'?, 'context'?}}}}",
                details={"agent": member, "errors": errors},
            ) from exc

    def _check(self, member: str, to: str, path: list[str]) -> None:
        """Refuse a handoff outside the swarm, or one past ``max_handoffs``."""
        members = self.config.members
        if to not in members:
            raise UnknownAgentError(
                f"swarm {self.name!r}: member {member!r} handed off to {to!r}, which is not a "
                f"member (members: {', '.join(members)})",
                details={"agent": to, "from": member, "members": list(members), "path": path},
            )
        limit = self.config.max_handoffs
        if len(path) > limit:
            raise DepthExceededError(
                f"swarm {self.name!r}: member {member!r} handed off to {to!r} after {limit} "
                f"handoffs, the most allowed (max_handoffs); path: {' -> '.join(path)}",
                details={"max_handoffs": limit, "next": to, "path": path},
            )


def _partial(path: list[str], conversation: list[Turn]) -> dict[str, Any]:
    """The output of a run that ran out of budget, as far as it got."""
    return {
        "output": None,
        "path": path,
        "handoffs": max(0, len(path) - 1),
        "conversation": [turn.model_dump() for turn in conversation],
    }
