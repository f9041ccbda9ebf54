"""`plan_execute`: a planner breaks the goal into steps with dependencies; the steps run as soon
as what they depend on is done, and a failed step sends the planner back to work.

The planner (by default the built-in ``planner`` agent) answers ``{"steps": [{"id",
"description", "agent", "depends_on"}]}``. Every step whose dependencies are done is started
at once (at most ``max_parallel`` in flight), so independent steps overlap and dependent
ones wait; each step is given ``{"task": <the goal>, "step": <its description>, "results":
{<dependency id>: <its output>}}``. When a step fails, no new step starts; once the steps in
flight have answered, the planner is asked again, from the current state, at most
``max_replans`` times (but not after a step ran out of the task's budget: the run then stops
with what it has). A re-plan may repeat a completed step by its id: it does not run again
and its output stands, so new steps can depend on it. At most ``max_steps`` steps run in all.

In YAML::

    project:
      kind: plan_execute
      planner: planner              # the default
      agents: [researcher, writer]  # the agents steps may name
      max_parallel: 4
      max_replans: 2
      max_steps: 20
      step_timeout: 60
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.planner import Plan, PlannerInput, Step
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import ErrorInfo, Task
from mesh.errors import (
    BadSchemaError,
    BudgetExceededError,
    ErrorCode,
    UnknownAgentError,
    error_class,
)
from mesh.refs import AgentRef
from patterns._callee import output_of, parse_output
from patterns._metrics import measured, partial_on_budget

__all__ = ["PlanExecuteConfig", "PlanExecutePattern"]


class PlanExecuteConfig(BaseModel):
    """Settings of a `plan_execute` pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    planner: AgentRef = Field(default="planner", validate_default=True)
    """The agent that plans: given ``{"goal", "context"?}``, it answers ``{"steps": [...]}``."""
    agents: tuple[AgentRef, ...] = Field(min_length=1)
    """The agents steps may name; a plan naming another is refused before any step runs."""
    default_agent: AgentRef | None = None
    """Does the steps whose agent is null; ``None``: such a plan is refused."""
    max_parallel: int | None = Field(default=None, ge=1)
    """Most steps in flight at once; ``None``: every step that is ready."""
    max_replans: int = Field(default=2, ge=0)
    """Most times the planner is asked again after a failed step."""
    max_steps: int = Field(default=20, ge=1)
    """Most steps run in all, across plans."""
    step_timeout: float | None = Field(default=None, gt=0)
    """Seconds each step may take; ``None`` for the callee's default."""

    @model_validator(mode="after")
    def _default_agent_allowed(self) -> PlanExecuteConfig:
        if self.default_agent is not None and self.default_agent not in self.agents:
            raise ValueError(f"default_agent {self.default_agent!r} is not one of `agents`")
        return self


class _Goal(PlannerInput):
    """The goal as text, or ``{"goal", "context"?}``: what the planner itself takes."""


@dataclass
class _State:
    """What the run has done so far."""

    began: float
    completed: dict[str, Any] = field(default_factory=dict)
    entries: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    in_flight: int = 0
    width: int = 0
    replans: int = 0

    def ms(self) -> float:
        return round((time.perf_counter() - self.began) * 1000, 3)


