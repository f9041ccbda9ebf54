"""Durable delivery on a real JetStream: replies, stored results, deduplicated publishes,
dead letters, and the in-memory bus refusing it. (Node processes killed and restarted, and a
server restart, are in ``test_durable_faults.py``.)"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import msgpack
import nats
import pytest

from mesh.bus import Message
from mesh.codec import decode, encode
from mesh.config import ConfigError, load_config
from mesh.delivery import AgentDelivery, Delivery, DurableSettings, RetryPolicy
from mesh.durable import DeadLetter
from mesh.envelope import ErrorInfo
from mesh.ledger import Attempt, LedgerEntry, fingerprint
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from tests.durable_agents import CountingAgent, FlakyAgent, LongAgent
from tests.jetstream_server import RestartableServer

pytestmark = pytest.mark.anyio

DURABLE = AgentDelivery(delivery=Delivery.DURABLE)
QUICK = RetryPolicy(initial_backoff=0.01, max_backoff=0.02)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RestartableServer]:
    """A JetStream server of the test's own: streams and consumers start empty."""
    server = RestartableServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def counting() -> CountingAgent:
    return CountingAgent()


@pytest.fixture
async def runtime(server: RestartableServer, counting: CountingAgent) -> AsyncIterator[Runtime]:
    runtime = DistributedRuntime(server.url, durable=DurableSettings(ack_wait=2, max_deliver=3))
    runtime.register(counting, delivery=DURABLE)
    runtime.register(FlakyAgent(), delivery=AgentDelivery(delivery=Delivery.DURABLE, retry=QUICK))
    async with runtime:
        yield runtime


async def test_a_durable_call_is_answered_and_its_result_kept(runtime: Runtime) -> None:
    with anyio.fail_after(10):
        reply = await runtime.request("counting", "hello")
        stored = await runtime.result(reply.id)
    assert reply.output == {"input": "hello", "run": 1, "key": None}
    assert stored == reply


async def test_a_task_longer_than_ack_wait_stays_with_its_live_node(
    server: RestartableServer,
) -> None:
    long = LongAgent()
    runtime = DistributedRuntime(server.url, durable=DurableSettings(ack_wait=1))
    runtime.register(long, delivery=DURABLE)
    async with runtime:
        with anyio.fail_after(10):
            reply = await runtime.request("long", 2.5)  # 2.5 ack_waits
    assert (reply.output, long.runs) == ("worked 2.5s", 1)  # in-progress signals kept it


async def test_a_submitted_task_is_fetched_by_id_from_another_runtime(
    runtime: Runtime, server: RestartableServer
) -> None:
    with anyio.fail_after(10):
        task_id = await runtime.submit("counting", "later")
        async with DistributedRuntime(server.url) as other:
            reply = await other.result(task_id, wait=8)
    assert reply is not None
    assert (reply.id, reply.output) == (task_id, {"input": "later", "run": 1, "key": None})


async def test_a_task_published_twice_runs_once(
    runtime: Runtime, server: RestartableServer, counting: CountingAgent
) -> None:
    raw = await nats.connect(server.url)
    try:
        js = raw.jetstream()
        task = json.dumps({"id": "twice-1", "input": "x"}).encode()
        headers = {"Nats-Msg-Id": "twice-1", "Content-Type": "application/json"}
        with anyio.fail_after(10):
            first = await js.publish("mesh.durable.counting.run", task, headers=headers)
            second = await js.publish("mesh.durable.counting.run", task, headers=headers)
            reply = await runtime.result("twice-1", wait=8)
    finally:
        await raw.close()
    assert (first.duplicate, second.duplicate) == (None, True)
    assert reply is not None
    assert reply.output == {"input": "x", "run": 1, "key": None}
    assert counting.runs == 1


