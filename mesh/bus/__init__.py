"""Message buses: one `Bus` protocol, a NATS implementation and an in-memory one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mesh.bus.auth import BusAuthError, NatsAuth, NatsTls
from mesh.bus.base import (
    DEFAULT_MAX_PAYLOAD,
    Bus,
    BusClosedError,
    Handler,
    Headers,
    Message,
    Subscription,
)
from mesh.bus.memory import InMemoryBus
from mesh.bus.nats import NatsBus

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "Bus",
    "BusAuthError",
    "BusClosedError",
    "Handler",
    "Headers",
    "InMemoryBus",
    "Message",
    "NatsAuth",
    "NatsBus",
    "NatsTls",
    "Subscription",
    "open_bus",
]


@asynccontextmanager
async def open_bus(
    url: str | None = None, *, name: str | None = None, auth: NatsAuth | None = None
) -> AsyncIterator[Bus]:
    """Open the bus the configuration asks for: NATS at ``url``, or in memory when it is ``None``.

    Args:
        url: NATS server URL(s), comma separated; ``None`` for the in-memory bus.
        name: Connection name the server shows.
        auth: Credentials and TLS for NATS (ignored in memory).

    Raises:
        BusAuthError: NATS refused the credentials or the TLS handshake failed.
        ConnectionError: NATS at ``url`` cannot be reached.
    """
    if url is None:
        async with InMemoryBus() as memory:
            yield memory
    else:
        async with await NatsBus.connect(url, name=name, auth=auth) as connected:
            yield connected
