"""`debate`: two or more agents argue over rounds, then a judge decides (or they converge).

In each round every debater is called at once with the topic, its position and the transcript
of the rounds before (everyone's arguments, its own included), and answers an argument. The
debate ends early on convergence:

- ``agreement``: the latest arguments of the debaters still in the debate are the same text
  once normalised (case, whitespace, and punctuation at either end ignored);
- ``concession``: a debater answers ``{"argument", "concede": true}``; it leaves the debate,
  and when at most one debater is left, that one wins.

Otherwise, after ``max_rounds`` rounds, the judge reads the transcript and gives the verdict.
Without a judge, a debate that did not converge fails (``insufficient_agreement``).

In YAML::

    court:
      kind: debate
      debaters: [{agent: optimist, position: "for"}, {agent: sceptic, position: against}]
      judge: judge
      max_rounds: 3
      call_timeout: 30          # seconds per argument
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents._model import parse_input
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import ErrorInfo, Task
from mesh.errors import (
    BadSchemaError,
    InsufficientAgreementError,
    InvalidOutputError,
    MeshError,
    error_class,
)
from mesh.refs import AgentCall, AgentRef
from patterns._callee import json_in_text, output_of, parse_output
from patterns._fanout import Branch, fan_out
from patterns._metrics import measured

__all__ = ["DebateConfig", "DebatePattern", "Debater", "JudgeVerdict", "normalise"]

DecidedBy = Literal["judge", "agreement", "concession"]


@dataclass(frozen=True)
class _Ending:
    """How a debate was decided."""

    decided_by: DecidedBy
    winner: str | None
    verdict: str
    reasoning: str


class Debater(AgentCall):
    """One debater: an agent's name, or ``{"agent", "position"?}``; the agent names the
    debater in the transcript."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    position: str | None = None
    """The position it defends, sent with every round; ``None``: its own choice."""


class DebateConfig(BaseModel):
    """Settings of a `debate` pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    debaters: tuple[Debater, ...] = Field(min_length=2)
    """The debaters (two or more, each agent once): names, or ``{"agent", "position"?}``."""
    judge: AgentRef | None = None
    """The agent that decides a debate that did not converge; ``None``: such a debate fails
    with ``insufficient_agreement``."""
    max_rounds: int = Field(default=3, ge=1, le=50)
    """Most rounds argued; the judge decides after the last."""
    converge: bool = True
    """End the debate early on agreement or concession (see the module docstring); ``False``:
    always argue ``max_rounds`` rounds and let the judge decide."""
    call_timeout: float | None = Field(default=None, gt=0)
    """Seconds each argument may take; past it the debate fails (``timeout``)."""

    @model_validator(mode="after")
    def _consistent(self) -> DebateConfig:
        agents = [debater.agent for debater in self.debaters]
        repeated = sorted({agent for agent in agents if agents.count(agent) > 1})
        if repeated:
            raise ValueError(f"each debater argues once; repeated: {', '.join(repeated)}")
        if not self.converge and self.judge is None:
            raise ValueError("converge: false needs a `judge` to decide the debate")
        return self


class DebateInput(BaseModel):
    """The task's input when it is an object."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str = Field(min_length=1)
    positions: dict[str, str] = {}


class Argument(BaseModel):
    """A debater's answer: its argument, and whether it concedes."""

    model_config = ConfigDict(frozen=True)

    argument: str = Field(min_length=1)
    concede: bool = False

    @model_validator(mode="before")
    @classmethod
    def _plain_text(cls, data: Any) -> Any:
        return {"argument": data} if isinstance(data, str) else data


class JudgeVerdict(BaseModel):
    """What the judge answers (an object, or text holding one as JSON): a ``winner`` (a
    debater's name) or a ``verdict`` (text), or both, and its ``reasoning``."""

    model_config = ConfigDict(frozen=True)

    winner: str | None = None
    verdict: str | None = Field(default=None, min_length=1)
    reasoning: str = Field(min_length=1)

    @model_validator(mode="after")
    def _decides(self) -> JudgeVerdict:
        if self.winner is None and self.verdict is None:
            raise ValueError("needs a `winner` or a `verdict`")
        return self


