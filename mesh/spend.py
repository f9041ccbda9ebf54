"""Spending limits shared by the whole mesh: what each agent spent on models in the current time
window, kept in a key-value store that every node of the agent reads and writes.

On NATS the store is a JetStream KV bucket (the runtime's ``mesh_results`` bucket, beside the
ledger's entries), so the nodes of an agent share one count; in memory it is the runtime's own
store. One key per agent and window, ``spend.<agent>.<window seconds>.<window number>``, holds
a `SpendWindow` (msgpack). Windows start at multiples of their length in Unix time.

A model call goes through it in two steps. `SpendMeter.reserve`, before the call, checks the
window's spend plus the prompt's cost against the limit and, if it fits, adds the prompt's
tokens and cost at once, so two nodes checking at the same moment cannot both take the last
of it. `SpendMeter.settle`, after the call, adds what the call really cost beyond that (its
output); `SpendMeter.release` takes the reservation back when the call failed. Every change is
a compare-and-set on the key's revision, tried again on a conflict: no increment is lost.
The output of a call is only known once it is made, so a call admitted near the limit may go
past it by its output; the next call is refused.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict

from mesh.bus.kv import KeyValueStore
from mesh.codec import decode, encode
from mesh.envelope import Usage
from mesh.errors import BudgetExceededError, MeshTimeoutError
from mesh.llm.config import SpendLimit

__all__ = ["SPEND_KEY_PREFIX", "Reservation", "SpendMeter", "SpendWindow"]

_log = logging.getLogger("mesh.spend")

SPEND_KEY_PREFIX = "spend"
"""First token of every spend key in the store."""
_MAX_TRIES = 100
"""Compare-and-set tries of one change before giving up (only under extreme contention)."""


class SpendWindow(BaseModel):
    """One agent's model spend in one window: the value of its spend key."""

    model_config = ConfigDict(extra="allow")

    agent: str
    """The agent whose calls are counted."""
    start: float
    """When the window began, Unix time in seconds."""
    seconds: int
    """Its length."""
    cost_usd: float = 0.0
    """US dollars of the priced calls, the reservations of calls in flight included."""
    input_tokens: int = 0
    """Input tokens, reservations included."""
    output_tokens: int = 0
    """Output tokens of the calls made."""
    calls: int = 0
    """Calls made (settled)."""
    unpriced_calls: int = 0
    """Calls of unknown price (counted in tokens only; refused under a ``usd`` limit)."""

    @property
    def tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Reservation:
    """What `SpendMeter.reserve` added for a call about to be made."""

    key: str
    """The window's key."""
    agent: str
    """The agent."""
    start: float
    """The window's start."""
    seconds: int
    """The window's length."""
    tokens: int
    """The prompt's tokens."""
    cost_usd: float
    """The prompt's cost (0 when unknown)."""


