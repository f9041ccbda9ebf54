"""`critic`: scores an answer against criteria, for reflection loops.

The model scores each criterion from 0 to 1 and says what to improve; the agent averages the
scores and compares the average with the pass threshold. A model that leaves a criterion out,
or scores one it was not asked about, has its answer sent back once, like any output that
does not fit its schema.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents._model import DEFAULT_MODEL, ModelName, checked_output, parse_input
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task

__all__ = [
    "DEFAULT_CRITERIA",
    "Assessment",
    "CriterionScore",
    "CriticAgent",
    "CriticConfig",
    "CriticInput",
    "Critique",
    "assessment_for",
]

DEFAULT_CRITERIA = ("correctness", "completeness", "clarity")
"""What an answer is judged on when neither the config nor the task says."""


def _criterion_key(name: str) -> str:
    return " ".join(name.lower().split())


def _distinct_criteria(criteria: Sequence[str]) -> Sequence[str]:
    keys = [_criterion_key(name) for name in criteria]
    if "" in keys:
        raise ValueError("a criterion is blank")
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:
        raise ValueError(f"criteria repeat (ignoring case and spaces): {repeated}")
    return criteria


class CriticConfig(BaseModel):
    """Settings of a `critic` agent."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: ModelName = DEFAULT_MODEL
    """The model to ask, ``provider:model``."""
    criteria: tuple[str, ...] = Field(default=DEFAULT_CRITERIA, min_length=1)
    """What answers are judged on, unless a task gives its own."""
    pass_threshold: float = Field(default=0.7, ge=0, le=1)
    """Least overall score (the mean of the criteria's) an answer needs to pass."""
    instructions: str | None = None
    """How to judge (what the criteria mean, how strict to be); added to the system prompt."""

    _check_criteria = field_validator("criteria")(_distinct_criteria)


class CriticInput(BaseModel):
    """What a critic is asked: the answer as text, or ``{"answer", "task"?, "criteria"?}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    answer: str
    """The answer to judge."""
    task: str | None = None
    """What the answer was meant to do (the question, the assignment)."""
    criteria: tuple[str, ...] | None = Field(default=None, min_length=1)
    """What to judge it on, instead of the configured criteria."""

    _check_criteria = field_validator("criteria")(_distinct_criteria)

    @model_validator(mode="before")
    @classmethod
    def _plain_text(cls, data: Any) -> Any:
        return {"answer": data} if isinstance(data, str) else data


class CriterionScore(BaseModel):
    """How well the answer meets one criterion."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    criterion: str
    """The criterion, as listed."""
    score: float = Field(ge=0, le=1)
    """From 0 (not at all) to 1 (fully)."""


class Assessment(BaseModel):
    """The model's judgement (its structured output)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    scores: list[CriterionScore]
    """One score for each criterion listed, and no others."""
    feedback: str
    """What is wrong with the answer and how to improve it; brief."""


def assessment_for(criteria: Sequence[str]) -> type[Assessment]:
    """An `Assessment` type that holds exactly one score for each of ``criteria`` (matched
    ignoring case and spaces)."""
    wanted = {_criterion_key(name): name for name in criteria}

    def scores_every_criterion(assessment: Assessment) -> Assessment:
        names = [score.criterion for score in assessment.scores]
        keys = [_criterion_key(name) for name in names]
        problems = []
        if missing := [wanted[key] for key in wanted if key not in keys]:
            problems.append(f"no score for {missing}")
        if extra := [name for name, key in zip(names, keys, strict=True) if key not in wanted]:
            problems.append(f"scores for criteria not asked about: {extra}")
        if repeated := sorted({wanted[k] for k in keys if k in wanted and keys.count(k) > 1}):
            problems.append(f"more than one score for {repeated}")
        if problems:
            raise ValueError("; ".join(problems))
        return assessment

    return checked_output(Assessment, check=scores_every_criterion)


class Critique(BaseModel):
    """A critic's output."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    score: float
    """Overall score from 0 to 1: the mean of the criteria's scores."""
    feedback: str
    """What to improve."""
    passed: bool
    """Whether ``score`` reaches the configured ``pass_threshold``."""
    criteria: dict[str, float]
    """Each criterion's score, by the name it was given in."""


class CriticAgent(Agent[CriticConfig]):
    """Score an answer against criteria.

    Input: the answer as text, or ``{"answer": "...", "task"?: "...", "criteria"?: [...]}``
    (``criteria`` replaces the configured ones for this task).

    Output: a `Critique` as an object: ``{"score", "feedback", "passed", "criteria":
    {name: score}}``.

    Raises:
        BadSchemaError: The input has no answer, or its criteria are empty or repeat.
        InvalidOutputError: The model gave no valid assessment in two tries.
        MeshError: The model's failure (see `Context.llm`).
    """

    name = "critic"
    description = "Scores an answer against criteria and says what to improve."
    config_model = CriticConfig

    def __init__(self, *, name: str | None = None, config: CriticConfig | None = None) -> None:
        super().__init__(name=name, config=config)
        self._assessment = assessment_for(self.config.criteria)

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        request = parse_input(CriticInput, task.input, agent="critic")
        criteria = request.criteria or self.config.criteria
        output_type = self._assessment if request.criteria is None else assessment_for(criteria)
        response = await ctx.llm(
            self.config.model,
            _prompt(request, criteria),
            system=self._system(),
            output_type=output_type,
        )
        return self.critique(response.parsed, criteria).model_dump()

    def critique(self, assessment: Assessment, criteria: Sequence[str]) -> Critique:
        """The output for a valid ``assessment`` of ``criteria``."""
        by_key = {_criterion_key(score.criterion): score.score for score in assessment.scores}
        scores = {name: by_key[_criterion_key(name)] for name in criteria}
        overall = statistics.fmean(scores.values())
        return Critique(
            score=overall,
            feedback=assessment.feedback,
            passed=overall >= self.config.pass_threshold,
            criteria=scores,
        )

    def _system(self) -> str:
        parts = [
            "You are a strict reviewer. Score the answer against each criterion listed, from "
            "0 (not met at all) to 1 (fully met), and say briefly what is wrong with it and "
            "how to improve it."
        ]
        if self.config.instructions:
            parts.append(self.config.instructions)
        return "\n\n".join(parts)


def _prompt(request: CriticInput, criteria: Sequence[str]) -> str:
    listed = "\n".join(f"- {name}" for name in criteria)
    task = f"Task:\n{request.task}\n\n" if request.task else ""
    return f"{task}Answer:\n{request.answer}\n\nCriteria:\n{listed}"
