"""Every task a host answers is recorded: to the runtime's task listeners (a node's own
metrics) at once, and on ``mesh.telemetry.task`` in batches (`TaskRecords`)."""

from __future__ import annotations

from typing import Any

import anyio
import msgpack
import pytest

from agents.echo import EchoAgent
from agents.upper import UpperAgent
from mesh.bus import Message, NatsBus
from mesh.runtime import DistributedRuntime, Runtime
from mesh.subjects import TELEMETRY_TASK
from mesh.telemetry import TaskRecord, TaskRecordBatcher, TaskRecords

pytestmark = pytest.mark.anyio


def record(task_id: str) -> dict[str, Any]:
    return TaskRecord(agent="a", instance="i", task_id=task_id, duration_ms=1.0).model_dump()


def ids(batch: bytes) -> list[str]:
    return [r.task_id for r in TaskRecords.model_validate(msgpack.unpackb(batch)).records]


async def test_each_answered_task_is_published_and_given_to_the_listeners(runtime: Runtime) -> None:
    runtime.register(EchoAgent(name="echo"))
    runtime.register(UpperAgent(name="shout"))
    heard: list[TaskRecord] = []
    runtime.task_listeners.append(heard.append)
    published: list[TaskRecord] = []
    arrived = anyio.Event()

    async def collect(message: Message) -> None:
        body = msgpack.unpackb(message.data)
        # Hosts write the records without the model: every field, and only those.
        assert all(set(fields) == set(TaskRecord.model_fields) for fields in body["records"])
        published.extend(TaskRecords.model_validate(body).records)
        if len(published) == 2:
            arrived.set()

    async with runtime:
        await runtime.bus.subscribe(TELEMETRY_TASK, collect)
        with anyio.fail_after(10):
            ok = await runtime.request("echo", "hi")
            failed = await runtime.request("shout", {"not": "text"})
            await arrived.wait()
    assert failed.error is not None
    assert published == heard
    assert [(r.agent, r.instance, r.task_id, r.correlation_id, r.outcome) for r in published] == [
        ("echo", runtime.instance, ok.id, ok.correlation_id, "ok"),
        ("shout", runtime.instance, failed.id, failed.correlation_id, failed.error.code),
    ]
    assert all(r.duration_ms > 0 and r.queue_ms >= 0 for r in published)


async def test_records_wait_for_the_interval_then_go_as_one_batch() -> None:
    batches: list[list[str]] = []
    sent = anyio.Event()

    async def publish(batch: bytes) -> None:
        batches.append(ids(batch))
        sent.set()

    batcher = TaskRecordBatcher(publish, interval=0.05)
    for n in range(3):
        batcher.add(record(str(n)))
    assert batches == []
    with anyio.fail_after(5):
        await sent.wait()
    assert batches == [["0", "1", "2"]]


async def test_a_full_batch_goes_at_once_and_flush_sends_the_rest() -> None:
    batches: list[list[str]] = []

    async def publish(batch: bytes) -> None:
        batches.append(ids(batch))

    batcher = TaskRecordBatcher(publish, interval=3600, max_records=2)
    for n in range(5):
        batcher.add(record(str(n)))
    with anyio.fail_after(5):
        await batcher.flush()
    assert batches == [["0", "1"], ["2", "3"], ["4"]]
    await batcher.flush()  # nothing waiting: nothing sent
    assert len(batches) == 3


async def test_a_failed_publish_loses_that_batch_only() -> None:
    batches: list[list[str]] = []

    async def publish(batch: bytes) -> None:
        if ids(batch) == ["0"]:
            raise ConnectionError("gone")
        batches.append(ids(batch))

    batcher = TaskRecordBatcher(publish, interval=3600, max_records=1)
    batcher.add(record("0"))
    batcher.add(record("1"))
    with anyio.fail_after(5):
        await batcher.flush()
    assert batches == [["1"]]


async def test_stopping_publishes_the_records_still_waiting(nats_url: str) -> None:
    published: list[TaskRecord] = []
    arrived = anyio.Event()

    async def collect(message: Message) -> None:
        published.extend(TaskRecords.model_validate(msgpack.unpackb(message.data)).records)
        arrived.set()

    async with await NatsBus.connect(nats_url) as observer:
        await observer.subscribe(TELEMETRY_TASK, collect)
        await observer.flush()
        runtime = DistributedRuntime(nats_url)
        runtime.register(EchoAgent(name="echo"))
        with anyio.fail_after(10):
            async with runtime:
                reply = await runtime.request("echo", "hi")
            # The batch's interval has not passed: the record went out while stopping.
            await arrived.wait()
    assert [r.task_id for r in published] == [reply.id]