class SpendMeter:
    """Reads and changes the spend windows in ``store``.

    Args:
        store: Where the windows are kept (shared by every node on NATS).
        clock: Unix time source (tests move it).
    """

    def __init__(self, store: KeyValueStore, *, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    @staticmethod
    def key(agent: str, window: int, start: float) -> str:
        """The key of ``agent``'s window of ``window`` seconds that began at ``start``."""
        return f"{SPEND_KEY_PREFIX}.{agent}.{window}.{int(start // window)}"

    def window_start(self, limit: SpendLimit) -> float:
        """When the current window of ``limit`` began."""
        return float(math.floor(self._clock() / limit.window) * limit.window)

    async def read(self, agent: str, limit: SpendLimit) -> SpendWindow:
        """``agent``'s spend in the current window of ``limit`` (zero if nothing yet).

        Raises:
            MeshError: The store cannot be reached.
        """
        start = self.window_start(limit)
        held = await self._store.get(self.key(agent, limit.window, start))
        if held is None:
            return SpendWindow(agent=agent, start=start, seconds=limit.window)
        return decode(held.value, SpendWindow)

    async def reserve(
        self, agent: str, limit: SpendLimit, *, model: str, tokens: int, cost_usd: float | None
    ) -> Reservation:
        """Check a call's prompt against ``limit`` and, if it fits, count it in the window.

        Args:
            agent: The calling agent.
            limit: Its spend limit.
            model: The model to be called (for the message).
            tokens: The prompt's tokens.
            cost_usd: The prompt's cost; ``None`` if the model's price is unknown.

        Returns:
            The reservation, to `settle` or `release` once the call is over.

        Raises:
            BudgetExceededError: The call would go past the limit (or its price is unknown
                under a ``usd`` limit); ``details`` say how far (see ``subjects.md``).
            MeshError: The store cannot be reached.
        """
        start = self.window_start(limit)
        key = self.key(agent, limit.window, start)

        def reserve(window: SpendWindow) -> SpendWindow:
            refusal = _refusal(window, limit, tokens, cost_usd)
            if refusal is not None:
                left = max(0.0, start + limit.window - self._clock())
                raise BudgetExceededError(
                    f"agent {agent!r} may spend {_limit_text(limit)} on models per "
                    f"{limit.window}s window, all its nodes together; a call of {model} with "
                    f"a prompt of {tokens} tokens would go past it: {refusal}",
                    details={
                        "limit": "spend_limit",
                        "agent": agent,
                        "model": model,
                        "prompt_tokens": tokens,
                        "prompt_cost_usd": cost_usd,
                        "spend_limit": limit.model_dump(),
                        "spent": {
                            "cost_usd": window.cost_usd,
                            "tokens": window.tokens,
                            "calls": window.calls,
                        },
                        "retry_after": round(left, 3),
                    },
                )
            return window.model_copy(
                update={
                    "cost_usd": window.cost_usd + (cost_usd or 0.0),
                    "input_tokens": window.input_tokens + tokens,
                }
            )

        await self._change(key, agent, start, limit.window, reserve)
        return Reservation(key, agent, start, limit.window, tokens, cost_usd or 0.0)

    async def settle(self, reservation: Reservation, usage: Usage) -> None:
        """Count the call made under ``reservation``: its ``usage`` replaces the reservation.

        Raises:
            MeshError: The store cannot be reached.
        """

        def settle(window: SpendWindow) -> SpendWindow:
            priced = usage.cost_usd is not None
            return window.model_copy(
                update={
                    "cost_usd": window.cost_usd - reservation.cost_usd + (usage.cost_usd or 0.0),
                    "input_tokens": window.input_tokens - reservation.tokens + usage.input_tokens,
                    "output_tokens": window.output_tokens + usage.output_tokens,
                    "calls": window.calls + usage.calls,
                    "unpriced_calls": window.unpriced_calls + (0 if priced else usage.calls),
                }
            )

        await self._change(
            reservation.key, reservation.agent, reservation.start, reservation.seconds, settle
        )

    async def release(self, reservation: Reservation) -> None:
        """Take back ``reservation`` (its call failed, or was never made).

        Raises:
            MeshError: The store cannot be reached.
        """

        def release(window: SpendWindow) -> SpendWindow:
            return window.model_copy(
                update={
                    "cost_usd": max(0.0, window.cost_usd - reservation.cost_usd),
                    "input_tokens": max(0, window.input_tokens - reservation.tokens),
                }
            )

        await self._change(
            reservation.key, reservation.agent, reservation.start, reservation.seconds, release
        )

    async def _change(
        self,
        key: str,
        agent: str,
        start: float,
        seconds: int,
        change: Callable[[SpendWindow], SpendWindow],
    ) -> SpendWindow:
        """Apply ``change`` to the window at ``key`` with compare-and-set, again on conflict.

        Raises:
            MeshTimeoutError: Every try met a conflict (extreme contention).
            MeshError: ``change`` refused, or the store cannot be reached.
        """
        for _ in range(_MAX_TRIES):
            held = await self._store.get(key)
            if held is None:
                changed = change(SpendWindow(agent=agent, start=start, seconds=seconds))
                written = await self._store.create(key, encode(changed))
            else:
                changed = change(decode(held.value, SpendWindow))
                written = await self._store.update(key, encode(changed), revision=held.revision)
            if written is not None:
                return changed
            _log.debug("spend window %s changed meanwhile: trying again", key)
        raise MeshTimeoutError(f"the spend window {key} kept changing: {_MAX_TRIES} tries failed")


def _refusal(
    window: SpendWindow, limit: SpendLimit, tokens: int, cost_usd: float | None
) -> str | None:
    """Why a prompt of ``tokens`` costing ``cost_usd`` does not fit, or ``None`` if it does."""
    if limit.usd is not None:
        if cost_usd is None:
            return "the model's price is unknown, so its cost cannot be checked"
        if window.cost_usd + cost_usd > limit.usd:
            return f"${window.cost_usd:.6g} spent in this window, the prompt ${cost_usd:.6g}"
    if limit.tokens is not None and window.tokens + tokens > limit.tokens:
        return f"{window.tokens} tokens used in this window, the prompt {tokens}"
    return None


def _limit_text(limit: SpendLimit) -> str:
    parts = [] if limit.usd is None else [f"${limit.usd:.6g}"]
    if limit.tokens is not None:
        parts.append(f"{limit.tokens} tokens")
    return " and ".join(parts)
