"""`reflection`: generate an answer, have it critiqued, revise it, and repeat until it is good
enough, stops getting better, or the iterations run out.

One iteration is one call to the generator (the first writes, the next ones revise) and one
to the critic. The loop stops, checked in this order after each critique, when:

- ``threshold``: the score reaches ``threshold``;
- ``no_improvement``: the score beats the previous one by no more than ``min_delta``;
- ``max_iterations``: ``max_iterations`` iterations are done.

The reply carries the best answer (the latest of equals), every iteration's score and why
the loop stopped; the same figures go to ``mesh.telemetry.pattern``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents._model import parse_input
from agents.llm import template_fields
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.refs import AgentRef
from patterns._callee import output_of, parse_output, text_of
from patterns._metrics import measured

__all__ = [
    "DEFAULT_REVISE_PROMPT",
    "ReflectionConfig",
    "ReflectionInput",
    "ReflectionPattern",
    "StopReason",
]

StopReason = Literal["threshold", "no_improvement", "max_iterations"]
"""Why a reflection loop stopped."""

DEFAULT_REVISE_PROMPT = (
    "Task:\n{task}\n\nYour previous answer:\n{answer}\n\n"
    "A reviewer scored it {score:.2f} out of 1 and said:\n{feedback}\n\n"
    "Write an improved answer to the task. Reply with the answer only."
)
"""What the generator is asked when it revises."""

_REVISE_FIELDS = frozenset({"task", "answer", "feedback", "score", "iteration"})


class ReflectionConfig(BaseModel):
    """Settings of a `reflection` pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    generator: AgentRef = Field(default="llm", validate_default=True)
    """The agent that writes and revises (text in, text out; e.g. the built-in ``llm``)."""
    critic: AgentRef = Field(default="critic", validate_default=True)
    """The agent that scores (the built-in ``critic``, or one with the same contract:
    ``{"answer", "task", "criteria"?}`` in, ``{"score": 0..1, "feedback"}`` out)."""
    threshold: float = Field(default=0.8, ge=0, le=1)
    """Score at which an answer is good enough."""
    min_delta: float = Field(default=0.01, ge=0)
    """Least gain over the previous score that is worth another iteration."""
    max_iterations: int = Field(default=3, ge=1)
    """Most generate-or-revise-then-critique iterations."""
    criteria: tuple[str, ...] | None = Field(default=None, min_length=1)
    """What the critic judges on, unless a task says; ``None`` for the critic's own."""
    revise_prompt: str = DEFAULT_REVISE_PROMPT
    """What the generator gets to revise: a ``str.format`` template of ``{task}``,
    ``{answer}`` (the previous one), ``{feedback}``, ``{score}`` and ``{iteration}`` (the
    one being revised, from 1)."""

    @field_validator("revise_prompt")
    @classmethod
    def _revise_fields(cls, prompt: str) -> str:
        unknown = [name for name in template_fields(prompt) if name not in _REVISE_FIELDS]
        if unknown:
            known = ", ".join(sorted(_REVISE_FIELDS))
            raise ValueError(f"revise_prompt: unknown fields {unknown} (it may use {known})")
        try:  # a format spec that does not suit its value, e.g. {score:d}
            prompt.format(task="", answer="", feedback="", score=0.5, iteration=1)
        except ValueError as exc:
            raise ValueError(f"revise_prompt cannot be filled: {exc}") from exc
        return prompt


class ReflectionInput(BaseModel):
    """What a reflection is asked: the task as text, or ``{"task", "criteria"?}``."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    task: str
    """What to write; not blank. The generator gets it as it is for the first answer."""
    criteria: tuple[str, ...] | None = Field(default=None, min_length=1)
    """What the critic judges on, instead of the configured criteria."""

    @model_validator(mode="before")
    @classmethod
    def _plain_text(cls, data: Any) -> Any:
        return {"task": data} if isinstance(data, str) else data

    @field_validator("task")
    @classmethod
    def _not_blank(cls, task: str) -> str:
        if not task.strip():
            raise ValueError("the task is blank")
        return task


class _Critique(BaseModel):
    """The part of a critic's output the loop reads (the rest is ignored)."""

    score: float = Field(ge=0, le=1)
    feedback: str


class _Iteration(BaseModel):
    answer: str
    score: float
    feedback: str


