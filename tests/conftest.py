"""Shared fixtures: a real nats-server per test session, and both buses for contract tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from mesh.bus import Bus, open_bus
from mesh.server import NatsServerProcess


@pytest.fixture(scope="session")
def anyio_backend() -> tuple[str, dict[str, Any]]:
    # Debug mode: a never-awaited coroutine or a slow callback shows up, and warnings are errors.
    return ("asyncio", {"debug": True})


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServerProcess]:
    """One nats-server (with JetStream) shared by the session's tests."""
    with NatsServerProcess(jetstream=True) as server:
        yield server


@pytest.fixture
def nats_url(nats_server: NatsServerProcess) -> str:
    return nats_server.url


@pytest.fixture(params=["memory", "nats"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """The same test against the in-memory bus and against a real NATS server."""
    url = request.getfixturevalue("nats_url") if request.param == "nats" else None
    async with open_bus(url) as opened:
        yield opened
