"""Retries on the caller's side: what is tried again, how long it waits, and where it stops.
Every behaviour on the in-memory bus and on NATS."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator

import anyio
import pytest

from agents.echo import EchoAgent
from mesh.delivery import AgentDelivery, RetryPolicy
from mesh.envelope import ErrorInfo, Reply
from mesh.errors import ErrorCode
from mesh.host import AgentHost
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from tests.durable_agents import FlakyAgent, FlakyConfig, HangFirstAgent
from tests.support import RelayAgent

pytestmark = pytest.mark.anyio

FAST = RetryPolicy(attempts=50, initial_backoff=0.005, max_backoff=0.02)
MakeRuntime = Callable[..., Runtime]


@pytest.fixture(params=["memory", "nats"])
def make_runtime(request: pytest.FixtureRequest) -> MakeRuntime:
    if request.param == "memory":
        return lambda **options: LocalRuntime(**options)
    url: str = request.getfixturevalue("nats_url")
    return lambda **options: DistributedRuntime(url, **options)


class Retries(logging.Handler):
    """Sets an event when the runtime logs a failed try (the moment to bring a node up)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.failed = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "failed, again in" in record.getMessage():
            self.failed.set()


@pytest.fixture
def retries() -> Iterator[Retries]:
    handler = Retries()
    logger = logging.getLogger("mesh.runtime")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_backoff_is_full_jitter_under_a_doubling_capped_ceiling() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=0.5)
    rng = random.Random(7)
    for tries, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (40, 0.5)]:
        waits = [policy.backoff(tries, rng) for _ in range(200)]
        assert all(0 <= wait <= ceiling for wait in waits)
        assert max(waits) > ceiling * 0.8  # spread over the whole range, not a fixed step


def test_a_backoff_ceiling_below_its_start_is_refused() -> None:
    with pytest.raises(ValueError, match="max_backoff"):
        RetryPolicy(initial_backoff=1, max_backoff=0.5)


async def test_no_responders_is_retried_until_a_node_serves(
    make_runtime: MakeRuntime, retries: Retries
) -> None:
    async with make_runtime(known_agents=["echo"], retry=FAST) as runtime:
        replies: list[Reply] = []

        async def call() -> None:
            replies.append(await runtime.request("echo", "hi", timeout=10))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(call)
                await retries.failed.wait()  # the first try found nobody
                host = AgentHost(
                    EchoAgent(),
                    runtime,
                    max_concurrency=1,
                    timeout=10,
                    max_message_bytes=1 << 20,
                    max_depth=8,
                )
                await host.start()
        await host.stop()
    (reply,) = replies
    assert reply.output == "hi"
    assert reply.meta["attempts"] >= 2


async def test_without_retries_no_responders_comes_back_at_once(make_runtime: MakeRuntime) -> None:
    async with make_runtime(known_agents=["echo"], retry=RetryPolicy(attempts=1)) as runtime:
        with anyio.fail_after(5):
            reply = await runtime.request("echo", "hi")
    assert reply.error == ErrorInfo(
        code="no_responders", message="no node is serving agent 'echo'", retryable=True
    )
    assert "attempts" not in reply.meta


async def test_a_top_caller_sees_exhausted_retries_as_still_retryable(
    make_runtime: MakeRuntime,
) -> None:
    policy = RetryPolicy(attempts=3, initial_backoff=0.001, max_backoff=0.002)
    async with make_runtime(known_agents=["echo"], retry=policy) as runtime:
        with anyio.fail_after(5):
            reply = await runtime.request("echo", "hi")
    assert reply.error == ErrorInfo(
        code="no_responders", message="no node is serving agent 'echo'", retryable=True
    )
    assert reply.meta == {"attempts": 3}


async def test_a_nested_call_that_exhausted_its_retries_is_not_retried_above(
    make_runtime: MakeRuntime,
) -> None:
    policy = RetryPolicy(attempts=3, initial_backoff=0.001, max_backoff=0.002)
    runtime = make_runtime(known_agents=["relay", "ghost"], retry=policy)
    runtime.register(RelayAgent())
    async with runtime:
        with anyio.fail_after(5):
            reply = await runtime.request("relay", {"to": "ghost", "input": "x"})
    assert reply.error == ErrorInfo(
        code="no_responders", message="no node is serving agent 'ghost'", retryable=False
    )
    assert "attempts" not in reply.meta  # the relay itself answered the first time


async def test_a_retryable_error_the_policy_lists_is_retried(make_runtime: MakeRuntime) -> None:
    policy = FAST.model_copy(update={"retry_on": [ErrorCode.RATE_LIMITED]})
    flaky = FlakyAgent(config=FlakyConfig(failures=2))
    runtime = make_runtime(retry=policy)
    runtime.register(flaky)
    async with runtime:
        with anyio.fail_after(5):
            reply = await runtime.request("flaky", "x")
    assert (reply.output, reply.meta["attempts"], flaky.runs) == ("ok after 3 runs", 3, 3)


async def test_a_retryable_error_the_policy_does_not_list_is_answered(
    make_runtime: MakeRuntime,
) -> None:
    flaky = FlakyAgent(config=FlakyConfig(failures=2))
    runtime = make_runtime(retry=FAST)
    runtime.register(flaky)
    async with runtime:
        with anyio.fail_after(5):
            reply = await runtime.request("flaky", "x")
    assert reply.error == ErrorInfo(code="rate_limited", message="run 1: slow down", retryable=True)
    assert flaky.runs == 1


async def test_a_try_that_timed_out_is_retried_for_an_idempotent_agent(
    make_runtime: MakeRuntime,
) -> None:
    policy = FAST.model_copy(update={"attempt_timeout": 0.2})
    agent = HangFirstAgent()
    runtime = make_runtime(retry=policy)
    runtime.register(agent, delivery=AgentDelivery(idempotent=True))
    async with runtime:
        with anyio.fail_after(5):
            reply = await runtime.request("hang_first", "x", timeout=4)
        stopped = time.perf_counter()
    assert (reply.output, reply.meta["attempts"]) == ("answered run 2", 2)
    assert time.perf_counter() - stopped < 2  # the first try was cancelled, not waited for


async def test_a_try_that_timed_out_is_not_retried_when_a_rerun_could_do_harm(
    make_runtime: MakeRuntime,
) -> None:
    policy = FAST.model_copy(update={"attempt_timeout": 0.1})
    agent = HangFirstAgent()
    runtime = make_runtime(retry=policy)
    runtime.register(agent)
    async with runtime:
        started = time.perf_counter()
        with anyio.fail_after(5):
            reply = await runtime.request("hang_first", "x", timeout=0.5)
        elapsed = time.perf_counter() - started
    assert reply.error is not None
    assert reply.error.code == "deadline_exceeded"
    assert agent.runs == 1
    assert elapsed >= 0.5  # waited for the deadline, not for the 0.1 s attempt timeout


async def test_retries_stop_at_the_deadline(make_runtime: MakeRuntime) -> None:
    policy = RetryPolicy(attempts=1000, initial_backoff=0.05, max_backoff=0.05)
    async with make_runtime(known_agents=["echo"], retry=policy) as runtime:
        started = time.perf_counter()
        with anyio.fail_after(5):
            reply = await runtime.request("echo", "hi", timeout=0.3)
        elapsed = time.perf_counter() - started
    assert reply.error is not None
    assert reply.error.code == "no_responders"
    assert elapsed < 0.3 + 0.1
    assert 1 < reply.meta["attempts"] < 1000
