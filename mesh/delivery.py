"""How tasks reach an agent and what a caller does when a try fails: `RetryPolicy`, `Delivery`.

Two delivery modes, chosen per agent in the configuration:

- ``core``: NATS request/reply on ``mesh.agent.<name>.run``; at most once. A caller retries a
  try that failed under its `RetryPolicy` (nothing was delivered, a retryable error, or, for
  an idempotent call, a try that timed out), with backoff, within the task's deadline.
- ``durable``: the task is stored in the JetStream work-queue stream ``MESH_TASKS`` and
  acknowledged by a node only after its reply is published; a node that dies loses nothing
  (the task is delivered again to another node); at least once, and effectively once for
  tasks whose result is already stored (see ``mesh/ledger.py``).
"""

from __future__ import annotations

import random
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator

from mesh.errors import ErrorCode

__all__ = ["AgentDelivery", "Delivery", "DurableSettings", "RetryPolicy"]


class Delivery(StrEnum):
    """How tasks travel to an agent."""

    CORE = "core"
    """NATS request/reply: at most once, nothing stored."""
    DURABLE = "durable"
    """A JetStream work queue: stored until a node has answered; needs NATS with JetStream."""


class RetryPolicy(BaseModel):
    """What a caller does when a try of a call fails: how often, how long it waits between.

    The wait before try ``n + 1`` is "full jitter" backoff: a random time between 0 and
    ``min(max_backoff, initial_backoff * 2 ** (n - 1))``, so callers that failed together do
    not come back together. No wait runs past the task's deadline: the call ends with the last
    failure instead.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    attempts: int = Field(default=3, ge=1)
    """Tries in all, the first included; ``1`` never retries."""
    initial_backoff: float = Field(default=0.1, gt=0)
    """Seconds: the ceiling of the first random wait (it doubles after each try)."""
    max_backoff: float = Field(default=2.0, gt=0)
    """Seconds: the ceiling the wait never goes above."""
    attempt_timeout: float | None = Field(default=None, gt=0)
    """Seconds one try of an idempotent call (an idempotency key, or an agent declared
    ``idempotent``) waits for its reply before trying again, within the deadline. ``None``:
    a try waits until the deadline. Calls that are not idempotent always wait until the
    deadline (a second try could run the work twice)."""
    retry_on: list[ErrorCode] = Field(
        default_factory=lambda: [ErrorCode.NO_RESPONDERS, ErrorCode.TIMEOUT]
    )
    """The failures that are tried again. ``no_responders`` (nothing was delivered) is always
    safe; ``timeout`` means a try that ran out of ``attempt_timeout`` (idempotent calls only);
    any other code (``rate_limited``, ``provider_error``, ...) is retried when the callee's
    error reply has it and says ``retryable``. Model calls are already retried by the provider
    SDKs: add those codes only if the callee itself fails transiently."""

    @model_validator(mode="after")
    def _backoff_ordered(self) -> RetryPolicy:
        if self.max_backoff < self.initial_backoff:
            raise ValueError("max_backoff must not be smaller than initial_backoff")
        return self

    def backoff(self, tries: int, rng: random.Random) -> float:
        """Seconds to wait after ``tries`` failed tries (full jitter).

        Args:
            tries: Tries made so far (1 after the first).
            rng: The randomness (each runtime has its own).

        Returns:
            A wait between 0 and the capped exponential ceiling.
        """
        ceiling = min(self.max_backoff, self.initial_backoff * 2 ** min(tries - 1, 30))
        return rng.uniform(0, ceiling)

    def retries(self, code: str) -> bool:
        """Whether a failure with ``code`` may be tried again under this policy."""
        return any(code == allowed.value for allowed in self.retry_on)


class DurableSettings(BaseModel):
    """How durable tasks are held, tried and kept (``delivery: durable``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    max_deliver: int = Field(default=5, ge=1)
    """Times a task is tried before it goes to the dead-letter subject ``mesh.dead.<agent>``.
    A try ends with a retryable error, or with its node going silent for ``ack_wait``."""
    ack_wait: float = Field(default=30.0, ge=1)
    """Seconds a node may hold a task without a sign of life before the task is given to
    another node; a node signals every third of it while the task runs, so only a dead or
    stuck node loses its tasks. Also the lease of an idempotency key (``mesh/ledger.py``)."""
    results_ttl: float = Field(default=86_400.0, ge=60)
    """Seconds results (and idempotency keys) are kept in the ``mesh_results`` bucket, so a
    caller that reconnects can fetch a result by task id; also how long a task may wait in
    the stream for a node."""
    duplicate_window: float = Field(default=120.0, ge=1)
    """Seconds in which a second publish of the same task id is dropped by the stream."""
    replicas: int = Field(default=1, ge=1, le=5)
    """Servers of a NATS cluster that keep a copy of the task streams (``MESH_TASKS``,
    ``MESH_DEAD``) and of the ``mesh_results`` bucket, when the mesh creates them: 3 on a
    3-server cluster survives the loss of any one server; 1 (on a single server) keeps one
    copy. JetStream allows at most 5, and no more than the cluster has servers. Streams and
    buckets that exist already keep theirs (``nats stream edit MESH_TASKS --replicas 3``)."""


class AgentDelivery(BaseModel):
    """How one agent is delivered to, as a runtime knows it (from its config entry)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    delivery: Delivery = Delivery.CORE
    """``core`` or ``durable``."""
    retry: RetryPolicy | None = None
    """Its callers' retry policy; ``None``: the runtime's."""
    idempotent: bool = False
    """A try that timed out may be tried again (a second run does no harm)."""
    max_deliver: int | None = Field(default=None, ge=1)
    """Tries of a durable task; ``None``: the runtime's `DurableSettings`."""
    ack_wait: float | None = Field(default=None, ge=1)
    """Seconds of node silence before a durable task moves on; ``None``: the runtime's."""
