"""`supervisor`: a supervisor picks which worker acts next, round after round, until the task is
done or ``max_rounds`` worker turns have run.

A round is one worker's turn. Before each, the supervisor picks the worker by its
``strategy``:

- ``model``: it asks ``model`` for a `Decision` (``{"next": <worker> | "done", "reason",
  "answer"?}``), showing it the workers with their descriptions, the task and the
  conversation. A worker that is not listed is refused by the decision's schema, and the model
  is asked once more with the error; a second miss fails with ``invalid_output``.
- ``round_robin``: the workers in their configured order, over and over.
- ``match``: the worker whose description shares the most words with the latest turn of the
  conversation (with the task for the first round, or when no description shares a word with
  the latest turn); the worker that acted last is not picked again if there are others, and
  ties go to the worker listed first. Words are lower-cased runs of letters and digits of
  three characters or more, leaving out a few common English words, with a plural ending
  taken off (``summaries`` is ``summary``, ``facts`` is ``fact``, ``class`` stays).

The task is ``done`` when the model answers ``"done"`` (its ``answer``, if any, is the
answer), when a worker's output is ``{"done": true, "answer": ...}`` (build it with `finish`;
``answer`` is the answer), or after ``stop_after`` rounds, if set. Otherwise it stops with
``max_rounds`` once that many rounds have run (the model is still asked once more, so it may
declare the task done after the last round). Without an answer of its own, the answer is the
latest turn's content.

Each worker is given ``{"input": <the task>, "conversation": [{"agent", "content"}, ...]}``
(plus ``"instruction"``: the model's reason for picking it, with the ``model`` strategy).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents._model import DEFAULT_MODEL, ModelName, one_of
from mesh.agent import Agent
from mesh.context import Context
from mesh.envelope import Task
from mesh.errors import InvalidOutputError
from mesh.refs import AgentRef
from patterns._callee import failure
from patterns._conversation import ConversationInput, Turn, as_text, read_input
from patterns._metrics import measured, partial_on_budget

__all__ = [
    "DEFAULT_MAX_ROUNDS",
    "Decision",
    "StopReason",
    "Strategy",
    "SupervisorConfig",
    "SupervisorPattern",
    "finish",
    "words",
]

DEFAULT_MAX_ROUNDS = 10
"""Most worker turns in one task unless the config says otherwise."""

Strategy = Literal["model", "round_robin", "match"]
"""How the supervisor picks the next worker."""

StopReason = Literal["done", "max_rounds"]
"""Why a supervisor stopped."""

DONE: Final = "done"
"""What the model answers to end the task (so no worker may be called that)."""

_WORD = re.compile(r"[a-z0-9]+")
_COMMON_WORDS = (
    "the and for with that this from into about are was were has have not but all any can "
    "will its you your our who what which when how then than them they"
)
_COMMON = frozenset(_COMMON_WORDS.split())


def words(text: str) -> frozenset[str]:
    """The words the ``match`` strategy compares (see the module docstring)."""
    found = set()
    for word in _WORD.findall(text.lower()):
        if len(word) < 3 or word in _COMMON:
            continue
        if len(word) > 4 and word.endswith("ies"):
            word = word[:-3] + "y"
        elif len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
            word = word[:-1]
        found.add(word)
    return frozenset(found)


def finish(answer: Any) -> dict[str, Any]:
    """The output with which a worker declares the task done, ``answer`` being the answer."""
    return {"done": True, "answer": answer}


class SupervisorConfig(BaseModel):
    """Settings of a `supervisor` pattern."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    workers: dict[AgentRef, str] = Field(min_length=1)
    """The workers by name, each with a description of what it does (shown to the model; the
    words ``match`` compares). A list of names is taken too, with no descriptions."""
    strategy: Strategy = "model"
    """How the next worker is picked: ``model``, ``round_robin`` or ``match``."""
    model: ModelName = DEFAULT_MODEL
    """The model that decides, ``provider:model`` (``model`` strategy only)."""
    instructions: str | None = None
    """How to supervise; added to the model's system prompt."""
    max_rounds: int = Field(default=DEFAULT_MAX_ROUNDS, ge=1)
    """Most worker turns; the reply then says ``"stopped": "max_rounds"``."""
    stop_after: int | None = Field(default=None, ge=1)
    """The task is done after this many rounds (e.g. one pass of ``round_robin``); ``None``
    leaves it to the model or to a worker's `finish` output. At most ``max_rounds``."""

    @field_validator("workers", mode="before")
    @classmethod
    def _names_only(cls, workers: Any) -> Any:
        if isinstance(workers, Sequence) and not isinstance(workers, str):
            return dict.fromkeys(workers, "")
        return workers

    @field_validator("workers")
    @classmethod
    def _valid_names(cls, workers: dict[str, str]) -> dict[str, str]:
        if DONE in workers:
            raise ValueError(f"a worker may not be named {DONE!r}: the model says it to finish")
        return workers

    @model_validator(mode="after")
    def _consistent(self) -> SupervisorConfig:
        if self.strategy == "match":
            blank = [name for name, about in self.workers.items() if not words(about)]
            if blank:
                raise ValueError(
                    "strategy 'match' needs a description of every worker, with words to "
                    f"compare (of three letters or more): {blank}"
                )
        if self.stop_after is not None and self.stop_after > self.max_rounds:
            raise ValueError(
                f"stop_after ({self.stop_after}) is above max_rounds ({self.max_rounds})"
            )
        return self


