"""`ensemble`: the same task to several members at once, their answers combined by a vote or
by a judge, with the agreement behind the result reported.

Every member (an agent; different models or prompts) gets the task's input at once
(`patterns._fanout`). Each answers a text or ``{"answer", "confidence"?}``; a member that
fails, times out or gives something else is left out of the count and listed in ``failed``.
The answers are then combined:

- ``majority``: one vote per member; ``unanimous``: all must give the same answer;
  ``weighted``: each member's vote counts its configured ``weight``; ``confidence``: each
  vote counts the confidence its member gave (1 when it gave none). Answers are compared
  normalised (case, spacing and end punctuation ignored, `agents._voting.normalise`).
  **Ties** go to the answer with more total confidence, then to the one whose first member
  comes first in the configured order (never to whoever answered first).
- ``judge``: an agent is given ``{"answers": [{answer, confidence, source}], "task"?}`` (the
  built-in ``aggregator`` with ``strategy: best``, or any agent) and returns
  ``{"answer", "reasoning"?}`` or the 0-based index of the answer it picks.

The agreement is the share of the support (votes, weights or confidences) behind the
result; for a judge, the share of members that gave its answer. Below ``min_agreement``, or
without unanimity under ``unanimous``, the run fails with ``insufficient_agreement`` and the
candidates and tally in its details, rather than picking silently.

In YAML::

    panel:
      kind: ensemble
      members: [gpt, claude, {agent: llama, weight: 0.5}]
      method: weighted          # majority (default), unanimous, confidence; or judge: <agent>
      min_agreement: 0.6
      call_timeout: 30          # seconds per member
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agents._voting import MAX_WEIGHT, Ballot, Outcome, normalise, tally, vote
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import (
    AgentError,
    InsufficientAgreementError,
    InvalidOutputError,
    MeshError,
    error_class,
)
from mesh.refs import AgentRef
from patterns._callee import output_of
from patterns._fanout import Branch, FanOut, fan_out
from patterns._metrics import measured
from patterns.parallel import BranchSpec, branch_names

__all__ = ["EnsembleConfig", "EnsembleMethod", "EnsemblePattern", "MemberSpec"]

EnsembleMethod = Literal["majority", "unanimous", "weighted", "confidence", "judge"]
"""How the members' answers are combined (see the module docstring)."""


class MemberSpec(BranchSpec):
    """One member: an agent's name, or ``{"agent", "name"?, "weight"?}``."""

    weight: float = Field(default=1.0, ge=0, le=MAX_WEIGHT)
    """How much its vote counts under ``weighted`` voting."""


