"""Message buses: one `Bus` protocol, a NATS implementation and an in-memory one."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

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
    "BusClosedError",
    "Handler",
    "Headers",
    "InMemoryBus",
    "Message",
    "NatsBus",
    "Subscription",
    "open_bus",
]


@asynccontextmanager
async def open_bus(url: str | None = None, *, name: str | None = None) -> AsyncIterator[Bus]:
    """Open the bus the configuration asks for: NATS at ``url``, or in memory when it is ``None``.

    Raises:
        ConnectionError: NATS at ``url`` cannot be reached.
    """
    if url is None:
        async with InMemoryBus() as memory:
            yield memory
    else:
        async with await NatsBus.connect(url, name=name) as connected:
            yield connected
