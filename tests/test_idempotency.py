"""Idempotency keys: a task finished once is answered again from its stored reply, never run
twice; on the in-memory bus and on NATS (a JetStream KV bucket)."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable

import anyio
import pytest

from mesh.envelope import ErrorInfo, Reply
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from mesh.telemetry import TaskRecord
from tests.durable_agents import CountingAgent, FlakyAgent, FlakyConfig
from tests.support import FailAgent

pytestmark = pytest.mark.anyio

MakeRuntime = Callable[..., Runtime]


@pytest.fixture(params=["memory", "nats"])
def make_runtime(request: pytest.FixtureRequest) -> MakeRuntime:
    if request.param == "memory":
        return lambda **options: LocalRuntime(**options)
    url: str = request.getfixturevalue("nats_url")
    return lambda **options: DistributedRuntime(url, **options)


@pytest.fixture
def counting() -> CountingAgent:
    return CountingAgent()


@pytest.fixture
async def runtime(make_runtime: MakeRuntime, counting: CountingAgent) -> AsyncIterator[Runtime]:
    runtime = make_runtime()
    runtime.register(counting)
    runtime.register(FlakyAgent(config=FlakyConfig(failures=1)))
    runtime.register(FailAgent())
    async with runtime:
        yield runtime


@pytest.fixture
def key() -> str:
    return f"order-{secrets.token_hex(6)}"  # the NATS bucket outlives the test


async def test_a_retried_task_is_answered_from_the_stored_reply(
    runtime: Runtime, counting: CountingAgent, key: str
) -> None:
    with anyio.fail_after(5):
        first = await runtime.request("counting", "pay 10", idempotency_key=key)
        second = await runtime.request("counting", "pay 10", idempotency_key=key)
    assert counting.runs == 1
    assert second == Reply(
        id=second.id,
        output={"input": "pay 10", "run": 1, "key": key},
        usage=first.usage,
        meta={**first.meta, "replayed": True},
    )
    assert second.id != first.id


async def test_the_agent_sees_the_key(runtime: Runtime, key: str) -> None:
    with anyio.fail_after(5):
        output = await runtime.call("counting", "x", idempotency_key=key)
    assert output["key"] == key


async def test_a_duplicate_sent_while_the_first_runs_gets_the_same_answer(
    runtime: Runtime, counting: CountingAgent, key: str
) -> None:
    replies: list[Reply] = []

    async def send() -> None:
        replies.append(await runtime.request("counting", "once", idempotency_key=key))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            for _ in range(5):
                group.start_soon(send)
    assert counting.runs == 1
    assert {str(reply.output) for reply in replies} == {
        str({"input": "once", "run": 1, "key": key})
    }
    assert sum(1 for reply in replies if reply.meta.get("replayed")) == 4


async def test_a_key_reused_for_another_input_is_a_conflict(
    runtime: Runtime, counting: CountingAgent, key: str
) -> None:
    with anyio.fail_after(5):
        await runtime.request("counting", "pay 10", idempotency_key=key)
        reply = await runtime.request("counting", "pay 99", idempotency_key=key)
    assert reply.error == ErrorInfo(
        code="idempotency_conflict",
        message="this idempotency key was used for a task with another input",
    )
    assert counting.runs == 1


async def test_keys_belong_to_one_agent(
    runtime: Runtime, counting: CountingAgent, key: str
) -> None:
    with anyio.fail_after(5):
        await runtime.request("counting", "x", idempotency_key=key)
        echoed = await runtime.request("flaky", "x", idempotency_key=key)
    assert echoed.error is not None
    assert echoed.error.code == "rate_limited"


async def test_a_retryable_failure_is_not_kept_so_a_retry_runs_again(
    runtime: Runtime, key: str
) -> None:
    with anyio.fail_after(5):
        failed = await runtime.request("flaky", "x", idempotency_key=key)
        retried = await runtime.request("flaky", "x", idempotency_key=key)
    assert failed.error is not None
    assert failed.error.code == "rate_limited"
    assert (retried.output, retried.meta.get("replayed")) == ("ok after 2 runs", None)


async def test_a_final_failure_is_kept_and_answered_again(runtime: Runtime, key: str) -> None:
    with anyio.fail_after(5):
        first = await runtime.request("fail", "x", idempotency_key=key)
        second = await runtime.request("fail", "x", idempotency_key=key)
    assert (
        first.error
        == second.error
        == ErrorInfo(code="agent_error", message="RuntimeError: boom on 'x'")
    )
    assert second.meta["replayed"] is True


async def test_a_replay_is_marked_in_the_task_record(make_runtime: MakeRuntime, key: str) -> None:
    records: list[TaskRecord] = []
    runtime = make_runtime()
    runtime.register(CountingAgent())
    runtime.task_listeners.append(records.append)
    async with runtime:
        with anyio.fail_after(5):
            await runtime.request("counting", "x", idempotency_key=key)
            await runtime.request("counting", "x", idempotency_key=key)
    assert [(record.replayed, record.delivery) for record in records] == [
        (False, None),
        (True, None),
    ]


async def test_without_a_key_every_task_runs(runtime: Runtime, counting: CountingAgent) -> None:
    with anyio.fail_after(5):
        await runtime.request("counting", "x")
        await runtime.request("counting", "x")
    assert counting.runs == 2
