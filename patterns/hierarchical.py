"""`hierarchical`: a manager splits the task into subtasks for its teams, the teams work on them
at once, and the manager merges their results into one answer.

A team is any agent, a pattern too, another hierarchical one included: each run passes its
level down the call tree in the task context (`HIERARCHY`), and a run deeper than
``max_depth`` (the smallest of its own and of every run above it) is refused with
``depth_exceeded`` before its manager is asked. A manager model's output schema lists the
teams, so it cannot name another; a manager agent's assignments to teams not listed, and teams
that fail, either fail the run or are reported in its output (``unknown_teams``,
``on_team_error``); never dropped in silence.

In YAML::

    company:
      kind: hierarchical
      teams:
        research: {agent: researchers, description: finds and checks facts}
        writing: {agent: writer, description: writes clear prose}
      model: openai:gpt-4o-mini   # assigns and merges (or manager: / synthesiser: agents)
      max_depth: 3
      unknown_teams: report       # or fail (the default)
      on_team_error: report       # or fail (the default)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from agents._model import DEFAULT_MODEL, ModelName, checked_output, one_of, parse_input
from agents.planner import Plan
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import (
    BadSchemaError,
    BudgetExceededError,
    DepthExceededError,
    MeshError,
    UnknownAgentError,
    error_class,
)
from mesh.refs import AgentRef
from mesh.subjects import validate_agent_name
from patterns._callee import output_of, parse_output, rebuilt
from patterns._conversation import as_text
from patterns._fanout import Branch, BranchResult, fan_out
from patterns._hierarchy import (
    HIERARCHY,
    Assignment,
    Assignments,
    Delegation,
    HierarchicalInput,
    Hierarchy,
    Work,
)
from patterns._metrics import measured

__all__ = [
    "HIERARCHY",
    "Assignment",
    "Assignments",
    "HierarchicalConfig",
    "HierarchicalInput",
    "HierarchicalPattern",
    "Hierarchy",
    "TeamSpec",
]


AgentName = Annotated[str, AfterValidator(validate_agent_name)]
Policy = Literal["fail", "report"]


class TeamSpec(BaseModel):
    """One team: the agent that does its work, and what the manager is told it does."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    agent: AgentRef | None = None
    """The agent (or pattern) doing the team's work; by default the one named as the team."""
    description: str = ""
    """What the team does, shown to the manager so it can choose."""


class HierarchicalConfig(BaseModel):
    """Settings of a `hierarchical` pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    teams: dict[AgentName, TeamSpec] = Field(min_length=1)
    """The teams by name, each ``{agent?, description?}``; ``{name: description}`` and a list
    of names (each team then the agent of its name) are taken too."""
    model: ModelName = DEFAULT_MODEL
    """The manager's model, ``provider:model``: it assigns the work unless ``manager`` is set,
    and merges the results unless ``synthesiser`` is."""
    manager: AgentRef | None = None
    """An agent that assigns the work instead of ``model`` (e.g. a ``planner``)."""
    synthesiser: AgentRef | None = None
    """An agent that merges the results instead of ``model``, given the aggregator's input:
    ``{"answers": [{"answer": <text>, "source": <team>}], "task"}``, from the teams that
    succeeded (e.g. an ``aggregator`` with ``strategy: summarise``)."""
    instructions: str | None = None
    """How to manage; added to the model's system prompts (or the manager agent's context)."""
    max_assignments: int = Field(default=10, ge=1)
    """Most assignments one run hands out; a manager giving more is refused."""
    max_depth: int = Field(default=3, ge=1)
    """Most levels of hierarchical runs, this one's included (1: no team may be hierarchical)."""
    unknown_teams: Policy = "fail"
    """A ``manager`` agent's assignment to a team not listed (a model's schema lists only the
    teams): ``fail`` the run before any team works, or ``report`` it in the output and go on
    without it."""
    on_team_error: Policy = "fail"
    """A team failed: ``fail`` the run (the other teams cancelled), or ``report`` it and merge
    the other results."""
    team_timeout: float | None = Field(default=None, gt=0)
    """Seconds each team may take; past it the call is cancelled and fails with ``timeout``."""
    max_parallel: int | None = Field(default=None, ge=1)
    """Most teams working at once; ``None``: all of them."""

    @field_validator("teams", mode="before")
    @classmethod
    def _shorthands(cls, teams: Any) -> Any:
        names = isinstance(teams, Sequence) and not isinstance(teams, str)
        if names and all(isinstance(name, str) for name in teams):
            teams = dict.fromkeys(teams, "")
        if not isinstance(teams, Mapping):
            return teams
        # The agent is filled in here, so that the loader checks it like any agent reference.
        specs = {name: {"description": s} if isinstance(s, str) else s for name, s in teams.items()}
        return {
            name: {"agent": name, **spec} if isinstance(spec, Mapping) else spec
            for name, spec in specs.items()
        }


