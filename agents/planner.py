"""`planner`: breaks a goal into steps with dependencies, as a validated `Plan`.

A plan is checked as it is parsed (ids unique, every dependency a step of the plan, no
cycles; within the step limit and naming only available agents), so a model's plan that
breaks a rule is sent back once with the problem, like any output that does not fit its
schema, before the call fails with ``invalid_output``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from agents._model import DEFAULT_MODEL, ModelName, checked_output, parse_input
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task

__all__ = [
    "Plan",
    "PlannerAgent",
    "PlannerConfig",
    "PlannerInput",
    "Step",
    "bounded_plan",
    "find_cycle",
]


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be blank")
    return text


# Checked by a validator rather than ``min_length``: some providers' strict structured output
# refuses string length keywords in the schema.
Text = Annotated[str, AfterValidator(_not_blank)]


class Step(BaseModel):
    """One step of a plan."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    id: Text
    """A short id, unique in the plan, that other steps' ``depends_on`` refer to."""
    description: Text
    """What to do in this step."""
    agent: str | None
    """The agent that should do it, or null if none fits."""
    depends_on: list[str]
    """Ids of the steps that must be done before this one; empty if none."""


class Plan(BaseModel):
    """Steps towards a goal: ids unique, dependencies among the plan's steps, no cycles."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    steps: list[Step] = Field(min_length=1)
    """The steps, in the order to do them where the dependencies allow."""

    @model_validator(mode="after")
    def _steps_form_a_dag(self) -> Plan:
        ids = [step.id for step in self.steps]
        repeated = sorted({step_id for step_id in ids if ids.count(step_id) > 1})
        if repeated:
            raise ValueError(f"step ids must be unique; repeated: {repeated}")
        for step in self.steps:
            dangling = [dep for dep in step.depends_on if dep not in ids]
            if dangling:
                raise ValueError(
                    f"step {step.id!r} depends on {dangling}, which are not steps of the plan"
                )
        cycle = find_cycle({step.id: step.depends_on for step in self.steps})
        if cycle:
            raise ValueError(f"the dependencies form a cycle: {' -> '.join(cycle)}")
        return self


def find_cycle(depends_on: Mapping[str, Sequence[str]]) -> list[str]:
    """A dependency cycle, as the ids along it with the first repeated at the end
    (``["a", "b", "a"]``: a depends on b, which depends on a); empty when there is none.
    Dependencies that are not keys of the mapping are ignored."""
    on_path, done = 1, 2
    state: dict[str, int] = {}
    for root in depends_on:
        if root in state:
            continue
        path, pending = [root], [iter(depends_on[root])]
        state[root] = on_path
        while pending:  # depth-first, without recursion: a long chain must not overflow
            child = next(pending[-1], None)
            if child is None:
                state[path.pop()] = done
                pending.pop()
            elif state.get(child) == on_path:
                return [*path[path.index(child) :], child]
            elif child not in state and child in depends_on:
                state[child] = on_path
                path.append(child)
                pending.append(iter(depends_on[child]))
    return []


def bounded_plan(*, max_steps: int, agents: Collection[str] | None = None) -> type[Plan]:
    """A `Plan` type that also holds at most ``max_steps`` steps, each naming one of
    ``agents`` (or none) when ``agents`` is given."""
    available = None if agents is None else frozenset(agents)

    def check_agents(plan: Plan) -> Plan:
        if available is None:
            return plan
        for step in plan.steps:
            if step.agent is not None and step.agent not in available:
                raise ValueError(
                    f"step {step.id!r} names agent {step.agent!r}, which is not available "
                    f"(available: {sorted(available)}, or null)"
                )
        return plan

    return checked_output(
        Plan, check=check_agents, steps=(list[Step], Field(min_length=1, max_length=max_steps))
    )


class PlannerConfig(BaseModel):
    """Settings of a `planner` agent."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: ModelName = DEFAULT_MODEL
    """The model to ask, ``provider:model``."""
    max_steps: int = Field(default=10, ge=1)
    """Most steps a plan may have."""
    agents: tuple[str, ...] | None = Field(default=None, min_length=1)
    """The agents steps may be given to; ``None``: any name (or none) is accepted."""
    instructions: str | None = None
    """How to plan (style, granularity, what the agents do); added to the system prompt."""


class PlannerInput(BaseModel):
    """What a planner is asked: the goal, or ``{"goal": ..., "context"?: ...}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    goal: str = Field(min_length=1)
    """What the plan is to achieve."""
    context: str | None = None
    """What the planner should know (facts, constraints, earlier results)."""

    @model_validator(mode="before")
    @classmethod
    def _plain_text(cls, data: Any) -> Any:
        return {"goal": data} if isinstance(data, str) else data


class PlannerAgent(Agent[PlannerConfig]):
    """Break a goal into steps with dependencies.

    Input: the goal as text, or ``{"goal": "...", "context"?: "..."}``.

    Output: a `Plan` as an object: ``{"steps": [{"id", "description", "agent",
    "depends_on": [ids]}]}``, with unique ids, dependencies among the plan's steps, no cycle,
    at most ``max_steps`` steps, and only agents from ``agents`` when that is set.

    Raises:
        BadSchemaError: The input is not a goal.
        InvalidOutputError: The model gave no valid plan in two tries (a cycle or a dangling
            dependency counts as invalid).
        MeshError: The model's failure (see `Context.llm`).
    """

    name = "planner"
    description = "Breaks a goal into steps with dependencies."
    config_model = PlannerConfig

    def __init__(self, *, name: str | None = None, config: PlannerConfig | None = None) -> None:
        super().__init__(name=name, config=config)
        self._plan_type = bounded_plan(max_steps=self.config.max_steps, agents=self.config.agents)

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        request = parse_input(PlannerInput, task.input, agent="planner")
        prompt = request.goal
        if request.context:
            prompt = f"{prompt}\n\nContext:\n{request.context}"
        response = await ctx.llm(
            self.config.model, prompt, system=self._system(), output_type=self._plan_type
        )
        plan: Plan = response.parsed
        return plan.model_dump()

    def _system(self) -> str:
        config = self.config
        parts = [
            "Plan how to reach the user's goal, in at most "
            f'{config.max_steps} steps. Give each step a short unique id (such as "s1"), '
            "what to do, the agent to do it, and the ids of the steps it depends on: only "
            "steps of this plan, and no step may depend on itself, directly or not."
        ]
        if config.agents is None:
            parts.append("Set a step's agent to null unless the goal says who should do it.")
        else:
            listed = "\n".join(f"- {agent}" for agent in config.agents)
            parts.append(
                f"Available agents:\n{listed}\nSet each step's agent to one of them, or to "
                "null if none fits."
            )
        if config.instructions:
            parts.append(config.instructions)
        return "\n\n".join(parts)
