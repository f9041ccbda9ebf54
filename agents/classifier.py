"""`classifier`: puts a text in one of a fixed set of categories, by structured model output.

The model answers a `Verdict`; the agent holds it to the configured set. A label outside the
set, or one given with less confidence than the threshold, becomes the default category, and
the result says so (``fell_back``): a classifier always answers with one of its categories.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents._model import DEFAULT_MODEL, ModelName, parse_input
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task

__all__ = [
    "Alternative",
    "Classification",
    "ClassifierAgent",
    "ClassifierConfig",
    "ClassifierInput",
    "Verdict",
    "normalise_category",
]


def normalise_category(name: str) -> str:
    """How category names are compared: lower case, runs of whitespace as one space, trimmed."""
    return " ".join(name.lower().split())


class ClassifierConfig(BaseModel):
    """Settings of a `classifier` agent."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    model: ModelName = DEFAULT_MODEL
    """The model to ask, ``provider:model``."""
    categories: tuple[str, ...] = Field(min_length=2)
    """The categories, at least two; kept normalised (``" Billing  Issue"`` is
    ``"billing issue"``), so each must differ from the others after that."""
    default: str
    """The category given when the model's label is not a category, or is not sure enough;
    one of ``categories``."""
    threshold: float = Field(default=0.5, ge=0, le=1)
    """Least confidence a label needs to be taken."""
    instructions: str | None = None
    """What the categories mean, or how to choose; added to the system prompt."""

    @field_validator("categories")
    @classmethod
    def _categories_are_distinct(cls, categories: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(normalise_category(name) for name in categories)
        if "" in names:
            raise ValueError("a category name is empty")
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"categories repeat after normalising case and spaces: {repeated}")
        return names

    @field_validator("default")
    @classmethod
    def _normalise_default(cls, default: str) -> str:
        return normalise_category(default)

    @model_validator(mode="after")
    def _default_is_a_category(self) -> ClassifierConfig:
        if self.default not in self.categories:
            raise ValueError(
                f"default {self.default!r} is not one of the categories {list(self.categories)}"
            )
        return self


class ClassifierInput(BaseModel):
    """What a classifier is asked: the text, or ``{"text": ...}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    text: str
    """The text to classify."""

    @model_validator(mode="before")
    @classmethod
    def _plain_text(cls, data: Any) -> Any:
        return {"text": data} if isinstance(data, str) else data


class Alternative(BaseModel):
    """Another category the text might belong to."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    category: str
    """One of the categories."""
    confidence: float = Field(ge=0, le=1)
    """How likely it is, from 0 to 1."""


class Verdict(BaseModel):
    """The model's answer (its structured output)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    category: str
    """The category the text belongs to: exactly one of the categories listed."""
    confidence: float = Field(ge=0, le=1)
    """How sure you are of that category, from 0 to 1."""
    reasoning: str
    """Why, in a sentence or two."""
    alternatives: list[Alternative]
    """Other categories that could fit, with their confidence; may be empty."""


class Classification(BaseModel):
    """A classifier's output."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    category: str
    """The category, always one of the configured ones (normalised)."""
    confidence: float
    """The model's confidence in ``category``; after a fall-back, the confidence it gave the
    default category (0 if it gave none)."""
    reasoning: str
    """The model's reasoning; after a fall-back, first why the default was taken."""
    alternatives: list[Alternative]
    """Other configured categories the model considered (a rejected label among them), most
    likely first."""
    fell_back: bool
    """Whether ``category`` is the default because the model's label was not a category or
    not confident enough."""


class ClassifierAgent(Agent[ClassifierConfig]):
    """Classify a text into one of the configured categories.

    Input: the text, or ``{"text": "..."}``.

    Output: a `Classification` as an object: ``{"category", "confidence", "reasoning",
    "alternatives": [{"category", "confidence"}], "fell_back"}``.

    Raises:
        BadSchemaError: The input is not text nor ``{"text": ...}``.
        InvalidOutputError: The model gave no valid `Verdict` in two tries.
        MeshError: The model's failure (see `Context.llm`).
    """

    name = "classifier"
    description = "Puts a text in one of a fixed set of categories."
    config_model = ClassifierConfig

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        request = parse_input(ClassifierInput, task.input, agent="classifier")
        response = await ctx.llm(
            self.config.model, request.text, system=self._system(), output_type=Verdict
        )
        verdict: Verdict = response.parsed
        return self.judge(verdict).model_dump()

    def judge(self, verdict: Verdict) -> Classification:
        """Hold the model's verdict to the configured categories and threshold."""
        config = self.config
        label = normalise_category(verdict.category)
        offered: dict[str, float] = {}  # configured categories the model mentioned, first wins
        chosen = Alternative(category=label, confidence=verdict.confidence)
        for option in (chosen, *verdict.alternatives):
            name = normalise_category(option.category)
            if name in config.categories and name not in offered:
                offered[name] = option.confidence
        if label not in config.categories:
            why = f"the model's label {verdict.category!r} is not one of the categories"
        elif verdict.confidence < config.threshold:
            why = (
                f"the model's confidence in {label!r} ({verdict.confidence:g}) is below the "
                f"threshold ({config.threshold:g})"
            )
        else:
            return _classification(label, offered, verdict.reasoning, fell_back=False)
        reasoning = f"Fell back to the default {config.default!r}: {why}. {verdict.reasoning}"
        return _classification(config.default, offered, reasoning.strip(), fell_back=True)

    def _system(self) -> str:
        categories = "\n".join(f"- {name}" for name in self.config.categories)
        extra = f"\n\n{self.config.instructions}" if self.config.instructions else ""
        return (
            "Classify the user's text into exactly one of these categories, written exactly "
            f"as listed:\n{categories}{extra}\n\nGive your confidence from 0 to 1, your "
            "reasoning, and any other categories that could fit, with their confidence."
        )


def _classification(
    category: str, offered: dict[str, float], reasoning: str, *, fell_back: bool
) -> Classification:
    others = [
        Alternative(category=name, confidence=value)
        for name, value in offered.items()
        if name != category
    ]
    others.sort(key=lambda option: -option.confidence)  # stable: ties keep the model's order
    return Classification(
        category=category,
        confidence=offered.get(category, 0.0),
        reasoning=reasoning,
        alternatives=others,
        fell_back=fell_back,
    )