class ReflectionPattern(Agent[ReflectionConfig]):
    """Generate, critique, revise, until good enough (see the module docstring).

    Input: the task as text, or ``{"task": "...", "criteria"?: [...]}``.

    Output: ``{"answer", "score", "feedback", "best_iteration", "iterations", "scores",
    "stopped"}``: the best answer with its score and the critic's feedback on it, the
    iteration it came from (from 1), how many iterations ran, each one's score in order, and
    ``"threshold"``, ``"no_improvement"`` or ``"max_iterations"``.

    Figures (``meta["pattern"]["figures"]``): ``iterations``, ``scores`` (the score
    trajectory), ``stopped``, ``best_iteration``.

    Raises:
        BadSchemaError: The input is not a task, or the task is blank.
        MeshError: The generator or the critic failed: the callee's error class and code,
            the message naming the agent, its step and the iteration; ``details`` has
            ``agent``, ``step`` (``generate``, ``revise`` or ``critique``), ``iteration``,
            ``scores`` so far and the callee's ``error``.
        InvalidOutputError: The generator answered something other than text, or the critic
            something without a score from 0 to 1 and a feedback.
    """

    name = "reflection"
    description = "Generates an answer, has a critic score it, and revises it until it is good."
    config_model = ReflectionConfig

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        request = parse_input(ReflectionInput, task.input, agent="reflection")
        criteria = request.criteria or self.config.criteria
        async with measured(ctx, "reflection") as figures:
            done: list[_Iteration] = []
            stopped: StopReason | None = None
            while stopped is None:
                answer = await self._write(ctx, request.task, done)
                critique = await self._critique(ctx, request.task, answer, criteria, done)
                done.append(_Iteration(answer=answer, **critique.model_dump()))
                stopped = self._stop_reason([step.score for step in done])
                figures.update(iterations=len(done), scores=[step.score for step in done])
            best = max(range(len(done)), key=lambda index: (done[index].score, index))
            figures.update(stopped=stopped, best_iteration=best + 1)
            return {
                "answer": done[best].answer,
                "score": done[best].score,
                "feedback": done[best].feedback,
                "best_iteration": best + 1,
                "iterations": len(done),
                "scores": [step.score for step in done],
                "stopped": stopped,
            }

    def _stop_reason(self, scores: list[float]) -> StopReason | None:
        config = self.config
        if scores[-1] >= config.threshold:
            return "threshold"
        if len(scores) > 1 and scores[-1] - scores[-2] <= config.min_delta:
            return "no_improvement"
        if len(scores) >= config.max_iterations:
            return "max_iterations"
        return None

    async def _write(self, ctx: Context, task: str, done: list[_Iteration]) -> str:
        """The first answer, or a revision of the last one."""
        if done:
            last = done[-1]
            step = "revise"
            prompt = self.config.revise_prompt.format(
                task=task,
                answer=last.answer,
                feedback=last.feedback,
                score=last.score,
                iteration=len(done),
            )
        else:
            step, prompt = "generate", task
        generator = self.config.generator
        iteration = len(done) + 1
        where = f"the generator {generator!r} in iteration {iteration} ({step})"
        reply = await ctx.request(generator, prompt)
        output = output_of(
            reply,
            f"reflection: {where} failed",
            agent=generator,
            step=step,
            iteration=iteration,
            scores=[previous.score for previous in done],
        )
        return text_of(output, f"reflection: the answer of {where}")

    async def _critique(
        self,
        ctx: Context,
        task: str,
        answer: str,
        criteria: tuple[str, ...] | None,
        done: list[_Iteration],
    ) -> _Critique:
        critic = self.config.critic
        iteration = len(done) + 1
        asked: dict[str, Any] = {"answer": answer, "task": task}
        if criteria is not None:
            asked["criteria"] = list(criteria)
        reply = await ctx.request(critic, asked)
        output = output_of(
            reply,
            f"reflection: the critic {critic!r} failed in iteration {iteration}",
            agent=critic,
            step="critique",
            iteration=iteration,
            scores=[previous.score for previous in done],
        )
        return parse_output(
            _Critique,
            output,
            f"reflection: the critic {critic!r} gave no usable critique in iteration {iteration}",
            agent=critic,
            step="critique",
            iteration=iteration,
        )
