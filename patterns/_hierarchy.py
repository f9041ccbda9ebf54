"""The messages of the `hierarchical` pattern: its input, the hierarchy it passes down the
call tree, and the manager's assignments."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

__all__ = ["HIERARCHY", "Assignment", "Assignments", "HierarchicalInput", "Hierarchy"]

HIERARCHY = "hierarchy"
"""The task-context key under which a run passes its `Hierarchy` down the call tree."""


def _not_blank(text: str) -> str:
    if not text.strip():
        raise ValueError("the task is blank")
    return text


class HierarchicalInput(BaseModel):
    """What the pattern is asked: ``{"task", "context"?}``, or the task as text."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    task: Annotated[str, AfterValidator(_not_blank)]
    """What to do."""
    context: str | None = None
    """What the manager should know (facts, constraints); the teams are not shown it."""

    @model_validator(mode="before")
    @classmethod
    def _plain_text(cls, data: Any) -> Any:
        return {"task": data} if isinstance(data, str) else data


class Hierarchy(BaseModel):
    """Where a run stands: what it passes down in the task context under `HIERARCHY`."""

    model_config = ConfigDict(extra="ignore", frozen=True, use_attribute_docstrings=True)

    level: int = Field(ge=1)
    """The run's level: 1 at the top, one more for each hierarchical run above it."""
    max_depth: int = Field(ge=1)
    """The deepest level allowed: the smallest ``max_depth`` from the top down to the run."""


class Assignment(BaseModel):
    """One subtask for one team."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    team: str
    """The team's name, exactly as listed."""
    task: str
    """The subtask, stated so that the team can do it without seeing the other subtasks."""


class Assignments(BaseModel):
    """The manager model's structured output."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    assignments: list[Assignment] = Field(min_length=1)
    """The subtasks; a team may get several."""


class Work(BaseModel):
    """An assignment as a manager agent may give it: any task, perhaps no team."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    team: str | None
    task: Any


class Delegation(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    assignments: list[Work] = Field(min_length=1)
