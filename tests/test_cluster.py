"""The mesh on a 3-server NATS cluster (``config/nats/cluster.conf``, as the compose cluster
runs it) with one server killed (SIGKILL) mid-run: core calls go on being answered, and
durable tasks, on streams and a results bucket of 3 replicas, each complete once.

NATS only by nature: a cluster is a property of NATS servers; the in-memory bus has none.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from mesh.config import load_config
from mesh.envelope import Reply
from mesh.errors import ErrorCode
from mesh.runtime import RESULTS_BUCKET, Runtime
from mesh.subjects import task_subject
from tests.cluster import NatsCluster
from tests.nodes import Node, run_node

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

# ack_wait (also the lease of a task's ledger entry) outlasts the election of a stream's new
# leader (nats-server's Raft waits 4 to 9 s for a dead leader), so a task held by a node
# through the election is not given to another node. A reply lost with the server is read
# from the results bucket after it, which is most of the durable test's time.
CONFIG = """
defaults:
  max_concurrency: 16
  retry: {{attempts: 100, initial_backoff: 0.05, max_backoff: 0.2}}
  durable: {{replicas: 3, ack_wait: 15}}
agents:
  echo:
    kind: echo
  ledger:
    kind: "tests.durable_agents:LedgerAgent"
    delivery: durable
    directory: "{directory}"
    delay: 0.1
"""
CALL_TIMEOUT = 4.0  # seconds: how long a core call whose try was lost waits for its reply
WORKERS = 4  # calls each caller keeps in flight
CALLER = "cluster-caller"  # the connection name of the caller that does not retry lost tries
PATIENT = "cluster-patient"  # ... and of the one that does (echo declared idempotent)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    cluster = NatsCluster(tmp_path / "cluster")
    cluster.start()
    yield cluster
    cluster.stop()


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "effects").mkdir()
    path = tmp_path / "mesh.yaml"
    path.write_text(CONFIG.format(directory=tmp_path), encoding="utf-8")
    return path


def caller(cluster: NatsCluster, config: Path, name: str, **overrides: Any) -> Runtime:
    """A runtime hosting nothing, connected to every server of ``cluster``, named ``name``."""
    loaded = load_config(config, overrides={"bus": {"url": cluster.url}, **overrides}, environ={})
    return Runtime.from_config(loaded, agents=[], name=name)


async def start_node(stack: AsyncExitStack, agent: str, cluster: NatsCluster, config: Path) -> Node:
    node = run_node(agent, nats_url=cluster.url, log_dir=config.parent, config=config)
    return await stack.enter_async_context(node)


@dataclass(frozen=True)
class Call:
    """A finished core call: its input, the phase it started in, and its reply."""

    number: int
    phase: str
    reply: Reply


class Calls:
    """Calls made continuously by one caller, each labelled with the phase it started in."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.phase = "before"
        """``before`` the kill, ``failover`` (from the kill until every client of the mesh is
        on a live server), ``after``."""
        self.done: list[Call] = []
        self._finished = anyio.Event()

    async def keep_calling(self, first: int, stop: anyio.Event) -> None:
        """Call ``echo`` with ``first``, ``first + WORKERS``, ... one after the other until
        ``stop``."""
        number = first
        while not stop.is_set():
            phase = self.phase
            reply = await self.runtime.request("echo", number, timeout=CALL_TIMEOUT)
            self.done.append(Call(number, phase, reply))
            self._finished.set()
            number += WORKERS

    async def wait_for(self, phase: str, count: int) -> None:
        """Return once ``count`` calls started in ``phase`` have finished."""
        while sum(call.phase == phase for call in self.done) < count:
            self._finished = anyio.Event()
            await self._finished.wait()

    def outcomes(self, phase: str) -> list[tuple[str, bool]]:
        """``("ok", True)`` per answered call of ``phase``, else its error code and
        whether it is retryable."""
        return [
            ("ok", True)
            if call.reply.error is None
            else (call.reply.error.code, call.reply.error.retryable)
            for call in self.done
            if call.phase == phase
        ]