def normalise(argument: str) -> str:
    """``argument`` as convergence compares it: casefolded, whitespace collapsed, and
    punctuation at either end dropped."""
    return " ".join(argument.split()).strip(string.punctuation + " ").casefold()


class DebatePattern(Agent[DebateConfig]):
    """Let debaters argue over rounds, then decide (see the module docstring).

    Input: the topic as text, or ``{"topic", "positions"?: {debater: position}}`` (positions
    given here replace the configured ones).

    Each debater is sent ``{"topic", "position"?, "round", "transcript"}`` (``round`` from 1;
    ``transcript``: the entries of the rounds before) and answers its argument as text, or
    ``{"argument", "concede"?}``. A debater that conceded argues no more. The judge is sent
    ``{"topic", "transcript"}`` and answers a `JudgeVerdict`.

    Output: ``{"verdict", "reasoning", "winner", "decided_by", "rounds", "converged",
    "transcript"}``: the verdict (the judge's, else the winner's or the agreed last
    argument); the reasoning (the judge's, or why the debate converged); the winning
    debater or ``None``; ``judge``, ``agreement`` or ``concession``; the rounds argued;
    whether the debate converged; every argument, ``{"debater", "round", "argument",
    "conceded"}``, in round then debater order.

    Figures (``meta["pattern"]["figures"]``): ``rounds``, ``converged``, ``decided_by``,
    ``arguments`` (how many were made).

    Raises:
        BadSchemaError: The input is not a topic, or gives a position to an unknown debater.
        MeshError: A debater failed: its error's class and code, the message naming it and
            the round; ``details`` has ``debater``, ``round``, ``transcript`` (so far) and the
            ``error``. The judge failed: its error's class and code.
        InvalidOutputError: A debater's answer is not an argument, or the judge's is not a
            `JudgeVerdict` or names a winner that is not a debater.
        InsufficientAgreementError: No judge, and the debate did not converge.
    """

    name = "debate"
    description = "Lets agents argue over rounds; a judge decides, or they converge."
    config_model = DebateConfig

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        async with measured(ctx, "debate") as figures:
            topic, positions = self._read(task.input)
            transcript: list[dict[str, Any]] = []
            active = [debater.agent for debater in self.config.debaters]
            figures.update(rounds=0, converged=False, decided_by=None, arguments=0)
            ending: _Ending | None = None
            for round in range(1, self.config.max_rounds + 1):
                figures["rounds"] = round
                said = await self._round(ctx, round, topic, positions, active, transcript)
                transcript.extend(said)
                figures["arguments"] = len(transcript)
                active = [entry["debater"] for entry in said if not entry["conceded"]]
                ending = self._convergence(said, active) if self.config.converge else None
                if ending is not None:
                    break
            converged = ending is not None
            if ending is None:
                ending = await self._judge(ctx, topic, transcript)
            figures.update(converged=converged, decided_by=ending.decided_by)
            return {
                "verdict": ending.verdict,
                "reasoning": ending.reasoning,
                "winner": ending.winner,
                "decided_by": ending.decided_by,
                "rounds": figures["rounds"],
                "converged": converged,
                "transcript": transcript,
            }

    def _read(self, value: Any) -> tuple[str, dict[str, str]]:
        """The topic and each debater's position, from the input and the config."""
        given = {"topic": value} if isinstance(value, str) else value
        request = parse_input(DebateInput, given, agent="debate")
        agents = [debater.agent for debater in self.config.debaters]
        unknown = sorted(set(request.positions) - set(agents))
        if unknown:
            raise BadSchemaError(
                f"debate input: positions for unknown debaters {', '.join(unknown)} "
                f"(debaters: {', '.join(agents)})"
            )
        positions = {d.agent: d.position for d in self.config.debaters if d.position is not None}
        return request.topic, {**positions, **request.positions}

    async def _round(
        self,
        ctx: Context,
        round: int,
        topic: str,
        positions: dict[str, str],
        active: Sequence[str],
        transcript: list[dict[str, Any]],
    ) -> list[dict[str, Any]]:
        """One round's entries, in debater order; the first failure cancels the others."""
        branches = [
            Branch(
                name=agent,
                agent=agent,
                input={
                    "topic": topic,
                    **({"position": positions[agent]} if agent in positions else {}),
                    "round": round,
                    "transcript": transcript,
                },
            )
            for agent in active
        ]
        fan = await fan_out(ctx, branches, fail_fast=True, timeout=self.config.call_timeout)
        for result in fan.completed:
            if result.error is not None:
                raise _debater_failure(result.branch.agent, result.error, round, transcript)
        entries = []
        for result in fan.results:
            agent = result.branch.agent
            said = parse_output(
                Argument,
                result.output,
                f"debate: the debater {agent!r} gave no argument in round {round}",
                debater=agent,
                round=round,
            )
            entries.append(
                {
                    "debater": agent,
                    "round": round,
                    "argument": said.argument,
                    "conceded": said.concede,
                }
            )
        return entries

    @staticmethod
    def _convergence(said: list[dict[str, Any]], active: list[str]) -> _Ending | None:
        """How the round ended the debate, or ``None`` when it goes on."""
        round = said[0]["round"]
        standing = [entry for entry in said if not entry["conceded"]]
        if len(standing) <= 1:
            gave_up = ", ".join(entry["debater"] for entry in said if entry["conceded"])
            # When every debater concedes at once there is no winner; the last concession stands.
            last = standing[0] if standing else said[-1]
            return _Ending(
                decided_by="concession",
                winner=last["debater"] if standing else None,
                verdict=last["argument"],
                reasoning=f"{gave_up} conceded in round {round}",
            )
        if len({normalise(entry["argument"]) for entry in standing}) == 1:
            return _Ending(
                decided_by="agreement",
                winner=None,
                verdict=standing[0]["argument"],
                reasoning=f"{', '.join(active)} agreed in round {round}",
            )
        return None

    async def _judge(self, ctx: Context, topic: str, transcript: list[dict[str, Any]]) -> _Ending:
        judge = self.config.judge
        if judge is None:
            rounds = transcript[-1]["round"]
            raise InsufficientAgreementError(
                f"debate: no convergence in {rounds} rounds, and no judge to decide",
                details={"transcript": transcript},
            )
        reply = await ctx.request(judge, {"topic": topic, "transcript": transcript})
        output = output_of(reply, f"debate: the judge {judge!r} failed", agent=judge)
        what = f"debate: the judge {judge!r} gave no verdict"
        if isinstance(output, str):
            try:
                output = json_in_text(output)
            except ValueError as exc:
                raise InvalidOutputError(f"{what} (not a JSON object)") from exc
        decision = parse_output(JudgeVerdict, output, what, agent=judge)
        debaters = [debater.agent for debater in self.config.debaters]
        if decision.winner is not None and decision.winner not in debaters:
            raise InvalidOutputError(
                f"{what} (winner {decision.winner!r} is not a debater: {', '.join(debaters)})",
                details={"agent": judge},
            )
        verdict = decision.verdict
        if verdict is None:
            verdict = next(
                e["argument"] for e in reversed(transcript) if e["debater"] == decision.winner
            )
        return _Ending("judge", decision.winner, verdict, decision.reasoning)


def _debater_failure(
    debater: str, error: ErrorInfo, round: int, transcript: list[dict[str, Any]]
) -> MeshError:
    """The debater's error, of its class and code, naming it and the round."""
    cause: dict[str, Any] = {"code": error.code, "message": error.message}
    if error.details:
        cause["details"] = error.details
    return error_class(error.code)(
        f"debate: the debater {debater!r} failed in round {round}: {error.message}",
        retryable=error.retryable,
        details={"debater": debater, "round": round, "transcript": transcript, "error": cause},
    )