class Decision(BaseModel):
    """The supervising model's choice (its structured output)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    next: str
    """The worker who acts next, exactly as listed, or "done" when the task is complete."""
    reason: str
    """Why; for a worker, what it should do now."""
    answer: str | None = None
    """With "done": the final answer (leave it out to take the latest turn's content)."""


class SupervisorPattern(Agent[SupervisorConfig]):
    """Have workers take turns, picked by a supervisor, until done (see the module docstring).

    Input: the task (any value), or ``{"input", "conversation"?}`` to go on from a
    conversation (any object with an ``"input"`` key is read so).

    Output: ``{"answer", "rounds", "stopped", "conversation"}``: the answer, how many worker
    turns ran, ``"done"`` or ``"max_rounds"``, and every turn (``{"agent", "content"}``).

    Figures (``meta["pattern"]["figures"]``): ``strategy``, ``rounds``, ``workers_used``
    (turns by worker, in order of first use) and ``stopped``.

    Raises:
        BadSchemaError: The input's conversation is malformed.
        InvalidOutputError: The model gave no valid decision (e.g. named no listed worker)
            in two tries; ``details`` has its raw output, the errors and the ``workers``.
        MeshError: A worker failed: its error class and code, the message naming it and the
            round; ``details`` has ``agent``, ``round`` and the worker's ``error``. Or the
            model failed (see `Context.llm`).
        BudgetExceededError: A worker, or the deciding model, ran out of the task's budget:
            as above, and ``details.partial`` is ``{"answer", "rounds", "stopped":
            "budget_exceeded", "conversation"}`` so far.
    """

    name = "supervisor"
    description = "A supervisor picks which worker acts next until the task is done."
    config_model = SupervisorConfig

    def __init__(self, *, name: str | None = None, config: SupervisorConfig | None = None) -> None:
        super().__init__(name=name, config=config)
        self._decision = one_of(Decision, "next", [*self.config.workers, DONE])
        self._words = {name: words(about) for name, about in self.config.workers.items()}

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        request = read_input(ConversationInput, task.input, pattern="supervisor")
        config = self.config
        async with measured(ctx, "supervisor") as figures:
            turns = list(request.conversation)
            used: dict[str, int] = {}
            rounds = 0
            answer = turns[-1].content if turns else None
            figures.update(strategy=config.strategy, rounds=0, workers_used=used)
            stopped: StopReason
            with partial_on_budget(lambda: _partial(answer, rounds, turns)):
                while True:
                    worker, reason, final = await self._pick(ctx, request.input, turns, rounds)
                    if worker is None:
                        stopped = DONE
                        answer = answer if final is None else final
                        break
                    if rounds == config.max_rounds:
                        stopped = "max_rounds"
                        break
                    given: dict[str, Any] = {
                        "input": request.input,
                        "conversation": [turn.model_dump() for turn in turns],
                    }
                    if reason is not None:
                        given["instruction"] = reason
                    reply = await ctx.request(worker, given)
                    rounds += 1
                    used[worker] = used.get(worker, 0) + 1
                    figures["rounds"] = rounds
                    if reply.error is not None:
                        where = (
                            f"supervisor {self.name!r}: worker {worker!r} failed in round {rounds}"
                        )
                        raise failure(reply, where, agent=worker, round=rounds)
                    finished, answer = _answer_of(reply.output)
                    turns.append(Turn(agent=worker, content=answer))
                    if finished or rounds == config.stop_after:
                        stopped = DONE
                        break
            figures["stopped"] = stopped
            return {
                "answer": answer,
                "rounds": rounds,
                "stopped": stopped,
                "conversation": [turn.model_dump() for turn in turns],
            }

    async def _pick(
        self, ctx: Context, task: Any, turns: list[Turn], rounds: int
    ) -> tuple[str | None, str | None, str | None]:
        """The next worker (``None``: done), the model's reason, and its answer."""
        workers = list(self.config.workers)
        if self.config.strategy == "round_robin":
            return workers[rounds % len(workers)], None, None
        if self.config.strategy == "match":
            return self._match(task, turns), None, None
        decision = await self._ask(ctx, task, turns, rounds)
        if decision.next == DONE:
            return None, decision.reason, decision.answer
        return decision.next, decision.reason, None

    def _match(self, task: Any, turns: list[Turn]) -> str:
        last = turns[-1].agent if turns else None
        workers = list(self.config.workers)
        eligible = [name for name in workers if name != last] or workers
        queries = [as_text(turns[-1].content), as_text(task)] if turns else [as_text(task)]
        for query in queries:
            asked = words(query)
            scores = {name: len(asked & self._words[name]) for name in eligible}
            best = max(eligible, key=scores.__getitem__)  # the first of equals: config order
            if scores[best]:
                return best
        return eligible[0]

    async def _ask(self, ctx: Context, task: Any, turns: list[Turn], rounds: int) -> Decision:
        config = self.config
        listed = "\n".join(
            f"- {name}: {about}" if about else f"- {name}" for name, about in config.workers.items()
        )
        system = (
            "You supervise a team of workers. Given the task and the conversation so far, pick "
            f'the worker who should act next, or answer "{DONE}" when the task is complete '
            f"(then give the final answer).\n\nWorkers:\n{listed}"
        )
        if config.instructions:
            system += f"\n\n{config.instructions}"
        so_far = "\n\n".join(f"[{turn.agent}]\n{as_text(turn.content)}" for turn in turns)
        prompt = (
            f"Task:\n{as_text(task)}\n\nConversation so far:\n{so_far or '(nothing yet)'}\n\n"
            f"Worker turns left: {config.max_rounds - rounds}"
        )
        try:
            response = await ctx.llm(
                config.model, prompt, system=system, output_type=self._decision
            )
        except InvalidOutputError as exc:
            raise InvalidOutputError(
                f"supervisor {self.name!r}: no valid decision: {exc.message}",
                details={**(exc.details or {}), "workers": list(config.workers)},
            ) from exc
        decision: Decision = response.parsed
        return decision


def _partial(answer: Any, rounds: int, turns: list[Turn]) -> dict[str, Any]:
    """The output of a run that ran out of budget, as far as it got."""
    return {
        "answer": answer,
        "rounds": rounds,
        "stopped": "budget_exceeded",
        "conversation": [turn.model_dump() for turn in turns],
    }


def _answer_of(output: Any) -> tuple[bool, Any]:
    """Whether a worker's output is a `finish` one, and its content for the conversation."""
    if isinstance(output, Mapping) and output.get("done") is True:
        return True, output.get("answer")
    return False, output
