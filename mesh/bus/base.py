"""The bus seam: what agents, runtimes and nodes need from a message bus, and nothing more.

Two implementations stand behind it, `NatsBus` (a real NATS connection) and `InMemoryBus`
(one process, no server); the conformance suite in ``tests/test_bus_conformance.py`` holds
them to the same behaviour. The bus moves bytes: it knows nothing of envelopes or agents.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "Bus",
    "BusClosedError",
    "Handler",
    "Headers",
    "Message",
    "Subscription",
]

Headers = Mapping[str, str]
"""Message headers; NATS header names are case-sensitive, and so are ours."""

DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""The NATS server's default ``max_payload`` (1 MiB), used by the in-memory bus too."""


@dataclass(frozen=True, slots=True)
class Message:
    """One message as a subscriber receives it."""

    subject: str
    """The subject it was published to (never a wildcard)."""
    data: bytes
    """The payload."""
    reply: str = ""
    """Where an answer goes; empty when the publisher expects none."""
    headers: Headers | None = None
    """Headers, or ``None`` when the message carried none."""


Handler = Callable[[Message], Awaitable[None]]
"""Called once per message. Calls for one subscription run one after another, in order:
a handler that must not hold up the next message hands its work to a task of its own."""


class BusClosedError(ConnectionError):
    """The bus is draining or closed: it takes no more publishes, subscriptions or requests."""


class Subscription(Protocol):
    """A live interest in a subject."""

    @property
    def subject(self) -> str:
        """The subject or wildcard pattern subscribed to."""
        ...

    @property
    def queue(self) -> str | None:
        """The queue group, or ``None``."""
        ...

    async def unsubscribe(self) -> None:
        """Stop delivery at once; messages not yet handed to the handler are dropped."""
        ...

    async def drain(self) -> None:
        """Stop taking new messages, then wait until the handler has seen every pending one."""
        ...


class Bus(Protocol):
    """Publish/subscribe and request/reply over subjects with NATS semantics.

    Subjects are dot-separated tokens; subscriptions may use ``*`` (one token) and ``>``
    (one or more trailing tokens). Every member of a queue group shares one interest: each
    message goes to exactly one of them.
    """

    @property
    def max_payload(self) -> int:
        """The largest payload, in bytes, that `publish` accepts."""
        ...

    def new_inbox(self) -> str:
        """A fresh, unique subject for replies."""
        ...

    async def publish(
        self, subject: str, data: bytes, *, reply: str = "", headers: Headers | None = None
    ) -> None:
        """Send a message without waiting for anyone.

        Raises:
            ValueError: The subject is empty or contains whitespace.
            PayloadTooLargeError: ``data`` is larger than `max_payload`.
            BusClosedError: The bus is draining or closed.
        """
        ...

    async def subscribe(
        self, subject: str, handler: Handler, *, queue: str | None = None
    ) -> Subscription:
        """Deliver every message matching ``subject`` to ``handler``.

        Raises:
            ValueError: The subject or queue name is malformed.
            BusClosedError: The bus is draining or closed.
        """
        ...

    async def request(
        self, subject: str, data: bytes, *, timeout: float, headers: Headers | None = None
    ) -> Message:
        """Publish with a fresh reply subject and return the first answer.

        Raises:
            NoRespondersError: Nobody subscribes to ``subject``.
            MeshTimeoutError: No answer within ``timeout`` seconds.
            PayloadTooLargeError, BusClosedError, ValueError: As for `publish`.
        """
        ...

    async def flush(self, *, timeout: float = 10.0) -> None:
        """Wait until everything published so far has left this process."""
        ...

    async def drain(self) -> None:
        """Stop every subscription, let handlers finish pending messages, then close."""
        ...

    async def close(self) -> None:
        """Close at once; pending messages are dropped. Idempotent."""
        ...
