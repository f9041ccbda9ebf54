"""Deadlines and cancellation across node processes on a real NATS server: a three-level
nested call, each level in its own ``python -m mesh.node``."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import anyio
import nats
import pytest

from mesh.envelope import Event
from mesh.errors import DeadlineExceededError
from mesh.runtime import DistributedRuntime
from tests.nodes import run_node

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CONFIG = """
agents:
  top: {kind: "tests.fault_agents:ForwardAgent", to: middle}
  middle: {kind: "tests.fault_agents:ForwardAgent", to: inner}
  inner: {kind: "tests.fault_agents:WaitAgent"}
"""


class Events:
    """The ``mesh.events.inner.*`` events, by kind."""

    def __init__(self) -> None:
        self.kinds: list[str] = []
        self._changed = anyio.Event()

    async def __call__(self, event: Event) -> None:
        self.kinds.append(event.kind)
        self._changed.set()

    async def wait_for(self, kind: str) -> None:
        while kind not in self.kinds:
            self._changed = anyio.Event()
            await self._changed.wait()


@asynccontextmanager
async def three_levels(nats_url: str, tmp_path: Path) -> AsyncIterator[DistributedRuntime]:
    config = tmp_path / "mesh.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    async with AsyncExitStack() as stack:
        async with anyio.create_task_group() as group:
            for agent in ("top", "middle", "inner"):
                node = run_node(agent, nats_url=nats_url, log_dir=tmp_path, config=config)
                group.start_soon(stack.enter_async_context, node)
        yield await stack.enter_async_context(DistributedRuntime(nats_url))


async def test_a_deadline_ends_a_nested_call_at_the_top_and_cancels_the_innermost(
    nats_url: str, tmp_path: Path
) -> None:
    async with three_levels(nats_url, tmp_path) as client:
        events = Events()
        await client.subscribe("mesh.events.inner.*", events)
        started = time.perf_counter()
        with anyio.fail_after(10), pytest.raises(DeadlineExceededError):
            await client.call("top", "x", timeout=0.3)
        elapsed = time.perf_counter() - started
        with anyio.fail_after(10):
            await events.wait_for("cancelled")
    assert events.kinds == ["started", "cancelled"]
    assert 0.3 <= elapsed < 2.0  # the deadline, not the 30 s the innermost would wait


async def test_a_cancel_from_a_raw_nats_client_stops_the_tree_below(
    nats_url: str, tmp_path: Path
) -> None:
    async with three_levels(nats_url, tmp_path) as client:
        events = Events()
        await client.subscribe("mesh.events.inner.*", events)
        raw = await nats.connect(nats_url)
        try:
            task = {"id": "raw-cancel-1", "input": "x"}
            headers = {"Content-Type": "application/json"}
            with anyio.fail_after(10):
                async with anyio.create_task_group() as group:
                    replies: list[dict[str, object]] = []

                    async def ask() -> None:
                        message = await raw.request(
                            "mesh.agent.top.run",
                            json.dumps(task).encode(),
                            timeout=8,
                            headers=headers,
                        )
                        replies.append(json.loads(message.data))

                    group.start_soon(ask)
                    await events.wait_for("started")
                    await raw.publish("mesh.cancel.raw-cancel-1", b"")
                await events.wait_for("cancelled")
        finally:
            await raw.close()
    (reply,) = replies
    assert reply["error"] == {
        "code": "cancelled",
        "message": "the caller cancelled the task",
        "retryable": False,
        "details": None,
    }
