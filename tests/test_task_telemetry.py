"""Every task a host answers is recorded: on ``mesh.telemetry.task`` and to the runtime's
task listeners (a node's own metrics)."""

from __future__ import annotations

import anyio
import msgpack
import pytest

from agents.echo import EchoAgent
from agents.upper import UpperAgent
from mesh.bus import Message
from mesh.runtime import Runtime
from mesh.subjects import TELEMETRY_TASK
from mesh.telemetry import TaskRecord

pytestmark = pytest.mark.anyio


async def test_each_answered_task_is_published_and_given_to_the_listeners(runtime: Runtime) -> None:
    runtime.register(EchoAgent(name="echo"))
    runtime.register(UpperAgent(name="shout"))
    heard: list[TaskRecord] = []
    runtime.task_listeners.append(heard.append)
    published: list[TaskRecord] = []
    arrived = anyio.Event()

    async def collect(message: Message) -> None:
        published.append(TaskRecord.model_validate(msgpack.unpackb(message.data)))
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
