"""`CallGuard`: what a model call of one task must pass before the provider sees it, and what
it books once made.

In order: the prompt's size (``llm.limits.<agent>.max_prompt_tokens``: ``payload_too_large``),
the task's budget (`mesh.envelope.Budget`, less what the task and the calls below it have
spent and what its calls in flight have reserved: ``budget_exceeded``), and the agent's spend
limit shared by the mesh (`mesh.spend.SpendMeter`: ``budget_exceeded``). The prompt's tokens
are counted by `mesh.llm.tokens.prompt_tokens` and priced by the `PriceBook` at the model's
input price; the output is not known before the call, so it is charged after it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio

from mesh.envelope import Budget, Usage
from mesh.errors import BudgetExceededError, MeshError, PayloadTooLargeError
from mesh.llm.tokens import prompt_tokens
from mesh.llm.types import ModelRequest, TokenUsage

if TYPE_CHECKING:
    from mesh.llm.config import ModelLimits
    from mesh.llm.model import Model
    from mesh.llm.pricing import PriceBook
    from mesh.spend import Reservation, SpendMeter

__all__ = ["Admission", "CallGuard"]

_log = logging.getLogger("mesh.llm")


class Admission:
    """A call the guard let through; the caller sets ``usage`` once the call is made."""

    __slots__ = ("cost_usd", "tokens", "usage")

    def __init__(self, tokens: int, cost_usd: float | None) -> None:
        self.tokens = tokens
        """The prompt's tokens, as counted before the call."""
        self.cost_usd = cost_usd
        """The prompt's cost; ``None`` when the model's price is unknown."""
        self.usage: Usage | None = None
        """What the call used; ``None`` while it runs, or if it failed."""


class CallGuard:
    """Checks the model calls of one task (see the module docstring).

    Args:
        agent: The calling agent.
        prices: Prices the prompts.
        budget: The task's budget; ``None``: none.
        spent: What the task has spent so far (its context's usage).
        limits: The agent's ``llm.limits`` entry; ``None``: none.
        meter: The shared spend windows; needed when ``limits`` has a spend limit.
    """

    def __init__(
        self,
        *,
        agent: str,
        prices: PriceBook,
        budget: Budget | None,
        spent: Callable[[], Usage],
        limits: ModelLimits | None = None,
        meter: SpendMeter | None = None,
    ) -> None:
        self._agent = agent
        self._prices = prices
        self._budget = budget
        self._spent = spent
        self._limits = limits
        self._meter = meter
        # Reserved by this task's calls in flight, so that calls made at once cannot
        # together pass the budget by their prompts.
        self._held_tokens = 0
        self._held_cost = 0.0

    @asynccontextmanager
    async def admit(self, model: Model, request: ModelRequest) -> AsyncIterator[Admission]:
        """Let the call of ``request`` to ``model`` through, or refuse it; make the call in
        the block and set the admission's ``usage``.

        Raises:
            PayloadTooLargeError: The prompt is larger than ``max_prompt_tokens``.
            BudgetExceededError: The prompt would pass the task's budget or the agent's
                spend limit (see ``subjects.md`` for the details).
            MeshError: The spend windows cannot be reached.
        """
        tokens = prompt_tokens(model, request)
        limits = self._limits
        largest = None if limits is None else limits.max_prompt_tokens
        if largest is not None and tokens > largest:
            raise PayloadTooLargeError(
                f"{self._agent}: the prompt to {model.name} is {tokens} tokens, above "
                f"max_prompt_tokens {largest}",
                details={
                    "limit": "max_prompt_tokens",
                    "agent": self._agent,
                    "model": model.name,
                    "prompt_tokens": tokens,
                    "max_prompt_tokens": largest,
                },
            )
        cost = self._prices.cost(model.name, TokenUsage(input_tokens=tokens))
        self._check_budget(model.name, tokens, cost)
        reservation: Reservation | None = None
        if limits is not None and limits.spend is not None and self._meter is not None:
            reservation = await self._meter.reserve(
                self._agent, limits.spend, model=model.name, tokens=tokens, cost_usd=cost
            )
        admission = Admission(tokens, cost)
        self._held_tokens += tokens
        self._held_cost += cost or 0.0
        try:
            yield admission
        finally:
            self._held_tokens -= tokens
            self._held_cost -= cost or 0.0
            if reservation is not None:
                with anyio.CancelScope(shield=True):  # a cancelled call is booked too
                    await self._book(reservation, admission.usage)

    def _check_budget(self, model: str, tokens: int, cost: float | None) -> None:
        budget = self._budget
        if budget is None:
            return
        left = budget.left_after(self._spent())
        tokens_left = None if left.max_tokens is None else left.max_tokens - self._held_tokens
        cost_left = None if left.max_cost_usd is None else left.max_cost_usd - self._held_cost
        problems = []
        if tokens_left is not None and tokens > tokens_left:
            problems.append(f"its prompt's {tokens} tokens, with {tokens_left} tokens left")
        if cost_left is not None:
            if cost is None:
                problems.append(f"the price of {model} is unknown, so its cost cannot be checked")
            elif cost > cost_left:
                problems.append(f"its prompt's ${cost:.6g}, with ${cost_left:.6g} left")
        if problems:
            raise BudgetExceededError(
                f"{self._agent}: a call of {model} would pass the task's budget: "
                + "; ".join(problems),
                details={
                    "limit": "budget",
                    "agent": self._agent,
                    "model": model,
                    "prompt_tokens": tokens,
                    "prompt_cost_usd": cost,
                    "budget": _limits_of(budget),
                    "left": {"max_cost_usd": cost_left, "max_tokens": tokens_left},
                },
            )

    async def _book(self, reservation: Reservation, usage: Usage | None) -> None:
        """Settle the reservation with what the call used, or release it; never raises: the
        call is over, and a count that could not be written must not fail it."""
        assert self._meter is not None
        try:
            if usage is None:
                await self._meter.release(reservation)
            else:
                await self._meter.settle(reservation, usage)
        except MeshError as exc:
            _log.warning("%s: the spend of a model call was not counted: %s", self._agent, exc)


def _limits_of(budget: Budget) -> dict[str, Any]:
    return {"max_cost_usd": budget.max_cost_usd, "max_tokens": budget.max_tokens}
