"""`sequential`: a pipeline of agents, each step working on what the one before it answered.

A step may instead be given a template of the pipeline's input and the earlier outputs
(``{input}``, ``{previous}``, ``{steps[0]}``, and keys into them: ``{input[topic]}``); the
templates are checked when the config loads, so a step can only name earlier steps. When a
step fails, the pipeline stops (``on_error: stop``, the default) and its error names the step
and carries what the earlier steps answered; or it records the failure and goes on
(``continue``), the failed step's output being ``None``. A step that fails with
``budget_exceeded`` stops the pipeline either way: no later step's model call would fit.

In YAML::

    pipeline:
      kind: sequential
      steps:
        - outline                          # gets the pipeline's input
        - agent: writer
          input: "Write about {input}, following this outline:\\n{previous}"
        - agent: reviewer
          input: {task: "{input}", answer: "{steps[1]}"}
          timeout: 30
      on_error: stop
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Reply, Task
from mesh.errors import BadSchemaError, ErrorCode
from mesh.refs import AgentCall
from patterns._callee import failure
from patterns._metrics import measured, with_partial
from patterns._step_template import StepTemplate

__all__ = ["OnError", "SequentialConfig", "SequentialPattern", "SequentialStep"]

OnError = Literal["stop", "continue"]
"""What a pipeline does when a step fails."""


class SequentialStep(AgentCall):
    """One step of a pipeline; in YAML, a plain agent name is a step with no template."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    input: Any = None
    """What the step is given: ``None`` for the previous step's output (the pipeline's input
    for the first step); or a template: text with ``{input}``, ``{previous}`` (in the first
    step, the input) and ``{steps[i]}`` fields (``i`` from 0, an earlier step), each followed
    by any ``[key]``s (``{input[topic]}``) and optionally a format spec (``{input[n]:.2f}``),
    or an object or list whose text values are such templates. A text that is exactly one
    field gives that value as it is (an object stays an object); otherwise values are written
    into the text, objects as JSON (``{{`` and ``}}`` are literal braces)."""
    timeout: float | None = Field(default=None, gt=0)
    """Seconds the step may take (never more than the pipeline has left); ``None`` for the
    callee's default."""


class SequentialConfig(BaseModel):
    """Settings of a `sequential` pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    steps: tuple[SequentialStep, ...] = Field(min_length=1)
    """The steps, in order: agent names, or ``{agent, input?, timeout?}``."""
    on_error: OnError = "stop"
    """When a step fails: ``stop`` and fail with the step's error, or ``continue`` with
    ``None`` as its output (the failure is recorded in the output's ``steps``)."""

    @model_validator(mode="after")
    def _templates_compile(self) -> SequentialConfig:
        for index, step in enumerate(self.steps):
            if step.input is not None:
                try:
                    StepTemplate(step.input, position=index)
                except ValueError as exc:
                    raise ValueError(f"steps[{index}] ({step.agent}) input: {exc}") from exc
        return self


class SequentialPattern(Agent[SequentialConfig]):
    """Run the steps one after another (see the module docstring).

    Input: anything; it is the first step's input (unless that step has a template), and
    ``{input}`` in every template. A template that reads a key of the input fails the task
    with ``bad_schema`` before any step runs if the input lacks it.

    Output: ``{"output": <the last step's output>, "steps": [...]}``, one entry per step run:
    ``{"agent", "output", "latency_ms"}``, or ``{"agent", "error": {"code", "message",
    "retryable", "details"?}, "latency_ms"}`` for a step that failed (``continue``).

    Figures (``meta["pattern"]["figures"]``): ``steps``, each step's ``{"agent",
    "latency_ms", "outcome"}`` (``ok`` or its error code), and ``failures``.

    Raises:
        BadSchemaError: The input lacks a key a template reads.
        MeshError: With ``on_error: stop``, the failed step's error: its class and code, the
            message naming the step (``steps[1] (writer)``); ``details`` has ``step`` (its
            index), ``agent``, ``steps`` (the entries of every step run, the failed one
            last) and the step's ``error``. A template that reads a key an earlier output
            lacks fails its step with ``bad_schema``.
        BudgetExceededError: A step ran out of the task's budget (whatever ``on_error``
            says): as above, and ``details.partial`` is ``{"output", "steps"}`` so far
            (``output``: the output of the last step that succeeded).
    """

    name = "sequential"
    description = "Runs agents one after another, each on what the one before it answered."
    config_model = SequentialConfig

    def __init__(self, *, name: str | None = None, config: SequentialConfig | None = None) -> None:
        super().__init__(name=name, config=config)
        self._templates = [
            None if step.input is None else StepTemplate(step.input, position=index)
            for index, step in enumerate(self.config.steps)
        ]

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        async with measured(ctx, "sequential") as figures:
            self._check_input(task.input)
            timings: list[dict[str, Any]] = []
            figures.update(steps=timings, failures=0)
            entries: list[dict[str, Any]] = []
            outputs: list[Any] = []
            previous = task.input
            for index, step in enumerate(self.config.steps):
                started = time.perf_counter()
                reply = await self._step(index, task, previous, outputs, ctx)
                latency = round((time.perf_counter() - started) * 1000, 3)
                outcome = "ok" if reply.error is None else reply.error.code
                timings.append({"agent": step.agent, "latency_ms": latency, "outcome": outcome})
                if reply.error is None:
                    entries.append(
                        {"agent": step.agent, "output": reply.output, "latency_ms": latency}
                    )
                    previous = reply.output
                else:
                    error = reply.error.model_dump(exclude_none=True)
                    entries.append({"agent": step.agent, "error": error, "latency_ms": latency})
                    figures["failures"] += 1
                    spent = reply.error.code == ErrorCode.BUDGET_EXCEEDED
                    if self.config.on_error == "stop" or spent:
                        stop = failure(
                            reply,
                            f"sequential: steps[{index}] ({step.agent}) failed",
                            step=index,
                            agent=step.agent,
                            steps=entries,
                        )
                        if spent:
                            stop = with_partial(stop, {"output": previous, "steps": entries})
                        raise stop
                    previous = None
                outputs.append(previous)
            return {"output": previous, "steps": entries}

    async def _step(
        self, index: int, task: Task, previous: Any, outputs: list[Any], ctx: Context
    ) -> Reply:
        """The step's reply; a step whose template cannot be filled fails without a call."""
        step = self.config.steps[index]
        template = self._templates[index]
        given = previous
        if template is not None:
            try:
                given = template.render(
                    {"input": task.input, "previous": previous, "steps": outputs}
                )
            except BadSchemaError as exc:
                refused = BadSchemaError(f"its input template cannot be filled: {exc.message}")
                return Reply.failure(task.id, refused)
        return await ctx.request(step.agent, given, timeout=step.timeout)

    def _check_input(self, value: Any) -> None:
        for index, template in enumerate(self._templates):
            if template is None:
                continue
            try:
                template.check_input(value)
            except BadSchemaError as exc:
                agent = self.config.steps[index].agent
                raise BadSchemaError(
                    f"sequential input: steps[{index}] ({agent}) needs {exc.message}"
                ) from exc
