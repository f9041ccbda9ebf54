"""A rate limit on the tasks an agent takes: a token bucket in each host.

An agent with ``rate_limit: {per_second: 5, burst: 10}`` takes at most ``burst`` tasks at
once and ``per_second`` on average after that; a task above it is answered ``rate_limited``
(retryable, with ``details.retry_after``) without running. Each host (node) keeps its own
bucket: three nodes of an agent take three times its rate, as they share its work. The host
calls `RateLimiter.admit` once per task, before the agent runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from mesh.errors import RateLimitedError

__all__ = ["RateLimit", "RateLimiter", "TokenBucket"]


class RateLimit(BaseModel):
    """How many tasks an agent takes, per node (``agents.<name>.rate_limit``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    per_second: float = Field(gt=0, allow_inf_nan=False)
    """Tasks per second on average."""
    burst: int | None = Field(default=None, ge=1)
    """Tasks taken at once after a quiet spell; ``None``: ``per_second`` rounded up."""

    @property
    def capacity(self) -> int:
        """The bucket's size: ``burst``, or ``per_second`` rounded up."""
        return self.burst if self.burst is not None else max(1, math.ceil(self.per_second))


class TokenBucket:
    """A bucket of ``capacity`` tokens, refilled at ``rate`` a second; full at first.

    Args:
        rate: Tokens added per second.
        capacity: Most tokens held.
        clock: Monotonic time in seconds (tests move it).
    """

    def __init__(
        self, rate: float, capacity: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._rate = rate
        self._capacity = float(capacity)
        self._clock = clock
        self._tokens = float(capacity)
        self._updated = clock()

    def take(self) -> float:
        """Take one token if there is one.

        Returns:
            0 when taken; else the seconds until one will be there (nothing is taken).
        """
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / self._rate


class RateLimiter:
    """One agent's rate limit in one host: what the host asks before running a task.

    Args:
        agent: The agent (named in the refusal).
        limit: Its rate limit.
        clock: Monotonic time in seconds (tests move it).
    """

    def __init__(
        self, agent: str, limit: RateLimit, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.agent = agent
        self.limit = limit
        self._bucket = TokenBucket(limit.per_second, limit.capacity, clock=clock)

    def admit(self) -> None:
        """Count one task in, or refuse it.

        Raises:
            RateLimitedError: The agent is at its rate (retryable); ``details`` have
                ``retry_after`` (seconds until a task would be taken), ``per_second`` and
                ``burst``.
        """
        wait = self._bucket.take()
        if wait:
            limit = self.limit
            raise RateLimitedError(
                f"agent {self.agent!r} takes at most {limit.per_second:g} tasks a second "
                f"(bursts of {limit.capacity}) on this node: try again in {wait:.3g}s",
                details={
                    "limit": "rate_limit",
                    "retry_after": round(wait, 3),
                    "per_second": limit.per_second,
                    "burst": limit.capacity,
                },
            )
