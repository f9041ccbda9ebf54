"""Shared fixtures: a real nats-server per test session, and both buses for contract tests."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from mesh.bus import Bus, open_bus
from mesh.llm.registry import OFFLINE_VARIABLE
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from mesh.server import NatsServerProcess

# `make fuzz`: the hostile-input properties at length (`--hypothesis-profile=fuzz`).
settings.register_profile(
    "fuzz", max_examples=20_000, deadline=None, suppress_health_check=list(HealthCheck)
)


def pytest_configure(config: pytest.Config) -> None:
    # Real model providers are off in tests (node subprocesses inherit it): a test that forgot
    # its scripted model fails loudly instead of calling out. Live tests build models directly.
    os.environ[OFFLINE_VARIABLE] = "1"


@pytest.fixture(scope="session")
def anyio_backend() -> tuple[str, dict[str, Any]]:
    # Debug mode: a never-awaited coroutine or a slow callback shows up, and warnings are errors.
    return ("asyncio", {"debug": True})


@pytest.fixture(autouse=True)
def _asyncio_errors_fail_the_test(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """A task exception never retrieved, or a callback that raised, fails the test that made it.

    asyncio reports these only through its logger, so warnings-as-errors alone misses them.
    """
    caplog.set_level(logging.ERROR, logger="asyncio")
    yield
    if request.node.get_closest_marker("anyio") is not None:
        gc.collect()  # "never retrieved" is reported when the task is collected
    errors = [r.getMessage() for r in caplog.get_records("call") if r.name == "asyncio"]
    errors += [r.getMessage() for r in caplog.get_records("teardown") if r.name == "asyncio"]
    if errors:
        pytest.fail("asyncio reported errors:\n" + "\n".join(errors), pytrace=False)


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServerProcess]:
    """One nats-server (with JetStream) shared by the session's tests."""
    with NatsServerProcess(jetstream=True) as server:
        yield server


@pytest.fixture
def nats_url(nats_server: NatsServerProcess) -> str:
    return nats_server.url


@pytest.fixture(params=["memory", "nats"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    """A runtime (not started) on the in-memory bus and on a real NATS server: agent code
    registered on it runs unchanged on both. Modules needing other options define their own."""
    if request.param == "memory":
        return LocalRuntime()
    return DistributedRuntime(request.getfixturevalue("nats_url"))


@pytest.fixture(params=["memory", "nats"])
async def bus(request: pytest.FixtureRequest) -> AsyncIterator[Bus]:
    """The same test against the in-memory bus and against a real NATS server."""
    url = request.getfixturevalue("nats_url") if request.param == "nats" else None
    async with open_bus(url) as opened:
        yield opened