_KIND = "hierarchical"
_ASSIGN = (
    "You manage teams. Split the user's task into subtasks and give each to the team best "
    "placed to do it, naming the team exactly as listed. The teams work at the same time and "
    "do not see each other's work, so each subtask must make sense on its own. Give at most "
    "{limit} assignments; a team may get more than one."
)
_SYNTHESISE = (
    "You manage teams that have each worked on part of the user's task. Merge their results "
    "into one answer to the task; where a team failed, answer from the others and say what is "
    "missing. Answer with the answer only."
)


class HierarchicalPattern(Agent[HierarchicalConfig]):
    """Have a manager assign subtasks to teams, which work at once, and merge their results.

    The manager is ``model``, asked for `Assignments` with the teams' descriptions in view, or
    the ``manager`` agent, given ``{"goal", "context"}`` (the ``planner``'s input, the teams
    listed in the context) and answering ``{"assignments": [{"team", "task"}]}`` or a plan (a
    step's ``agent`` is its team, its ``description`` the task; ``depends_on`` is ignored, as
    the teams work at once). A team is given its task as it is. ``synthesiser``, or else
    ``model``, merges the results; a result with an ``answer`` (a pattern's) by that answer.

    Input: the task as text, or ``{"task", "context"?}``.

    Output: ``{"answer", "assignments", "unknown_teams"}``: the merged answer (the
    synthesiser's ``answer`` if its output has one); each assignment run, in the manager's
    order, as ``{"team", "agent", "task", "output" | "error", "latency_ms"}``; each assignment
    to a team not listed, as ``{"team", "task"}``.

    Figures (``meta["pattern"]["figures"]``): ``depth`` (the run's level, 1 at the top),
    ``max_depth``, ``assignments``, ``teams_used``, ``unknown_teams`` (names), ``teams`` (by
    assignment, ``<team>`` or ``<team> #2``: agent, status, latency), ``failures``, ``wall_ms``
    and ``speedup`` of the teams' work.

    Raises:
        BadSchemaError: The input is not a task, or the context's ``hierarchy`` is malformed.
        DepthExceededError: The run is deeper than ``max_depth``.
        InvalidOutputError: The manager gave no assignments (its model: in two tries).
        BudgetExceededError: The manager gave more than ``max_assignments``.
        UnknownAgentError: An assignment names a team not listed (``fail``), or all do.
        MeshError: A team failed (``fail``; the others are cancelled): its class and code, the
            message naming it; every team failed (``report``), as `FanOut.failure` tells; the
            manager, its model or the synthesiser failed: its error, the message naming it.
            A team failure's ``details`` are `FanOut.report`'s.
    """

    name = "hierarchical"
    description = "A manager assigns subtasks to teams, which work at once, and merges results."
    config_model = HierarchicalConfig

    def __init__(
        self, *, name: str | None = None, config: HierarchicalConfig | None = None
    ) -> None:
        super().__init__(name=name, config=config)
        assignment = one_of(Assignment, "team", list(self.config.teams))
        limit = Field(min_length=1, max_length=self.config.max_assignments)
        listed = cast("Any", list)[assignment]
        self._assignments = checked_output(Assignments, assignments=(listed, limit))
        self._agents = {team: spec.agent or team for team, spec in self.config.teams.items()}

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        request = parse_input(HierarchicalInput, task.input, agent=_KIND)
        config = self.config
        async with measured(ctx, _KIND) as figures:
            figures["depth"], figures["max_depth"] = self._enter(task)
            work = await self._assign(request, ctx)
            unknown = [item.model_dump() for item in work if item.team not in self._agents]
            self._check_assigned(work, unknown)
            known = [item for item in work if item.team in self._agents]
            teams = [str(item.team) for item in known]
            branches = [
                Branch(_label(teams, index), self._agents[team], known[index].task)
                for index, team in enumerate(teams)
            ]
            fan = await fan_out(
                ctx,
                branches,
                timeout=config.team_timeout,
                fail_fast=config.on_team_error == "fail",
                max_concurrency=config.max_parallel,
            )
            run = fan.figures()
            figures.update(
                assignments=len(branches),
                teams_used=list(dict.fromkeys(teams)),
                unknown_teams=[item["team"] for item in unknown],
                teams=run["branches"],
                failures=run["failures"],
                wall_ms=run["wall_ms"],
                speedup=run["speedup"],
            )
            label = f"{_KIND} {self.name!r}"
            culprit = next((result for result in fan.completed if not result.ok), None)
            if config.on_team_error == "fail" and culprit is not None and culprit.error:
                error = culprit.error
                raise error_class(error.code)(
                    f"{label}: team {culprit.branch.name!r} (agent {culprit.branch.agent!r}) "
                    f"failed: {error.message}",
                    retryable=error.retryable,
                    details=fan.report(),
                )
            failed = fan.failure(quorum=None, fail_fast=False, label=label)
            if failed is not None:
                raise failed
            # From here on every team answered, with its output or its error (none cancelled).
            entries = [
                _entry(team, result) for team, result in zip(teams, fan.results, strict=True)
            ]
            answer = await self._synthesise(request, entries, ctx)
            return {"answer": answer, "assignments": entries, "unknown_teams": unknown}

    def _enter(self, task: Task) -> tuple[int, int]:
        """This run's level and depth limit, from the context and passed on in it."""
        above = task.context.get(HIERARCHY)
        try:
            outer = None if above is None else Hierarchy.model_validate(above)
        except ValidationError as exc:
            raise BadSchemaError(
                f"{_KIND} {self.name!r}: the task context's {HIERARCHY!r} is not "
                '{"level", "max_depth"}'
            ) from exc
        limit = (
            self.config.max_depth if outer is None else min(self.config.max_depth, outer.max_depth)
        )
        level = 1 if outer is None else outer.level + 1
        if level > limit:
            raise DepthExceededError(
                f"{_KIND} {self.name!r}: level {level} is deeper than max_depth {limit}",
                details={"level": level, "max_depth": limit},
            )
        # Context.request merges the task's context into each call's: the manager, the teams
        # (fan_out has no other way to pass context on) and the synthesiser all get the level.
        task.context = {**task.context, HIERARCHY: {"level": level, "max_depth": limit}}
        return level, limit

    async def _assign(self, request: HierarchicalInput, ctx: Context) -> list[Work]:
        config = self.config
        if config.manager is None:
            system = self._system(_ASSIGN.format(limit=config.max_assignments), self._teams())
            try:
                response = await ctx.llm(
                    config.model, _prompt(request), system=system, output_type=self._assignments
                )
            except MeshError as exc:
                what = f"{_KIND} {self.name!r}: the manager's model failed to assign the work"
                raise rebuilt(exc, what) from exc
            parsed: Assignments = response.parsed
            return [Work(team=item.team, task=item.task) for item in parsed.assignments]
        manager = config.manager
        context = "\n\n".join(filter(None, (self._teams(), request.context, config.instructions)))
        reply = await ctx.request(manager, {"goal": request.task, "context": context})
        what = f"{_KIND} {self.name!r}: the manager {manager!r}"
        output = output_of(reply, f"{what} failed", agent=manager)
        if isinstance(output, Mapping) and "steps" in output:
            plan = parse_output(Plan, output, f"{what} gave no plan")
            return [Work(team=step.agent, task=step.description) for step in plan.steps]
        return parse_output(Delegation, output, f"{what} gave no assignments").assignments

    def _check_assigned(self, work: list[Work], unknown: list[dict[str, Any]]) -> None:
        limit = self.config.max_assignments
        if len(work) > limit:
            raise BudgetExceededError(
                f"{_KIND} {self.name!r}: the manager gave {len(work)} assignments, above "
                f"max_assignments {limit}",
                details={"assignments": [item.model_dump() for item in work]},
            )
        if unknown and (self.config.unknown_teams == "fail" or len(unknown) == len(work)):
            names = ", ".join("no team" if u["team"] is None else repr(u["team"]) for u in unknown)
            which = "every assignment names" if len(unknown) == len(work) else "assignments name"
            raise UnknownAgentError(
                f"{_KIND} {self.name!r}: {which} a team not listed: {names}; teams: "
                f"{', '.join(self._agents)}",
                details={"unknown": unknown, "teams": list(self._agents)},
            )

    async def _synthesise(
        self, request: HierarchicalInput, entries: list[dict[str, Any]], ctx: Context
    ) -> Any:
        config = self.config
        if config.synthesiser is None:
            try:
                response = await ctx.llm(
                    config.model, _results(request, entries), system=self._system(_SYNTHESISE)
                )
            except MeshError as exc:
                what = f"{_KIND} {self.name!r}: the manager's model failed to merge the results"
                raise rebuilt(exc, what) from exc
            return response.text
        answers = [
            {"answer": as_text(_answer_of(entry["output"])), "source": entry["team"]}
            for entry in entries
            if "output" in entry
        ]
        synthesiser = config.synthesiser
        reply = await ctx.request(synthesiser, {"answers": answers, "task": request.task})
        what = f"{_KIND} {self.name!r}: the synthesiser {synthesiser!r} failed"
        return _answer_of(output_of(reply, what, agent=synthesiser))

    def _teams(self) -> str:
        listed = "\n".join(
            f"- {team}: {spec.description}" if spec.description else f"- {team}"
            for team, spec in self.config.teams.items()
        )
        return f"Teams (give each subtask to one of them, by name):\n{listed}"

    def _system(self, *parts: str) -> str:
        return "\n\n".join(filter(None, (*parts, self.config.instructions)))


