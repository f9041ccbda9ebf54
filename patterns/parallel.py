"""`parallel` (scatter-gather): send a task to several agents at once and gather the answers.

Every branch is called at once (up to ``max_parallel`` in flight), with the same input or
one input per branch. The pattern stops waiting when its completion mode is met:

- ``all``: every branch answered (or failed); the result is partial when some failed, and it
  fails only when every branch failed;
- ``any``: the first success wins;
- ``quorum``: ``quorum`` branches succeeded.

Branches still running then are cancelled on the mesh (their agents observe it). With
``fail_fast`` the first failure fails the whole run. A ``call_timeout`` bounds each branch. The
successful outputs are merged by a built-in strategy, by an aggregator agent, or by a Python
function given in code. The figures (each branch's latency, the wait for the slowest one, the
speedup over calling them one by one, failures) go to ``meta["pattern"]`` and telemetry.

In YAML::

    panel:
      kind: parallel
      branches: [astronomer, pilot, {agent: poet, name: verse}]
      quorum: 2                 # or mode: all (the default) / any
      call_timeout: 30          # seconds per branch
      max_parallel: 2
      aggregate: vote           # or map, concatenate, first; or aggregator: <agent>
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents._voting import Ballot, VotingMethod, vote
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import BadSchemaError, InsufficientAgreementError
from mesh.refs import AgentCall, AgentRef, Piece
from patterns._callee import output_of, parse_output
from patterns._fanout import Branch, FanOut, fan_out
from patterns._metrics import measured

__all__ = ["AggregateFunction", "BranchSpec", "ParallelConfig", "ParallelPattern", "branch_names"]

AggregateFunction = Callable[[dict[str, Any]], Any]
"""Merges the successful outputs, given by branch name in branch order; may be async."""


class BranchSpec(AgentCall):
    """One branch: an agent's name, or ``{"agent", "name"?}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    name: str | None = Field(default=None, min_length=1)
    """Names the branch in the output and figures; default: the agent's name, numbered
    (``agent#1``, ``agent#2``) when several unnamed branches call it (several branches may
    call the same agent)."""


def branch_names(branches: Sequence[BranchSpec]) -> tuple[str, ...]:
    """Each branch's name (see `BranchSpec.name`), in order."""
    unnamed = [spec.agent for spec in branches if spec.name is None]
    seen: dict[str, int] = {}
    names = []
    for spec in branches:
        if spec.name is not None:
            names.append(spec.name)
        elif unnamed.count(spec.agent) == 1:
            names.append(spec.agent)
        else:
            seen[spec.agent] = seen.get(spec.agent, 0) + 1
            names.append(f"{spec.agent}#{seen[spec.agent]}")
    return tuple(names)