class EnsembleConfig(BaseModel):
    """Settings of an `ensemble` pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    members: tuple[MemberSpec, ...] = Field(min_length=1)
    """The members: agent names, or ``{"agent", "name"?, "weight"?}``; an agent may appear
    twice (unnamed repeats are numbered ``agent#1``, ``agent#2``)."""
    method: EnsembleMethod = "majority"
    """How answers are combined; setting ``judge`` alone implies ``judge``."""
    judge: AgentRef | None = None
    """The agent that picks the answer under ``judge``."""
    min_agreement: float = Field(default=0.0, ge=0, le=1)
    """Agreement the result needs; below it the run fails (``insufficient_agreement``)."""
    min_answers: int = Field(default=1, ge=1)
    """Members that must answer; with fewer the run fails with their errors."""
    call_timeout: float | None = Field(default=None, gt=0)
    """Seconds each member may take; past it the member is cancelled and fails (``timeout``)."""
    max_parallel: int | None = Field(default=None, ge=1)
    """Most members asked at once; ``None``: all of them."""

    @model_validator(mode="before")
    @classmethod
    def _judge_implies_method(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("judge") is not None and "method" not in data:
            return {**data, "method": "judge"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> EnsembleConfig:
        names = branch_names(self.members)
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"member names must be unique; repeated: {', '.join(repeated)}")
        if (self.method == "judge") != (self.judge is not None):
            raise ValueError("method 'judge' and `judge` (the judging agent) go together")
        if self.min_answers > len(self.members):
            raise ValueError(
                f"min_answers {self.min_answers} exceeds the {len(self.members)} members"
            )
        return self


class _Pick(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    answer: str
    reasoning: str | None = None


class EnsemblePattern(Agent[EnsembleConfig]):
    """Ask every member the same task and combine their answers (see the module docstring).

    Input: anything, sent as it is to every member (and, when text, to the judge as ``task``).

    Output: ``{"answer", "method", "agreement", "votes", "candidates", "failed"}``: the
    chosen answer (as its first member worded it); the method; the agreement (0 to 1); the
    tally by normalised answer (counts, summed weights or confidences; counts for a judge);
    each answer counted, in member order, as ``{"member", "answer", "confidence"}``
    (confidence 1.0 when the member gave none); and each member left out, by name
    (``{"agent", "code", "message", "retryable"}``). A judge adds ``"reasoning"`` (or
    ``None``).

    Figures (``meta["pattern"]["figures"]``): ``method``, ``members`` (by name: ``agent``,
    ``status``, ``latency_ms``), ``answered``, ``failed``, ``cancelled``, ``agreement`` and
    ``votes`` (the vote distribution; both set on an insufficient agreement too).

    Raises:
        MeshError: Fewer than ``min_answers`` members answered: ``"ensemble: only 1 of 3
            members answered, 2 needed (...)"``, of the failures' class when they share a
            code, else `AgentError`; details: the answers and failures.
        InsufficientAgreementError: No unanimity under ``unanimous``, or an agreement below
            ``min_agreement``; details: ``method``, ``answer`` (the leader), ``agreement``,
            ``votes``, ``candidates``, ``failed``.
        MeshError: The judge's own failure (its code), or `InvalidOutputError` when its
            output is neither an answer nor a valid index.
    """

    name = "ensemble"
    description = "Asks several agents the same task and combines their answers by vote or judge."
    config_model = EnsembleConfig

    def __init__(self, *, name: str | None = None, config: EnsembleConfig | None = None) -> None:
        super().__init__(name=name, config=config)
        self._names = branch_names(self.config.members)

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        config = self.config
        async with measured(ctx, "ensemble") as figures:
            figures["method"] = config.method
            branches = [
                Branch(name=name, agent=spec.agent, input=task.input)
                for name, spec in zip(self._names, config.members, strict=True)
            ]
            fan = await fan_out(
                ctx, branches, timeout=config.call_timeout, max_concurrency=config.max_parallel
            )
            failed: dict[str, Any] = fan.report()["failed"]
            ballots: list[Ballot] = []
            for member, spec in zip(fan.results, config.members, strict=True):
                if not member.ok:
                    continue
                try:
                    ballot = Ballot.model_validate(member.output)
                except ValidationError:
                    failed[member.branch.name] = {
                        "agent": spec.agent,
                        "code": "invalid_output",
                        "message": "gave neither a text nor an {answer, confidence?} object",
                        "retryable": False,
                    }
                    continue
                ballots.append(
                    ballot.model_copy(update={"weight": spec.weight, "source": member.branch.name})
                )
            failed = {name: failed[name] for name in self._names if name in failed}
            figures["members"] = fan.figures()["branches"]
            figures.update(answered=len(ballots), failed=len(failed))
            figures["cancelled"] = len(fan.having("cancelled"))
            candidates = [
                {"member": b.source, "answer": b.answer, "confidence": b.confidence}
                for b in ballots
            ]
            if len(ballots) < config.min_answers:
                raise _too_few(candidates, config.min_answers, failed, fan)
            outcome, extra = await self._combine(ballots, task.input, ctx)
            votes = dict(outcome.votes)
            figures.update(agreement=outcome.agreement, votes=votes)
            result = {
                "answer": outcome.answer,
                "method": config.method,
                "agreement": outcome.agreement,
                "votes": votes,
                "candidates": candidates,
                "failed": failed,
            }
            self._check(outcome, result)
            return {**result, **extra}

    async def _combine(
        self, ballots: list[Ballot], value: Any, ctx: Context
    ) -> tuple[Outcome, dict[str, Any]]:
        method = self.config.method
        if method != "judge":
            return vote(ballots, method=method), {}
        judge = self.config.judge
        assert judge is not None  # the config ties method 'judge' to a judge
        answers = [
            {"answer": b.answer, "confidence": b.confidence, "source": b.source} for b in ballots
        ]
        request: dict[str, Any] = {"answers": answers}
        if isinstance(value, str):
            request["task"] = value
        reply = await ctx.request(judge, request)
        output = output_of(reply, f"ensemble: the judge {judge!r} failed", agent=judge)
        pick = _picked(output, ballots, judge)
        counts = tally(ballots)
        support = counts.get(normalise(pick.answer), 0)
        outcome = Outcome(answer=pick.answer, agreement=support / len(ballots), votes=counts)
        return outcome, {"reasoning": pick.reasoning}

    def _check(self, outcome: Outcome, result: dict[str, Any]) -> None:
        """Raise `InsufficientAgreementError` when the outcome does not carry the result."""
        count = len(result["candidates"])
        if not outcome.agreed:
            message = f"ensemble: the {count} answers are not unanimous"
        elif outcome.agreement < self.config.min_agreement:
            message = (
                f"ensemble: {outcome.answer!r} has {outcome.agreement:.0%} agreement, below "
                f"min_agreement {self.config.min_agreement:.0%} ({count} answers)"
            )
        else:
            return
        leader = outcome.answer
        if leader is None:  # unanimous without a winner: name the most supported answer
            leader = _first_worded(
                result["candidates"], max(outcome.votes, key=outcome.votes.__getitem__)
            )
        raise InsufficientAgreementError(message, details={**result, "answer": leader})


def _picked(output: Any, ballots: list[Ballot], judge: str) -> _Pick:
    """The judge's pick: ``{"answer", "reasoning"?}`` or an index into the answers."""
    if isinstance(output, int) and not isinstance(output, bool):
        if 0 <= output < len(ballots):
            return _Pick(answer=ballots[output].answer)
        raise InvalidOutputError(
            f"ensemble: the judge {judge!r} picked index {output}, "
            f"not one of the {len(ballots)} answers (0 to {len(ballots) - 1})"
        )
    try:
        return _Pick.model_validate(output)
    except ValidationError as exc:
        raise InvalidOutputError(
            f'ensemble: the judge {judge!r} gave neither {{"answer"}} nor an index '
            f"(got {type(output).__name__})"
        ) from exc


def _first_worded(candidates: list[dict[str, Any]], key: str) -> str:
    return next(str(c["answer"]) for c in candidates if normalise(c["answer"]) == key)


def _too_few(
    candidates: list[dict[str, Any]], needed: int, failed: dict[str, Any], fan: FanOut
) -> MeshError:
    answered, total = len(candidates), len(fan.results)
    listing = "; ".join(f"{name!r}: {e['code']}: {e['message']}" for name, e in failed.items())
    codes = {e["code"] for e in failed.values()}
    kind = error_class(codes.pop()) if len(codes) == 1 else AgentError
    what = "no member answered" if answered == 0 else f"only {answered} of {total} members answered"
    return kind(
        f"ensemble: {what}, {needed} needed" + (f" ({listing})" if listing else ""),
        retryable=bool(failed) and all(e["retryable"] for e in failed.values()),
        details={
            "candidates": candidates,
            "failed": failed,
            "cancelled": [result.branch.name for result in fan.having("cancelled")],
        },
    )
