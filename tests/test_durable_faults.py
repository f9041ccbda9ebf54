"""Faults across node processes on a real JetStream server: durable tasks survive a node
killed with SIGKILL and another restarted, callers retry through a node's restart, and the
whole mesh comes back after the NATS server itself restarts."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import anyio
import nats
import pytest

from mesh.config import load_config
from mesh.envelope import Reply
from mesh.errors import ErrorCode
from mesh.runtime import Runtime
from tests.jetstream_server import RestartableServer
from tests.nodes import Node, run_node
from tests.test_retry import Retries, retries  # noqa: F401 - the fixture

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

CONFIG = """
defaults:
  max_concurrency: 16
  retry: {{attempts: 200, initial_backoff: 0.05, max_backoff: 0.2}}
  durable: {{ack_wait: 2, max_deliver: 5}}
agents:
  ledger:
    kind: "tests.durable_agents:LedgerAgent"
    delivery: durable
    directory: "{directory}"
    delay: 0.05
  slow_ledger:
    kind: "tests.durable_agents:LedgerAgent"
    delivery: durable
    directory: "{directory}"
    delay: 0.2
  echo:
    kind: echo
  sleep:
    kind: "tests.support:SleepAgent"
"""


class Progress:
    """Counts finished calls; lets a test wait until some number of them finished."""

    def __init__(self) -> None:
        self.done = 0
        self._changed = anyio.Event()

    def add(self) -> None:
        self.done += 1
        self._changed.set()

    async def wait_for(self, count: int) -> None:
        while self.done < count:
            self._changed = anyio.Event()
            await self._changed.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RestartableServer]:
    server = RestartableServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "effects").mkdir()
    path = tmp_path / "mesh.yaml"
    path.write_text(CONFIG.format(directory=tmp_path), encoding="utf-8")
    return path


@pytest.fixture
async def mesh(
    server: RestartableServer, config: Path, tmp_path: Path
) -> AsyncIterator[tuple[AsyncExitStack, Runtime]]:
    """An exit stack for nodes, and a client runtime that knows the config (hosts nothing)."""
    async with AsyncExitStack() as stack:
        loaded = load_config(config, overrides={"bus": {"url": server.url}}, environ={})
        client = await stack.enter_async_context(Runtime.from_config(loaded, agents=[]))
        yield stack, client


async def start_nodes(
    stack: AsyncExitStack, agent: str, count: int, server: RestartableServer, config: Path
) -> list[Node]:
    nodes: list[Node] = []

    async def one() -> None:
        node = run_node(agent, nats_url=server.url, log_dir=config.parent, config=config)
        nodes.append(await stack.enter_async_context(node))

    async with anyio.create_task_group() as group:
        for _ in range(count):
            group.start_soon(one)
    return nodes


def runs_by_key(directory: Path) -> dict[str, list[int]]:
    """Each key's runs, as the pids of the nodes that ran it (``runs.log``)."""
    runs: dict[str, list[int]] = {}
    for line in (directory / "runs.log").read_text().splitlines():
        key, pid = line.split()
        runs.setdefault(key, []).append(int(pid))
    return runs


async def stream_messages(url: str, stream: str) -> int:
    raw = await nats.connect(url)
    try:
        info = await raw.jetstream().stream_info(stream)
    finally:
        await raw.close()
    return info.state.messages