async def test_a_raw_nats_client_gets_the_reply_and_reads_the_result(
    runtime: Runtime, server: RestartableServer
) -> None:
    raw = await nats.connect(server.url)
    try:
        inbox = raw.new_inbox()
        replies = await raw.subscribe(inbox)
        js = raw.jetstream()
        task = json.dumps({"id": "raw-1", "input": "from raw"}).encode()
        headers = {
            "Nats-Msg-Id": "raw-1",
            "Mesh-Reply-To": inbox,
            "Content-Type": "application/json",
        }
        with anyio.fail_after(10):
            await js.publish("mesh.durable.counting.run", task, headers=headers)
            message = await replies.next_msg(timeout=8)
            kv = await js.key_value("mesh_results")
            entry = await kv.get("task.raw-1")
    finally:
        await raw.close()
    reply = json.loads(message.data)
    assert (reply["id"], reply["output"]) == ("raw-1", {"input": "from raw", "run": 1, "key": None})
    stored = msgpack.unpackb(entry.value)
    assert (stored["state"], stored["reply"]["output"]) == ("done", reply["output"])


async def test_a_task_failing_every_try_ends_in_the_dead_letter_subject(
    runtime: Runtime,
) -> None:
    letters: list[DeadLetter] = []
    arrived = anyio.Event()

    async def collect(message: Message) -> None:
        letters.append(decode(message.data, DeadLetter))
        arrived.set()

    await runtime.bus.subscribe("mesh.dead.flaky", collect)
    with anyio.fail_after(10):
        reply = await runtime.request("flaky", "doomed")
        await arrived.wait()
    error = ErrorInfo(
        code="rate_limited",
        message="run 3: slow down",
        retryable=False,
        details={"dead_letter": "mesh.dead.flaky", "tries": 3},
    )
    assert reply.error == error
    (letter,) = letters
    tries = [(a.delivery, a.error.message if a.error else None) for a in letter.attempts]
    assert tries == [(1, "run 1: slow down"), (2, "run 2: slow down"), (3, "run 3: slow down")]
    assert letter == DeadLetter(
        agent="flaky",
        task_id=reply.id,
        task=letter.task,
        deliveries=3,
        attempts=letter.attempts,
        error=error,
        time=letter.time,
    )
    assert letter.task.input == "doomed"
    assert all(isinstance(attempt, Attempt) for attempt in letter.attempts)
    assert await runtime.result(reply.id) == reply


async def test_a_task_whose_last_try_died_with_its_node_is_dead_lettered(
    runtime: Runtime, server: RestartableServer, counting: CountingAgent
) -> None:
    slow = ErrorInfo(code="rate_limited", message="slow down", retryable=True)
    tries = [
        Attempt(instance="node-1", delivery=1, error=slow),
        Attempt(instance="node-2", delivery=2, error=slow),
        Attempt(instance="node-3", delivery=3),  # then node-3 died
    ]
    left = LedgerEntry(
        state="running",
        fingerprint=fingerprint("x"),
        owner="node-3",
        lease_until=time.time() - 1,
        attempts=tries,
    )
    await runtime.ledger.store.put("task.lost-1", encode(left))
    letters: list[DeadLetter] = []
    arrived = anyio.Event()

    async def collect(message: Message) -> None:
        letters.append(decode(message.data, DeadLetter))
        arrived.set()

    await runtime.bus.subscribe("mesh.dead.counting", collect)
    raw = await nats.connect(server.url)
    try:
        task = json.dumps({"id": "lost-1", "input": "x"}).encode()
        with anyio.fail_after(10):
            await raw.jetstream().publish(
                "mesh.durable.counting.run", task, headers={"Nats-Msg-Id": "lost-1"}
            )
            await arrived.wait()
            reply = await runtime.result("lost-1", wait=5)
    finally:
        await raw.close()
    error = ErrorInfo(
        code="timeout",
        message="the node of try 3 stopped answering",
        retryable=False,
        details={"dead_letter": "mesh.dead.counting", "tries": 3},
    )
    (letter,) = letters
    assert (letter.attempts, letter.error) == (tries, error)
    assert reply is not None
    assert reply.error == error
    assert counting.runs == 0  # not tried a fourth time


async def test_durable_delivery_is_refused_on_the_in_memory_bus(tmp_path: Path) -> None:
    path = tmp_path / "mesh.yaml"
    path.write_text("agents:\n  echo: {kind: echo, delivery: durable}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="durable delivery needs NATS") as caught:
        Runtime.from_config(load_config(path, environ={}))
    assert [problem.field for problem in caught.value.problems] == ["agents.echo.delivery"]
    with pytest.raises(ValueError, match="durable delivery needs NATS"):
        LocalRuntime().register(CountingAgent(), delivery=DURABLE)
