"""Voting over answers: pure functions shared by the `aggregator` agent and voting patterns.

Answers are grouped by their normalised text (`normalise`), each group's support is summed
(`tally`) and the group with the most support wins; ties go to the group with more total
confidence, then to the one seen first. The winner is reported in the words it was first
given in, not normalised.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "MAX_WEIGHT",
    "Ballot",
    "Outcome",
    "VotingMethod",
    "by_confidence",
    "majority",
    "normalise",
    "tally",
    "unanimous",
    "vote",
    "weighted",
]

MAX_WEIGHT = 1e9
"""Largest weight a ballot may carry (weights are relative; the bound keeps sums finite)."""

VotingMethod = Literal["majority", "unanimous", "weighted", "confidence"]
"""How ballots are counted: one vote each, all must agree, by weight, by confidence."""


class Ballot(BaseModel):
    """One answer put to the vote: text, or an object; keys beyond these are ignored (answers
    are often other agents' outputs, which carry more)."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True
    )

    answer: str
    """The answer's text."""
    confidence: float = Field(default=1.0, ge=0, le=1)
    """How sure its author is; an answer that says nothing counts as fully sure."""
    weight: float = Field(default=1.0, ge=0, le=MAX_WEIGHT)
    """How much its vote counts under ``weighted`` voting."""
    source: str | None = None
    """Who gave it (an agent's name), for the record."""

    @model_validator(mode="before")
    @classmethod
    def _text_is_an_answer(cls, data: Any) -> Any:
        return {"answer": data} if isinstance(data, str) else data


@dataclass(frozen=True)
class Outcome:
    """The result of a vote."""

    answer: str | None
    """The winning answer as first given; ``None`` when ``unanimous`` found disagreement."""
    agreement: float
    """Share of the support behind the winner (behind the most supported answer when there
    is no winner), in [0, 1]; 0 when nobody gave any support (all weights zero)."""
    votes: Mapping[str, float]
    """Support of each normalised answer, in the order first seen (counts are ints)."""

    @property
    def agreed(self) -> bool:
        """Whether the vote produced a winner."""
        return self.answer is not None


def normalise(text: str) -> str:
    """The form answers are compared in: lower case, runs of whitespace as one space, and
    no punctuation or whitespace at either end (``" Paris! "`` and ``"paris"`` are equal)."""
    collapsed = " ".join(text.lower().split())
    start, end = 0, len(collapsed)
    while start < end and _is_punctuation(collapsed[start]):
        start += 1
    while end > start and _is_punctuation(collapsed[end - 1]):
        end -= 1
    return collapsed[start:end].strip()


def _is_punctuation(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


_SUPPORT: Mapping[str, Callable[[Ballot], float]] = {
    "count": lambda ballot: 1,
    "weight": lambda ballot: ballot.weight,
    "confidence": lambda ballot: ballot.confidence,
}


def tally(
    ballots: Sequence[Ballot], *, by: Literal["count", "weight", "confidence"] = "count"
) -> dict[str, float]:
    """Support of each normalised answer, in the order first seen.

    Args:
        ballots: The answers.
        by: What one ballot adds: 1, its weight, or its confidence.
    """
    return _sums(ballots, [normalise(ballot.answer) for ballot in ballots], _SUPPORT[by])


def _sums(
    ballots: Sequence[Ballot], keys: Sequence[str], support: Callable[[Ballot], float]
) -> dict[str, float]:
    totals: dict[str, float] = {}
    for ballot, key in zip(ballots, keys, strict=True):
        totals[key] = totals.get(key, 0) + support(ballot)
    return totals


def majority(ballots: Sequence[Ballot]) -> Outcome:
    """One vote per ballot; the most votes win.

    Raises:
        ValueError: There are no ballots.
    """
    return _winner(ballots, _SUPPORT["count"])


def weighted(ballots: Sequence[Ballot]) -> Outcome:
    """Each ballot counts its weight; the largest sum wins.

    Raises:
        ValueError: There are no ballots.
    """
    return _winner(ballots, _SUPPORT["weight"])


def by_confidence(ballots: Sequence[Ballot]) -> Outcome:
    """Each ballot counts its confidence; the largest sum wins.

    Raises:
        ValueError: There are no ballots.
    """
    return _winner(ballots, _SUPPORT["confidence"])


def unanimous(ballots: Sequence[Ballot]) -> Outcome:
    """The answer, if every ballot gives the same one (after `normalise`); else no winner.

    Raises:
        ValueError: There are no ballots.
    """
    outcome = majority(ballots)
    if len(outcome.votes) == 1:
        return outcome
    return Outcome(answer=None, agreement=outcome.agreement, votes=outcome.votes)


_METHODS: Mapping[VotingMethod, Callable[[Sequence[Ballot]], Outcome]] = {
    "majority": majority,
    "unanimous": unanimous,
    "weighted": weighted,
    "confidence": by_confidence,
}


def vote(ballots: Sequence[Ballot], *, method: VotingMethod) -> Outcome:
    """Count ``ballots`` by ``method`` (see `majority`, `unanimous`, `weighted`, `by_confidence`).

    Raises:
        ValueError: There are no ballots.
    """
    return _METHODS[method](ballots)


def _winner(ballots: Sequence[Ballot], support: Callable[[Ballot], float]) -> Outcome:
    if not ballots:
        raise ValueError("no ballots to count")
    keys = [normalise(ballot.answer) for ballot in ballots]
    votes = _sums(ballots, keys, support)
    confidence = _sums(ballots, keys, _SUPPORT["confidence"])
    # max() keeps the first of equals, and dicts keep the order answers were first seen in.
    key = max(votes, key=lambda k: (votes[k], confidence[k]))
    answer = ballots[keys.index(key)].answer
    total = sum(votes.values())
    agreement = min(1.0, votes[key] / total) if total > 0 else 0.0
    return Outcome(answer=answer, agreement=agreement, votes=votes)
