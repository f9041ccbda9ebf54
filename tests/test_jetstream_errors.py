"""JetStream refusing a stream, on real servers: the refusal is the mesh's `NoRespondersError`
(retryable when waiting may help, not when the settings can never work), a durable caller gets
it as an error reply, and a node's durable worker warns and tries again instead of crashing.

NATS only by nature: the in-memory bus has no JetStream (durable delivery is refused there,
``test_durable.py``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import nats
import pytest
from nats.aio.client import Client

from agents.echo import EchoAgent
from mesh.bus.jetstream import JetStream, PullConsumer, PulledMessage, StreamSpec
from mesh.delivery import AgentDelivery, Delivery, DurableSettings
from mesh.envelope import ErrorInfo
from mesh.errors import NoRespondersError
from mesh.runtime import DistributedRuntime
from tests.cluster import NatsCluster
from tests.durable_agents import CountingAgent
from tests.jetstream_server import RestartableServer

pytestmark = pytest.mark.anyio

DURABLE = AgentDelivery(delivery=Delivery.DURABLE)
THREE = StreamSpec("THREE", ("three.>",), work_queue=True, max_age=600, replicas=3)
NOT_CLUSTERED = (
    "stream MESH_TASKS (replicas: 3): replicas > 1 not supported in non-clustered mode "
    "(JetStream error 10074)"
)


class Logged(logging.Handler):
    """Keeps the records of one logger; lets a test wait for the n-th one at some level."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self._changed = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)  # emitted in the event loop's thread: an event may be set
        self._changed.set()

    def at(self, level: int) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno == level]

    async def wait_for(self, level: int, count: int = 1) -> None:
        while len(self.at(level)) < count:
            self._changed = anyio.Event()
            await self._changed.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RestartableServer]:
    """A single JetStream server of the test's own (not clustered)."""
    server = RestartableServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def client(server: RestartableServer) -> AsyncIterator[Client]:
    connection = await nats.connect(server.url)
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def logged() -> Iterator[Logged]:
    handler = Logged()
    logger = logging.getLogger("mesh.bus.jetstream")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


async def test_replicas_on_a_server_not_clustered_are_refused_for_good(client: Client) -> None:
    with anyio.fail_after(10), pytest.raises(NoRespondersError) as caught:
        await JetStream(client).ensure_stream(THREE)
    error = caught.value
    assert (error.message, error.retryable, error.details) == (
        "stream THREE (replicas: 3): replicas > 1 not supported in non-clustered mode "
        "(JetStream error 10074)",
        False,
        {"status": 500, "err_code": 10074},
    )


@pytest.mark.slow
async def test_fewer_servers_than_replicas_is_worth_waiting_for(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "cluster", names=("nats-1", "nats-2"))
    await anyio.to_thread.run_sync(cluster.start)
    try:
        connection = await nats.connect(servers=cluster.urls)
        try:
            with anyio.fail_after(10), pytest.raises(NoRespondersError) as caught:
                await JetStream(connection).ensure_stream(THREE)
        finally:
            await connection.close()
    finally:
        await anyio.to_thread.run_sync(cluster.stop)
    error = caught.value
    assert (error.message, error.retryable, error.details) == (
        "stream THREE (replicas: 3): no suitable peers for placement (JetStream error 10005)",
        True,
        {"status": 400, "err_code": 10005},
    )


async def test_a_durable_call_whose_stream_is_refused_gets_an_error_reply(
    server: RestartableServer,
) -> None:
    runtime = DistributedRuntime(server.url, durable=DurableSettings(replicas=3))
    runtime.register(CountingAgent(), delivery=DURABLE)
    async with runtime:
        with anyio.fail_after(10):
            reply = await runtime.request("counting", "hello", timeout=1)
    assert reply.output is None
    # Refused for good: the caller is told at once, not at its deadline.
    assert reply.error == ErrorInfo(
        code="no_responders",
        message=NOT_CLUSTERED,
        retryable=False,
        details={"status": 500, "err_code": 10074},
    )


async def test_a_node_whose_stream_is_refused_warns_and_serves_its_other_agents(
    server: RestartableServer, logged: Logged
) -> None:
    runtime = DistributedRuntime(server.url, durable=DurableSettings(replicas=3))
    runtime.register(CountingAgent(), delivery=DURABLE)
    runtime.register(EchoAgent())
    async with runtime:
        with anyio.fail_after(10):
            await logged.wait_for(logging.INFO)  # the second try: the worker lives on
            reply = await runtime.request("echo", "still here")
    assert reply.output == "still here"
    assert logged.at(logging.WARNING) == [
        f"durable consumer mesh-counting on MESH_TASKS not ready, trying again in 0.1s: "
        f"{NOT_CLUSTERED}"
    ]
    assert logged.at(logging.INFO)[0] == (
        f"durable consumer mesh-counting on MESH_TASKS not ready, trying again in 0.2s: "
        f"{NOT_CLUSTERED}"
    )


async def test_the_pull_consumer_tries_again_after_a_refusal_and_then_pulls(
    client: Client, logged: Logged
) -> None:
    jetstream = JetStream(client)
    spec = StreamSpec("ONE", ("one.>",), work_queue=True, max_age=600)
    tries = 0

    async def prepare() -> None:
        nonlocal tries
        tries += 1
        if tries <= 2:
            raise NoRespondersError("refused", retryable=False)
        await jetstream.ensure_stream(spec)
        await jetstream.ensure_consumer(
            "ONE", "puller", filter_subject="one.>", ack_wait=5, max_deliver=-1
        )

    pulled: list[bytes] = []
    arrived = anyio.Event()

    async def handle(message: PulledMessage) -> None:
        pulled.append(message.data)
        await message.ack()
        consumer.release()
        arrived.set()

    consumer = PullConsumer(client, "ONE", "puller", handle, capacity=4, prepare=prepare)
    async with anyio.create_task_group() as group:
        group.start_soon(consumer.run)
        with anyio.fail_after(10):
            await logged.wait_for(logging.INFO, 2)  # ready, after two refusals
            await jetstream.publish("one.x", b"after the refusals", msg_id="m-1")
            await arrived.wait()
        consumer.stop()
    assert (tries, pulled) == (3, [b"after the refusals"])
    assert [r.getMessage() for r in logged.records if r.levelno >= logging.INFO] == [
        "durable consumer puller on ONE not ready, trying again in 0.1s: refused",
        "durable consumer puller on ONE not ready, trying again in 0.2s: refused",
        "durable consumer puller on ONE ready",
    ]


async def test_stop_ends_the_wait_between_tries(client: Client) -> None:
    failed = anyio.Event()
    tries = 0

    async def prepare() -> None:
        nonlocal tries
        tries += 1
        if tries == 6:  # waits 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s to get here; 3.2 s next
            failed.set()
        raise NoRespondersError("refused", retryable=False)

    async def handle(message: PulledMessage) -> None:
        raise AssertionError("nothing to pull")

    consumer = PullConsumer(client, "NONE", "none", handle, capacity=1, prepare=prepare)
    stopped = anyio.Event()

    async def run() -> None:
        await consumer.run()
        stopped.set()

    async with anyio.create_task_group() as group:
        group.start_soon(run)
        with anyio.fail_after(10):
            await failed.wait()
        consumer.stop()
        with anyio.fail_after(1):  # not the 3.2 s of the next wait
            await stopped.wait()
    assert tries == 6