class PlanExecutePattern(Agent[PlanExecuteConfig]):
    """Plan the goal's steps, run them in dependency order and in parallel where they are
    independent, and re-plan after a failure (see the module docstring).

    Input: the goal as text, or ``{"goal": "...", "context"?: "..."}`` (passed on to the
    planner).

    Output: ``{"result", "steps", "replans"}``: the output of the final plan's last step (the
    one no other step depends on), or ``{id: output}`` when there are several; one entry per
    step run, in the order they started: ``{"id", "agent", "plan", "output" | "error",
    "started_ms", "ended_ms"}`` (``plan`` counts from 0, ``*_ms`` from the run's start,
    ``error`` is ``{"code", "message", "retryable", "details"?}``); how many re-plans there
    were.

    A re-plan asks the planner ``{"goal", "context"}``, the context holding the caller's
    context, then ``{"completed": {id: output}, "failed": [{"id", "agent", "description",
    "error"}]}`` as JSON and how to use it (the built-in planner takes no other keys).

    Figures (``meta["pattern"]["figures"]``): ``steps_run``, ``failures``, ``parallel_width``
    (most steps in flight at once), ``replans``, ``plans`` (each plan's step count).

    Raises:
        BadSchemaError: The input is not a goal.
        MeshError: The planner failed (its error, the message naming it).
        InvalidOutputError: The planner's answer is not a plan.
        UnknownAgentError: A plan names an agent not in ``agents`` (or none, without a
            ``default_agent``); ``details``: ``{"steps": {id: agent}, "agents"}``.
        BudgetExceededError: A plan would take the steps run past ``max_steps``.
        MeshError: A step failed with no re-plan left: the step's error class and code;
            ``details``: ``{"failed", "steps", "replans"}``.
        BudgetExceededError: A step, or the planner, ran out of the task's budget (no
            re-plan is tried), or ``max_steps`` (above): the details as above, and
            ``partial``: ``{"result": null, "completed": {id: output}, "steps", "replans"}``.
    """

    name = "plan_execute"
    description = "Plans a goal's steps, runs them in dependency order, re-plans on failure."
    config_model = PlanExecuteConfig

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        try:
            goal = _Goal.model_validate(task.input)
        except ValueError as exc:
            raise BadSchemaError(
                'plan_execute input: a goal as text or {"goal", "context"?} is needed'
            ) from exc
        async with measured(ctx, "plan_execute") as figures:
            state = _State(began=time.perf_counter())
            with partial_on_budget(lambda: _partial(state)):
                return await self._execute(goal, state, figures, ctx)

    async def _execute(
        self, goal: _Goal, state: _State, figures: dict[str, Any], ctx: Context
    ) -> dict[str, Any]:
        """Plan, run, re-plan after failures, until the plan is done or cannot go on."""
        sizes: list[int] = []
        plan = await self._plan({"goal": goal.goal, "context": goal.context}, ctx)
        while True:
            sizes.append(len(plan.steps))
            self._check(plan, state)
            await self._run(plan, len(sizes) - 1, goal.goal, state, ctx)
            figures.update(
                steps_run=len(state.entries),
                failures=sum("error" in entry for entry in state.entries),
                parallel_width=state.width,
                replans=state.replans,
                plans=sizes,
            )
            if not state.failed:
                break
            spent = any(f["error"]["code"] == ErrorCode.BUDGET_EXCEEDED for f in state.failed)
            if spent or state.replans >= self.config.max_replans:
                raise self._exhausted(state, spent=spent)
            state.replans += 1
            figures["replans"] = state.replans
            plan = await self._plan(self._replan_input(goal, state), ctx)
            state.failed = []
        return {
            "result": _result(plan, state),
            "steps": state.entries,
            "replans": state.replans,
        }

    async def _plan(self, request: dict[str, Any], ctx: Context) -> Plan:
        planner = self.config.planner
        asked = {key: value for key, value in request.items() if value is not None}
        reply = await ctx.request(planner, asked)
        output = output_of(reply, f"plan_execute: the planner {planner!r} failed", agent=planner)
        return parse_output(Plan, output, f"plan_execute: the planner {planner!r} gave no plan")

    def _check(self, plan: Plan, state: _State) -> None:
        config = self.config
        unknown = {
            step.id: step.agent
            for step in plan.steps
            if step.id not in state.completed
            and (step.agent or config.default_agent) not in config.agents
        }
        if unknown:
            listing = ", ".join(
                f"{key!r} ({agent or 'no agent'})" for key, agent in unknown.items()
            )
            raise UnknownAgentError(
                f"plan_execute: the plan gives steps to agents it may not use: {listing}; "
                f"allowed: {', '.join(config.agents)}",
                details={"steps": unknown, "agents": list(config.agents)},
            )
        to_run = sum(step.id not in state.completed for step in plan.steps)
        run = len(state.entries)
        if run + to_run > config.max_steps:
            raise BudgetExceededError(
                f"plan_execute: the plan's {to_run} steps to run would bring the steps run to "
                f"{run + to_run}, above max_steps {config.max_steps}",
                details={"plan": plan.model_dump(), "steps": state.entries},
            )

    async def _run(self, plan: Plan, index: int, goal: str, state: _State, ctx: Context) -> None:
        """Run the plan's steps not yet completed, each once its dependencies are."""
        todo = [step for step in plan.steps if step.id not in state.completed]
        slots = anyio.CapacityLimiter(self.config.max_parallel or max(len(todo), 1))
        launched: set[str] = set()

        async def run(step: Step) -> None:
            async with slots:
                if state.failed:
                    return  # a step failed while this one waited for a slot: re-plan first
                await self._step(step, index, goal, state, ctx)
            launch(group)

        def launch(group: anyio.abc.TaskGroup) -> None:
            if state.failed:
                return
            for step in todo:
                ready = all(dep in state.completed for dep in step.depends_on)
                if ready and step.id not in launched:
                    launched.add(step.id)
                    group.start_soon(run, step)

        async with anyio.create_task_group() as group:
            launch(group)

    async def _step(self, step: Step, index: int, goal: str, state: _State, ctx: Context) -> None:
        agent = step.agent or self.config.default_agent or ""
        given = {
            "task": goal,
            "step": step.description,
            "results": {dep: state.completed[dep] for dep in step.depends_on},
        }
        entry: dict[str, Any] = {"id": step.id, "agent": agent, "plan": index}
        state.entries.append(entry)  # in the order the steps start
        state.in_flight += 1
        state.width = max(state.width, state.in_flight)
        started = state.ms()
        try:
            reply = await ctx.request(agent, given, timeout=self.config.step_timeout)
        finally:
            state.in_flight -= 1
        if reply.error is None:
            state.completed[step.id] = reply.output
            entry["output"] = reply.output
        else:
            entry["error"] = reply.error.model_dump(exclude_none=True)
            state.failed.append({**entry, "description": step.description})
        entry.update(started_ms=started, ended_ms=state.ms())

    def _replan_input(self, goal: _Goal, state: _State) -> dict[str, Any]:
        progress = {
            "completed": state.completed,
            "failed": [
                {key: failed[key] for key in ("id", "agent", "description", "error")}
                for failed in state.failed
            ],
        }
        parts = [goal.context] if goal.context else []
        parts.append(
            "Progress so far (JSON):\n"
            + json.dumps(progress, ensure_ascii=False, default=str)
            + "\n\nPlan the remaining work towards the goal, avoiding what failed. A completed "
            "step may be repeated with the same id: it will not run again and its output "
            "stands, so new steps can depend on it."
        )
        return {"goal": goal.goal, "context": "\n\n".join(parts)}

    def _exhausted(self, state: _State, *, spent: bool) -> Exception:
        failures = state.failed
        first = (
            next(f for f in failures if f["error"]["code"] == ErrorCode.BUDGET_EXCEEDED)
            if spent
            else failures[0]
        )
        error = ErrorInfo.model_validate(first["error"])
        allowed = self.config.max_replans
        why = (
            "ran out of the task's budget"
            if spent
            else f"failed and the {allowed} re-plan{'' if allowed == 1 else 's'} allowed are "
            "used up"
        )
        return error_class(error.code)(
            f"plan_execute: step {first['id']!r} (agent {first['agent']!r}) {why}: {error.message}",
            retryable=error.retryable,
            details={
                "failed": [
                    {key: failed[key] for key in ("id", "agent", "error")}
                    for failed in state.failed
                ],
                "steps": state.entries,
                "replans": state.replans,
            },
        )


def _partial(state: _State) -> dict[str, Any]:
    """What a run that ran out of budget had done: its output, less the result."""
    return {
        "result": None,
        "completed": dict(state.completed),
        "steps": state.entries,
        "replans": state.replans,
    }


def _result(plan: Plan, state: _State) -> Any:
    """The output of the plan's steps that no other step depends on."""
    needed = {dep for step in plan.steps for dep in step.depends_on}
    last = [step.id for step in plan.steps if step.id not in needed]
    if len(last) == 1:
        return state.completed[last[0]]
    return {step_id: state.completed[step_id] for step_id in last}
