"""`aggregator`: merges several answers into one, by a vote, a judge, a summary or a join.

The voting strategies are deterministic and make no model call (`agents._voting`); ``best``
asks a judge model to pick one answer, ``summarise`` asks a model to merge them, and
``concatenate`` joins them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents._model import DEFAULT_MODEL, ModelName, checked_output, parse_input
from agents._voting import Ballot, Outcome, normalise, tally, vote
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task

__all__ = [
    "STRATEGIES",
    "Aggregate",
    "AggregatorAgent",
    "AggregatorConfig",
    "AggregatorInput",
    "Pick",
    "Strategy",
]

Strategy = Literal[
    "majority", "unanimous", "weighted", "confidence", "best", "summarise", "concatenate"
]
"""How answers are merged (see `AggregatorAgent`)."""

STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
"""Every strategy's name."""


class AggregatorConfig(BaseModel):
    """Settings of an `aggregator` agent."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: ModelName = DEFAULT_MODEL
    """The model that judges (``best``) or summarises (``summarise``), ``provider:model``."""
    strategy: Strategy = "majority"
    """How answers are merged, unless a task says otherwise."""
    separator: str = "\n\n"
    """What ``concatenate`` puts between answers."""
    instructions: str | None = None
    """How to judge or summarise; added to the judge's or summariser's system prompt."""


class AggregatorInput(BaseModel):
    """What an aggregator is given: ``{"answers": [...], "strategy"?, "task"?}``, or just
    the list of answers."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    answers: list[Ballot] = Field(min_length=1)
    """The answers: each a text or ``{"answer", "confidence"?, "weight"?, "source"?}``."""
    strategy: Strategy | None = None
    """Overrides the configured strategy for this task."""
    task: str | None = None
    """What the answers answer, for the judge or the summariser."""

    @model_validator(mode="before")
    @classmethod
    def _bare_list(cls, data: Any) -> Any:
        return {"answers": data} if isinstance(data, list) else data


class Pick(BaseModel):
    """The judge's choice (its structured output)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    index: int
    """The number of the best answer, as numbered in the prompt (the first is 1)."""
    reasoning: str
    """Why it is the best, in a sentence or two."""


class Aggregate(BaseModel):
    """An aggregator's output."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    answer: str | None
    """The merged answer; ``None`` only when ``unanimous`` found the answers differ."""
    strategy: Strategy
    """The strategy used."""
    agreement: float | None
    """Share of the votes (of the weight, of the confidence) behind the answer, from 0 to 1:
    for ``best``, the share of answers equal to the pick; for ``unanimous`` without
    agreement, the share behind the most common answer. ``None`` for ``summarise`` and
    ``concatenate``, which pick no answer."""
    agreed: bool
    """Whether a single answer came out: ``False`` only for ``unanimous`` without agreement."""
    votes: dict[str, float]
    """Tally by normalised answer: summed weights for ``weighted``, confidences for
    ``confidence``, else how many answers gave each."""
    reasoning: str | None
    """The judge's reasoning, for ``best``; else ``None``."""


class AggregatorAgent(Agent[AggregatorConfig]):
    """Merge several answers into one.

    Input: ``{"answers": [...], "strategy"?: "...", "task"?: "..."}``, or the list of answers
    alone; each answer is a text or ``{"answer": "...", "confidence"?: 0..1, "weight"?: >= 0,
    "source"?: "..."}`` (other keys are ignored; confidence and weight default to 1).

    Strategies, all comparing answers in `agents._voting.normalise`'d form:

    - ``majority``: most answers win; ties go to more total confidence, then to the first seen.
    - ``unanimous``: the answer if all agree, else none (``agreed`` is false).
    - ``weighted`` / ``confidence``: the largest sum of weights / confidences wins (same ties).
    - ``best``: a judge model picks one (one model call, two if its pick is invalid).
    - ``summarise``: a model merges them into one answer (one model call).
    - ``concatenate``: the answers joined by ``separator``.

    Output: an `Aggregate` as an object: ``{"answer", "strategy", "agreement", "agreed",
    "votes", "reasoning"}``.

    Raises:
        BadSchemaError: No answers, an answer that is not text nor an answer object, or an
            unknown strategy.
        InvalidOutputError: The judge gave no valid pick in two tries.
        MeshError: The model's failure (see `Context.llm`).
    """

    name = "aggregator"
    description = "Merges several answers into one: by vote, judge, summary or join."
    config_model = AggregatorConfig

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        request = parse_input(AggregatorInput, task.input, agent="aggregator")
        strategy = request.strategy or self.config.strategy
        ballots = request.answers
        if strategy == "best":
            aggregate = await self._best(request, ctx)
        elif strategy == "summarise":
            answer = await self._summarise(request, ctx)
            aggregate = _unpicked(answer, ballots, strategy="summarise")
        elif strategy == "concatenate":
            answer = self.config.separator.join(ballot.answer for ballot in ballots)
            aggregate = _unpicked(answer, ballots, strategy="concatenate")
        else:
            aggregate = _voted(vote(ballots, method=strategy), strategy=strategy)
        return aggregate.model_dump()

    async def _best(self, request: AggregatorInput, ctx: Context) -> Aggregate:
        ballots = request.answers
        count = len(ballots)
        response = await ctx.llm(
            self.config.model,
            _numbered(request),
            system=self._system(
                f"Pick the best of the {count} numbered answers: give its number (1 to "
                f"{count}) and why it is the best."
            ),
            output_type=checked_output(Pick, index=(int, Field(ge=1, le=count))),
        )
        pick: Pick = response.parsed
        chosen = ballots[pick.index - 1].answer
        counts = tally(ballots)
        return Aggregate(
            answer=chosen,
            strategy="best",
            agreement=counts[normalise(chosen)] / count,
            agreed=True,
            votes=counts,
            reasoning=pick.reasoning,
        )

    async def _summarise(self, request: AggregatorInput, ctx: Context) -> str:
        response = await ctx.llm(
            self.config.model,
            _numbered(request),
            system=self._system(
                "Merge the numbered answers into one answer: keep what they agree on, resolve "
                "or note where they differ, and answer with the merged answer only."
            ),
        )
        return response.text

    def _system(self, assignment: str) -> str:
        instructions = self.config.instructions
        return f"{assignment}\n\n{instructions}" if instructions else assignment


def _numbered(request: AggregatorInput) -> str:
    answers = "\n\n".join(
        f"Answer {number}:\n{ballot.answer}" for number, ballot in enumerate(request.answers, 1)
    )
    return f"Task:\n{request.task}\n\n{answers}" if request.task else answers


def _voted(outcome: Outcome, *, strategy: Strategy) -> Aggregate:
    return Aggregate(
        answer=outcome.answer,
        strategy=strategy,
        agreement=outcome.agreement,
        agreed=outcome.agreed,
        votes=dict(outcome.votes),
        reasoning=None,
    )


def _unpicked(answer: str, ballots: Sequence[Ballot], *, strategy: Strategy) -> Aggregate:
    return Aggregate(
        answer=answer,
        strategy=strategy,
        agreement=None,
        agreed=True,
        votes=tally(ballots),
        reasoning=None,
    )