def _label(teams: list[str], index: int) -> str:
    """An assignment's name in the figures: its team, numbered from the team's second one."""
    count = teams[: index + 1].count(teams[index])
    return teams[index] if count == 1 else f"{teams[index]} #{count}"


def _entry(team: str, result: BranchResult) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "team": team,
        "agent": result.branch.agent,
        "task": result.branch.input,
    }
    if result.error is None:
        entry["output"] = result.output
    else:
        entry["error"] = result.error.model_dump(exclude_none=True)
    entry["latency_ms"] = result.latency_ms
    return entry


def _answer_of(output: Any) -> Any:
    """An output as its answer: an object's ``answer`` (a pattern's, an aggregator's), else
    the output itself."""
    return output["answer"] if isinstance(output, Mapping) and "answer" in output else output


def _prompt(request: HierarchicalInput) -> str:
    return f"{request.task}\n\nContext:\n{request.context}" if request.context else request.task


def _results(request: HierarchicalInput, entries: list[dict[str, Any]]) -> str:
    parts = [f"Task:\n{_prompt(request)}", "Results:"]
    for entry in entries:
        if "output" in entry:
            outcome = as_text(_answer_of(entry["output"]))
        else:
            outcome = f"(failed: {entry['error']['code']}: {entry['error']['message']})"
        parts.append(f"[{entry['team']}] {as_text(entry['task'])}\n{outcome}")
    return "\n\n".join(parts)