async def test_core_calls_are_answered_through_the_loss_of_the_nodes_server(
    cluster: NatsCluster, config: Path
) -> None:
    async with AsyncExitStack() as stack:
        await start_node(stack, "echo", cluster, config)
        strict = await stack.enter_async_context(caller(cluster, config, CALLER))
        patient_settings = {
            "agents": {
                "echo": {
                    "idempotent": True,
                    "retry": {"attempts": 100, "max_backoff": 0.2, "attempt_timeout": 0.5},
                }
            }
        }
        patient = await stack.enter_async_context(
            caller(cluster, config, PATIENT, **patient_settings)
        )
        victim = await anyio.to_thread.run_sync(
            lambda: cluster.server_of(subscription=task_subject("echo"))
        )
        both = [Calls(strict), Calls(patient)]
        stop = anyio.Event()
        with anyio.fail_after(40):
            async with anyio.create_task_group() as group:
                for calls in both:
                    for first in range(WORKERS):
                        group.start_soon(calls.keep_calling, first, stop)
                for calls in both:
                    await calls.wait_for("before", 40)
                for calls in both:
                    calls.phase = "failover"
                await anyio.to_thread.run_sync(cluster.kill, victim)
                # The mesh has failed over once the node serves from a live server and both
                # callers are connected to one (the server each is on is not ours to choose).
                where = functools.partial(cluster.server_of, subscription=task_subject("echo"))
                await anyio.to_thread.run_sync(where)
                for name in (CALLER, PATIENT):
                    await anyio.to_thread.run_sync(functools.partial(cluster.server_of, name=name))
                for calls in both:
                    calls.phase = "after"
                for calls in both:
                    await calls.wait_for("after", 60)
                stop.set()
            after_kill = await strict.request("echo", "still here", timeout=CALL_TIMEOUT)

    strict_calls, patient_calls = both
    # Before the kill and once the clients are on live servers, every call is answered:
    # a try that reached no node (the node resubscribing elsewhere, its interest not yet
    # routed) is retried on `no_responders` by any caller.
    for calls in both:
        assert set(calls.outcomes("before")) == {("ok", True)}
        assert set(calls.outcomes("after")) == {("ok", True)}
    # A call in flight when its node's server died may have lost its request or its reply.
    # A caller that may not run the task twice waits for it until its deadline: such a call
    # fails, with a retryable error (timeout; or no_responders, if the failover outlasted it).
    assert set(strict_calls.outcomes("failover")) <= {
        ("ok", True),
        (ErrorCode.TIMEOUT.value, True),
        (ErrorCode.NO_RESPONDERS.value, True),
    }
    # For an idempotent agent a lost try is tried again after attempt_timeout: every call
    # of the patient caller is answered, those caught by the kill included.
    assert set(patient_calls.outcomes("failover")) <= {("ok", True)}
    # Every answer is its own call's (the echo of its number), and the mesh keeps serving.
    for calls in both:
        answered = [call for call in calls.done if call.reply.error is None]
        assert [call.reply.output for call in answered] == [call.number for call in answered]
    assert (after_kill.error, after_kill.output) == (None, "still here")


def runs_by_key(directory: Path) -> dict[str, int]:
    """How many times the agent ran each key (``runs.log`` has a line per run)."""
    runs: dict[str, int] = {}
    for line in (directory / "runs.log").read_text().splitlines():
        key = line.split()[0]
        runs[key] = runs.get(key, 0) + 1
    return runs


async def test_durable_tasks_complete_once_through_the_loss_of_the_task_streams_leader(
    cluster: NatsCluster, config: Path, tmp_path: Path
) -> None:
    before = [f"b{n}" for n in range(200)]
    after = [f"a{n}" for n in range(100)]
    task_ids: dict[str, str] = {}
    replies: dict[str, Reply] = {}

    async def submit(key: str) -> None:
        task_ids[key] = await client.submit("ledger", key, idempotency_key=key, timeout=45)

    async def call(key: str) -> None:
        replies[key] = await client.request("ledger", key, idempotency_key=key, timeout=45)

    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(caller(cluster, config, CALLER))
        for _ in range(2):
            await start_node(stack, "ledger", cluster, config)
        with anyio.fail_after(50):
            # Stored in the stream before the kill; the nodes are working through them
            # (about a second of work) when the server leading the stream dies.
            async with anyio.create_task_group() as group:
                for key in before:
                    group.start_soon(submit, key)
            assert await client.result(task_ids[before[0]], wait=10) is not None
            leader = await anyio.to_thread.run_sync(cluster.stream_leader, "MESH_TASKS")
            await anyio.to_thread.run_sync(cluster.kill, leader)
            # Sent during the election of the stream's new leader: published again (same
            # message id) until the stream takes them, then each caller waits for its reply.
            async with anyio.create_task_group() as group:
                for key in after:
                    group.start_soon(call, key)
            results = [await client.result(task_ids[key], wait=30) for key in before]
            replicas = [
                await anyio.to_thread.run_sync(cluster.stream_replicas, stream)
                for stream in ("MESH_TASKS", "MESH_DEAD", f"KV_{RESULTS_BUCKET}")
            ]

    assert replicas == [3, 3, 3]
    # Every task has its one answer, its own and a success: nothing was lost with the server.
    assert [(r.error, r.output["key"]) if r else None for r in results] == [
        (None, key) for key in before
    ]
    assert {key: (reply.error, reply.output["key"]) for key, reply in replies.items()} == {
        key: (None, key) for key in after
    }
    # Each task ran once and applied its side effect once: none was delivered to a second
    # node while the first still held it, across the election (ack_wait outlasts it).
    assert runs_by_key(tmp_path) == dict.fromkeys(before + after, 1)
    assert sorted(os.listdir(tmp_path / "effects")) == sorted(before + after)