async def test_durable_tasks_survive_a_killed_node_and_a_restarted_one(
    mesh: tuple[AsyncExitStack, Runtime],
    server: RestartableServer,
    config: Path,
    tmp_path: Path,
) -> None:
    stack, client = mesh
    nodes = await start_nodes(stack, "ledger", 3, server, config)
    keys = {f"k{n}" for n in range(2000)}
    replies: dict[str, Reply] = {}
    progress = Progress()
    limiter = anyio.CapacityLimiter(200)

    async def send(key: str) -> None:
        async with limiter:
            replies[key] = await client.request("ledger", key, idempotency_key=key, timeout=60)
        progress.add()

    with anyio.fail_after(90):
        async with anyio.create_task_group() as group:
            for key in sorted(keys):
                group.start_soon(send, key)
            await progress.wait_for(300)
            killed = nodes[0].process.pid
            nodes[0].process.kill()
            await nodes[0].wait()
            await progress.wait_for(900)
            nodes[1].terminate()
            assert await nodes[1].wait() == 0  # drained: answered what it held, then left
            await start_nodes(stack, "ledger", 1, server, config)
        stored = [await client.result(reply.id) for reply in replies.values()]

    assert {key: reply.error for key, reply in replies.items() if reply.error} == {}
    assert {key: reply.output["key"] for key, reply in replies.items()} == {k: k for k in keys}
    assert [reply.output if reply else None for reply in stored] == [
        reply.output for reply in replies.values()
    ]
    assert set(os.listdir(tmp_path / "effects")) == keys  # every side effect applied once
    runs = runs_by_key(tmp_path)
    again = {key: pids for key, pids in runs.items() if len(pids) > 1}
    # Only a task the killed node was running when it died ran again (its result was never
    # stored), and its side effect was still applied once (the agent's own key guard).
    assert all(len(pids) == 2 and pids[0] == killed for pids in again.values()), again
    assert len(again) <= 16  # the killed node's max_concurrency
    assert set(runs) == keys
    assert await stream_messages(server.url, "MESH_TASKS") == 0  # nothing left behind


async def test_calls_retry_through_a_node_restart(
    mesh: tuple[AsyncExitStack, Runtime],
    server: RestartableServer,
    config: Path,
    retries: Retries,  # noqa: F811 - the fixture
) -> None:
    stack, client = mesh
    (node,) = await start_nodes(stack, "echo", 1, server, config)
    replies: list[Reply] = []

    async def call(n: int) -> None:
        replies.append(await client.request("echo", n, timeout=20))

    with anyio.fail_after(30):
        node.terminate()
        await node.wait()
        async with anyio.create_task_group() as group:
            for n in range(20):
                group.start_soon(call, n)
            await retries.failed.wait()  # the calls found nobody and are backing off
            await start_nodes(stack, "echo", 1, server, config)
    assert sorted(reply.output for reply in replies) == list(range(20))
    assert all(reply.meta["attempts"] >= 2 for reply in replies)


async def test_the_mesh_comes_back_after_the_server_restarts(
    mesh: tuple[AsyncExitStack, Runtime],
    server: RestartableServer,
    config: Path,
    tmp_path: Path,
) -> None:
    stack, client = mesh
    await start_nodes(stack, "slow_ledger", 2, server, config)
    await start_nodes(stack, "sleep", 1, server, config)
    keys = [f"r{n}" for n in range(300)]
    task_ids: dict[str, str] = {}
    core: list[Reply] = []

    async def submit(key: str) -> None:
        task_ids[key] = await client.submit("slow_ledger", key, idempotency_key=key)

    async def slow_call() -> None:
        core.append(await client.request("sleep", 1.0, timeout=2))

    with anyio.fail_after(60):
        async with anyio.create_task_group() as group:
            for key in keys:
                group.start_soon(submit, key)
        # The nodes are working through them (about 2 s of work) when the server goes down.
        assert await client.result(task_ids[keys[0]], wait=10) is not None
        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(slow_call)
            await anyio.to_thread.run_sync(server.stop)
        # Down until the core calls gave up; then back, same port, same store.
        await anyio.to_thread.run_sync(server.start)
        results = [await client.result(task_ids[key], wait=30) for key in keys]
        after = await client.request("sleep", 0, timeout=10)
        durable_after = await client.request("slow_ledger", "after", idempotency_key="after")

    # Core calls caught by the outage ended in their time with a retryable error: none hung.
    assert [(reply.error.code, reply.error.retryable) for reply in core if reply.error] == [
        (ErrorCode.TIMEOUT.value, True)
    ] * 5
    # Every durable task completed, each side effect once; the nodes serve again.
    assert [result.output["key"] if result else None for result in results] == keys
    assert set(os.listdir(tmp_path / "effects")) == {*keys, "after"}
    assert set(runs_by_key(tmp_path)) == {*keys, "after"}
    assert after.output == 0
    assert durable_after.output["key"] == "after"