class ParallelConfig(BaseModel):
    """Settings of a `parallel` pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    branches: tuple[BranchSpec, ...] = Field(min_length=1)
    """The branches: agent names, or ``{"agent", "name"?}``; an agent may appear twice."""
    inputs: Literal["same", "per_branch"] = "same"
    """``same``: every branch gets the task's input; ``per_branch``: the input holds one per
    branch (a list in branch order, or an object keyed by branch name)."""
    mode: Literal["all", "any", "quorum"] = "all"
    """When the pattern stops waiting: every branch, the first success, or ``quorum`` of
    them (setting ``quorum`` alone implies ``quorum``)."""
    quorum: int | None = Field(default=None, ge=1)
    """Successes needed in ``quorum`` mode."""
    call_timeout: float | None = Field(default=None, gt=0)
    """Seconds each branch may take; past it the branch is cancelled and fails (``timeout``)."""
    fail_fast: bool = False
    """Fail the whole run at the first branch failure (the others are cancelled)."""
    max_parallel: int | None = Field(default=None, ge=1)
    """Most branches in flight at once; ``None``: all of them."""
    aggregate: Literal["map", "concatenate", "first", "vote"] | Piece = Field(
        default="map", union_mode="left_to_right"
    )
    """How the successful outputs are merged: ``{branch name: output}``; the texts joined by
    ``separator`` in branch order; the first to arrive; a vote on them; or a function (see
    `AggregateFunction`): a piece registered in code (`mesh.refs.Pieces`),
    ``package.module:function``, or in code the function itself."""
    separator: str = "\n\n"
    """What ``concatenate`` puts between outputs (non-text outputs are written as JSON)."""
    vote_method: VotingMethod = "majority"
    """How ``vote`` counts (see `agents._voting`): outputs are texts or ``{"answer", ...}``."""
    min_agreement: float = Field(default=0.0, ge=0, le=1)
    """Share of the votes the winner needs; below it the run fails (``insufficient_agreement``)."""
    aggregator: AgentRef | None = None
    """An agent that merges the outputs instead (called with ``{"answers": [...]}`` in branch
    order, its output is the result), e.g. the built-in ``aggregator``."""

    @model_validator(mode="before")
    @classmethod
    def _quorum_implies_mode(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("quorum") is not None and "mode" not in data:
            return {**data, "mode": "quorum"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> ParallelConfig:
        names = branch_names(self.branches)
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"branch names must be unique; repeated: {', '.join(repeated)}")
        if self.mode == "quorum":
            if self.quorum is None:
                raise ValueError("mode 'quorum' needs `quorum`: how many successes to wait for")
            if self.quorum > len(self.branches):
                raise ValueError(f"quorum {self.quorum} exceeds the {len(self.branches)} branches")
        elif self.quorum is not None:
            raise ValueError(f"`quorum` is only for mode 'quorum', not {self.mode!r}")
        if self.aggregator is not None and "aggregate" in self.model_fields_set:
            raise ValueError("set `aggregate` (a strategy or function) or `aggregator`, not both")
        if isinstance(self.aggregate, Piece) and not callable(self.aggregate.target):
            raise ValueError(f"aggregate {self.aggregate.ref!r} is not a function")
        return self


class ParallelPattern(Agent[ParallelConfig]):
    """Scatter a task to several agents at once and gather their answers (see the module
    docstring).

    Input: anything, sent as it is to every branch; with ``inputs: per_branch``, a list of
    one input per branch (in branch order) or an object with one input per branch name.

    Output: ``{"result", "succeeded", "failed", "cancelled"}``: the merged outputs of the
    successful branches; their names, in branch order; each failed branch's error by name
    (``{"agent", "code", "message", "retryable", "details"?}``, ``code`` ``timeout`` for a
    branch timeout); the names of the branches cancelled once the outcome was known (or
    never started).

    Figures (``meta["pattern"]["figures"]``): ``mode``, ``branches`` (by name: ``agent``,
    ``status``, ``latency_ms``), ``wall_ms``, ``slowest_ms``, ``sum_ms``, ``speedup``
    (``sum_ms / wall_ms``), ``succeeded``, ``failures``, ``cancelled``.

    Args:
        name: The name it is called by.
        config: Its settings.

    Raises:
        BadSchemaError: ``per_branch`` inputs that do not match the branches.
        MeshError: Too few branches succeeded: ``"all 4 branches failed"`` or ``"quorum not
            reached"``, with each failure in the message and the output's report in
            ``details``; the class is the failures' code when they share one, else
            ``AgentError``. With ``fail_fast``, the first failure's class and code.
        InvalidOutputError: ``vote`` got an output that is not an answer.
        InsufficientAgreementError: ``vote`` found no winner, or one below ``min_agreement``.
    """

    name = "parallel"
    description = "Sends a task to several agents at once and gathers their answers."
    config_model = ParallelConfig

    def __init__(
        self,
        *,
        name: str | None = None,
        config: ParallelConfig | None = None,
    ) -> None:
        super().__init__(name=name, config=config)
        self._names = branch_names(self.config.branches)

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        config = self.config
        quorum = {"all": None, "any": 1, "quorum": config.quorum}[config.mode]
        async with measured(ctx, "parallel") as figures:
            figures["mode"] = config.mode
            fan = await fan_out(
                ctx,
                self._branches(task.input),
                quorum=quorum,
                timeout=config.call_timeout,
                fail_fast=config.fail_fast,
                max_concurrency=config.max_parallel,
            )
            figures.update(fan.figures())
            failure = fan.failure(quorum=quorum, fail_fast=config.fail_fast, label="parallel")
            if failure is not None:
                raise failure
            result = await self._merge(fan, ctx)
            return {"result": result, **fan.report()}

    def _branches(self, value: Any) -> list[Branch]:
        specs, names = self.config.branches, self._names
        if self.config.inputs == "same":
            inputs = [value] * len(specs)
        elif isinstance(value, list):
            if len(value) != len(specs):
                raise BadSchemaError(
                    f"parallel input: {len(value)} inputs for {len(specs)} branches "
                    "(inputs: per_branch takes one per branch)"
                )
            inputs = value
        elif isinstance(value, dict):
            missing = [name for name in names if name not in value]
            unknown = sorted(str(key) for key in value if key not in names)
            if missing or unknown:
                problems = [f"missing {', '.join(missing)}"] if missing else []
                problems += [f"unknown {', '.join(unknown)}"] if unknown else []
                raise BadSchemaError(
                    f"parallel input: not one input per branch ({'; '.join(problems)}; "
                    f"branches: {', '.join(names)})"
                )
            inputs = [value[name] for name in names]
        else:
            raise BadSchemaError(
                "parallel input: inputs: per_branch takes a list with one input per branch "
                f"or an object keyed by branch name, not {type(value).__name__}"
            )
        return [
            Branch(name=name, agent=spec.agent, input=input)
            for name, spec, input in zip(names, specs, inputs, strict=True)
        ]

    async def _merge(self, fan: FanOut, ctx: Context) -> Any:
        outputs = {result.branch.name: result.output for result in fan.having("ok")}
        config = self.config
        if isinstance(config.aggregate, Piece):
            merged = config.aggregate.target(outputs)
            return await merged if inspect.isawaitable(merged) else merged
        if config.aggregator is not None:
            reply = await ctx.request(config.aggregator, {"answers": list(outputs.values())})
            where = f"parallel: the aggregator {config.aggregator!r} failed"
            return output_of(reply, where, agent=config.aggregator)
        if config.aggregate == "first":
            return next(result.output for result in fan.completed if result.ok)
        if config.aggregate == "concatenate":
            return config.separator.join(map(_text, outputs.values()))
        if config.aggregate == "vote":
            return self._vote(outputs)
        return outputs

    def _vote(self, outputs: dict[str, Any]) -> dict[str, Any]:
        ballots = [
            parse_output(Ballot, output, f"parallel: branch {name!r} gave no answer to vote on")
            for name, output in outputs.items()
        ]
        config = self.config
        outcome = vote(ballots, method=config.vote_method)
        votes = dict(outcome.votes)
        if not outcome.agreed:
            raise InsufficientAgreementError(
                f"parallel: the {len(ballots)} answers are not unanimous", details={"votes": votes}
            )
        if outcome.agreement < config.min_agreement:
            raise InsufficientAgreementError(
                f"parallel: the winning answer has {outcome.agreement:.0%} of the votes, "
                f"below min_agreement {config.min_agreement:.0%}",
                details={"votes": votes, "answer": outcome.answer},
            )
        return {"answer": outcome.answer, "agreement": outcome.agreement, "votes": votes}


def _text(output: Any) -> str:
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
