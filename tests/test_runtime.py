"""The runtime's contract, the same on the in-memory bus and on NATS (only the URL differs)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import mesh.host
from agents.echo import EchoAgent
from agents.upper import UpperAgent
from mesh.agent import Agent
from mesh.bus import InMemoryBus, Message, NatsBus
from mesh.codec import decode, decode_reply
from mesh.config import MeshConfig
from mesh.context import Context
from mesh.envelope import Event, Reply, Task, Usage
from mesh.errors import (
    AgentError,
    BadSchemaError,
    DeadlineExceededError,
    InvalidOutputError,
    MeshTimeoutError,
    NoRespondersError,
    NoRouteError,
    UnknownAgentError,
)
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from mesh.subjects import TELEMETRY_TASK, task_subject
from mesh.task_stats import TaskStats
from mesh.telemetry import TaskRecord
from tests.nodes import run_node
from tests.support import (
    FailAgent,
    FanOutAgent,
    PatientAgent,
    RecurseAgent,
    RelayAgent,
    SleepAgent,
    SlowAgent,
    SlowConfig,
    UnserialisableAgent,
)

pytestmark = pytest.mark.anyio

MakeRuntime = Callable[..., Runtime]


@pytest.fixture(params=["memory", "nats"])
def make_runtime(request: pytest.FixtureRequest) -> MakeRuntime:
    """Build a runtime for the parametrised bus: the agent code never changes, only this."""
    if request.param == "memory":
        return lambda **options: LocalRuntime(**options)
    url: str = request.getfixturevalue("nats_url")
    return lambda **options: DistributedRuntime(url, **options)


@pytest.fixture
async def runtime(make_runtime: MakeRuntime) -> AsyncIterator[Runtime]:
    rt = make_runtime(known_agents=None)
    for agent in (
        EchoAgent(),
        UpperAgent(),
        FailAgent(),
        SleepAgent(),
        RelayAgent(),
        FanOutAgent(),
        UnserialisableAgent(),
    ):
        rt.register(agent)
    async with rt:
        yield rt


async def test_call_returns_the_agents_output(runtime: Runtime) -> None:
    with anyio.fail_after(5):
        assert await runtime.call("echo", {"a": [1, 2]}) == {"a": [1, 2]}
        assert await runtime.call("upper", "quiet") == "QUIET"


async def test_reply_envelope_carries_id_output_usage_and_meta(runtime: Runtime) -> None:
    with anyio.fail_after(5):
        reply = await runtime.request("echo", "hi")
    assert reply == Reply(
        id=reply.id,
        output="hi",
        usage=Usage(),
        meta={
            "agent": "echo",
            "instance": runtime.instance,
            "duration_ms": reply.meta["duration_ms"],
        },
    )


async def test_agent_exception_becomes_agent_error(runtime: Runtime) -> None:
    with anyio.fail_after(5), pytest.raises(AgentError, match="RuntimeError: boom on 'x'"):
        await runtime.call("fail", "x")


async def test_mesh_error_keeps_its_class_across_the_bus(runtime: Runtime) -> None:
    with anyio.fail_after(5), pytest.raises(NoRouteError, match="nowhere to go"):
        await runtime.call("fail", "mesh")


async def test_agent_keeps_serving_after_a_failure(runtime: Runtime) -> None:
    with anyio.fail_after(5):
        failed = await runtime.request("fail", "x")
        assert failed.error is not None
        assert await runtime.call("echo", "next") == "next"


async def test_bad_input_for_an_agent_is_a_structured_error(runtime: Runtime) -> None:
    with anyio.fail_after(5), pytest.raises(BadSchemaError, match="upper takes text"):
        await runtime.call("upper", 42)


async def test_slow_agent_gets_deadline_exceeded(runtime: Runtime) -> None:
    started = time.monotonic()
    with anyio.fail_after(5), pytest.raises(DeadlineExceededError):
        await runtime.call("sleep", 30, timeout=0.2)
    assert time.monotonic() - started < 3


async def test_agent_timeout_bounds_only_tasks_without_a_deadline(
    make_runtime: MakeRuntime,
) -> None:
    """A caller's deadline is the task's limit, longer than the agent's ``timeout`` or not;
    a task that carries none (a plain NATS client's) gets the agent's ``timeout``."""
    rt = make_runtime()
    rt.register(SleepAgent(), timeout=0.2)
    async with rt:
        with anyio.fail_after(10):
            assert await rt.call("sleep", 0.4, timeout=5) == 0.4
            started = time.monotonic()
            message = await rt.bus.request(task_subject("sleep"), b'{"input": 30}', timeout=5)
        reply = decode_reply(message.data, message.headers)
        assert reply.error is not None
        assert reply.error.code == "deadline_exceeded"
        assert time.monotonic() - started < 3


class SwallowsOnce(Agent[Any]):
    """Sleeps as long as its input says; the first time its deadline cancels it, it swallows
    the cancellation and answers anyway (a badly written agent)."""

    name = "swallows_once"

    def __init__(self) -> None:
        super().__init__()
        self.swallowed = False
        self.entered = anyio.Event()

    async def execute(self, task: Task, ctx: Context) -> Any:
        self.entered.set()
        try:
            await asyncio.sleep(float(task.input))
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed = True
        return "answered anyway"


async def test_an_agent_swallowing_its_cancellation_does_not_cost_the_next_task_its_reply(
    make_runtime: MakeRuntime,
) -> None:
    """With one slot, the second task runs after the first in the same host task: the cancel
    request the first left behind must not be taken for a shutdown in the second."""
    agent = SwallowsOnce()
    rt = make_runtime()
    rt.register(agent, max_concurrency=1)
    replies: dict[str, Reply] = {}

    async def call(key: str, timeout: float) -> None:
        replies[key] = await rt.request("swallows_once", 30, timeout=timeout)

    async with rt:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(call, "first", 0.2)
                await agent.entered.wait()
                group.start_soon(call, "second", 0.6)
    assert replies["first"].output == "answered anyway"
    assert replies["second"].error is not None
    assert replies["second"].error.code == "deadline_exceeded"


async def test_a_failure_of_the_host_itself_is_answered_at_once_and_it_serves_on(
    make_runtime: MakeRuntime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug outside the agent (here: decoding raises what no decoder should) gets the caller
    an ``internal_error`` reply, not a wait until its timeout; the next task is served."""
    decode_task = mesh.host.decode_task

    def broken_once(*args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(mesh.host, "decode_task", decode_task)
        raise NameError("a bug")

    monkeypatch.setattr(mesh.host, "decode_task", broken_once)
    rt = make_runtime()
    rt.register(EchoAgent())
    heard: list[TaskRecord] = []
    rt.task_listeners.append(heard.append)
    async with rt:
        with anyio.fail_after(5):
            failed = await rt.bus.request(task_subject("echo"), b'{"input": "first"}', timeout=4)
            served = await rt.bus.request(task_subject("echo"), b'{"input": "next"}', timeout=4)
    error = decode_reply(failed.data, failed.headers).error
    assert error is not None
    assert (error.code, error.retryable) == ("internal_error", False)
    assert "NameError" in error.message
    assert failed.headers is not None
    assert failed.headers["Nats-Service-Error-Code"] == "500"
    assert decode_reply(served.data, served.headers).output == "next"
    assert [record.outcome for record in heard] == ["internal_error", "ok"]


@pytest.mark.parametrize("what", [None, "huge"])
async def test_unserialisable_output_is_invalid_output(runtime: Runtime, what: str | None) -> None:
    with anyio.fail_after(5), pytest.raises(InvalidOutputError):
        await runtime.call("unserialisable", what)
    assert await runtime.call("echo", "next") == "next"


class KeeperAgent(Agent[Any]):
    """Changes its input, and keeps what it returns (to change it later)."""

    name = "keeper"

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[dict[str, Any]] = []

    async def execute(self, task: Task, ctx: Context) -> dict[str, Any]:
        task.input["items"].append("changed by the agent")
        output = {"items": list(task.input["items"])}
        self.kept.append(output)
        return output


async def test_caller_and_agent_never_share_data(make_runtime: MakeRuntime) -> None:
    # In memory the task is handed over in process: still each side has its own copy.
    keeper = KeeperAgent()
    rt = make_runtime()
    rt.register(keeper)
    sent = {"items": ["a"]}
    async with rt:
        with anyio.fail_after(5):
            reply = await rt.request("keeper", sent)
    keeper.kept[0]["items"].append("changed later")
    assert sent == {"items": ["a"]}
    assert reply.output == {"items": ["a", "changed by the agent"]}


async def test_too_large_a_task_or_output_is_payload_too_large(make_runtime: MakeRuntime) -> None:
    rt = make_runtime(max_message_bytes=2_000)
    rt.register(EchoAgent())
    async with rt:
        with anyio.fail_after(5):
            small = await rt.request("echo", "x" * 100)
            large = await rt.request("echo", "x" * 5_000)
            beyond_the_bus = await rt.request("echo", "x" * (rt.bus.max_payload + 1))
    assert small.output == "x" * 100
    assert large.error is not None
    assert large.error.code == "payload_too_large"
    assert beyond_the_bus.error is not None
    assert beyond_the_bus.error.code == "payload_too_large"


async def test_nested_call_stamps_path_sender_and_correlation(runtime: Runtime) -> None:
    seen: list[Task] = []

    class Spy(Agent[Any]):
        name = "spy"

        async def execute(self, task: Task, ctx: Context) -> Any:
            seen.append(task)
            return "seen"

    spy_runtime = LocalRuntime() if runtime.url is None else DistributedRuntime(runtime.url)
    spy_runtime.register(Spy())
    async with spy_runtime:
        with anyio.fail_after(5):
            reply = await runtime.request("relay", {"to": "spy", "input": 1}, timeout=10)
    if runtime.url is None:
        # Two in-memory buses are two meshes: the spy is not reachable from the first.
        assert reply.error is not None
        return
    assert reply.output == "seen"
    (child,) = seen
    assert child.sender == "relay"
    assert child.path == ["client", "relay"]
    assert child.correlation_id == reply.id
    assert child.deadline is not None
    assert child.deadline <= time.time() + 10


async def test_call_many_returns_replies_in_order(runtime: Runtime) -> None:
    with anyio.fail_after(5):
        replies = await runtime.call_many(["upper", "echo", "fail"], "abc")
    assert [r.output for r in replies] == ["ABC", "abc", None]
    assert replies[2].error is not None
    assert replies[2].error.code == "agent_error"


async def test_call_many_with_one_input_per_agent(runtime: Runtime) -> None:
    with anyio.fail_after(5):
        replies = await runtime.call_many(["upper", "upper"], inputs=["a", "b"])
    assert [r.output for r in replies] == ["A", "B"]


async def test_call_many_rejects_mismatched_inputs(runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="2 inputs for 1 agents"):
        await runtime.call_many(["echo"], inputs=[1, 2])


async def test_agent_fans_out_through_its_context(runtime: Runtime) -> None:
    with anyio.fail_after(5):
        output = await runtime.call("fanout", {"to": ["echo", "upper"], "input": "x"})
    assert output == ["x", "X"]


async def test_invalid_agent_name_is_unknown_agent(runtime: Runtime) -> None:
    with anyio.fail_after(5), pytest.raises(UnknownAgentError, match="invalid agent name"):
        await runtime.call("not.a.name", 1)


async def test_call_with_no_time_left_fails_without_sending(runtime: Runtime) -> None:
    with anyio.fail_after(5), pytest.raises(DeadlineExceededError):
        await runtime.call("echo", 1, timeout=0)


async def test_max_concurrency_overlaps_tasks_up_to_the_limit(make_runtime: MakeRuntime) -> None:
    slow = SlowAgent(config=SlowConfig(delay=0.2))
    rt = make_runtime()
    rt.register(slow, max_concurrency=8)
    async with rt:
        with anyio.fail_after(10):
            replies = await rt.call_many(["slow"] * 16, "x")
    assert all(r.ok for r in replies)
    assert slow.peak == 8


async def test_tasks_beyond_the_hosts_backlog_wait_in_the_bus_and_all_get_replies(
    make_runtime: MakeRuntime,
) -> None:
    # One slot: 1 task runs, 64 wait in the host's backlog, the rest in the bus client.
    slow = SlowAgent(config=SlowConfig(delay=0.002))
    rt = make_runtime()
    rt.register(slow, max_concurrency=1)
    async with rt:
        with anyio.fail_after(20):
            replies = await rt.call_many(["slow"] * 150, inputs=list(range(150)))
    assert [r.output["input"] for r in replies] == list(range(150))
    assert slow.peak == 1


async def test_stop_answers_the_tasks_waiting_for_a_slot(make_runtime: MakeRuntime) -> None:
    slow = SlowAgent(config=SlowConfig(delay=0.05))
    server = make_runtime()
    server.register(slow, max_concurrency=1)
    replies: list[Reply] = []

    async def call(n: int) -> None:
        replies.append(await server.request("slow", n))

    async with server:
        (host,) = server.hosts
        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for n in range(5):
                    group.start_soon(call, n)
                await slow.entered.wait()  # one runs; the others were sent with it
                await server.bus.flush()
                await host.stop()
    assert sorted(r.output["input"] for r in replies) == list(range(5))


async def test_stop_answers_tasks_in_flight(make_runtime: MakeRuntime) -> None:
    slow = SlowAgent(config=SlowConfig(delay=0.3))
    server = make_runtime()
    server.register(slow)
    replies: list[Reply] = []
    async with server:
        started = anyio.Event()

        async def call() -> None:
            started.set()
            replies.append(await server.request("slow", "in flight"))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                group.start_soon(call)
                await started.wait()
                await slow.entered.wait()
                # The caller shares the bus with the server here, so stop only the hosts.
                for host in server.hosts:
                    await host.stop()
    assert replies[0].output == {"input": "in flight", "peak": 1}


async def test_in_memory_task_totals_are_kept_only_while_something_listens() -> None:
    rt = LocalRuntime()
    rt.register(EchoAgent())
    heard: list[Message] = []

    async def hear(message: Message) -> None:
        heard.append(message)

    async with rt:
        assert isinstance(rt.bus, InMemoryBus)
        assert not rt.bus.has_interest(TELEMETRY_TASK)
        await rt.call("echo", "unheard")
        await rt.bus.subscribe(TELEMETRY_TASK, hear)
        assert rt.bus.has_interest(TELEMETRY_TASK)
        reply = await rt.request("echo", "heard")
    assert reply.error is None
    # Stopping publishes the final totals, then drains the bus: the subscriber has them.
    assert decode(heard[-1].data, TaskStats, None).answered("echo") == 1


async def test_unknown_agent_on_a_known_mesh(make_runtime: MakeRuntime) -> None:
    rt = make_runtime(known_agents=["echo"])
    rt.register(EchoAgent())
    async with rt:
        with anyio.fail_after(5), pytest.raises(UnknownAgentError, match="known: echo"):
            await rt.call("ghost", 1)


async def test_known_agent_without_a_node_is_no_responders(nats_url: str) -> None:
    async with DistributedRuntime(nats_url, known_agents=["ghost"]) as rt:
        with anyio.fail_after(5), pytest.raises(NoRespondersError, match="no node is serving"):
            await rt.call("ghost", 1)


async def test_events_reach_subscribers(runtime: Runtime) -> None:
    got: list[Event] = []
    arrived = anyio.Event()

    async def on_event(event: Event) -> None:
        got.append(event)
        arrived.set()

    await runtime.subscribe("mesh.events.*.alert", on_event)
    await runtime.emit(Event(source="watcher", kind="alert", data={"level": 3}))
    with anyio.fail_after(5):
        await arrived.wait()
    assert got[0].model_dump(exclude={"id", "time"}) == {
        "source": "watcher",
        "kind": "alert",
        "data": {"level": 3},
    }


async def test_malformed_event_is_skipped(runtime: Runtime) -> None:
    got: list[Event] = []
    arrived = anyio.Event()

    async def on_event(event: Event) -> None:
        got.append(event)
        arrived.set()

    await runtime.subscribe("mesh.events.>", on_event)
    await runtime.bus.publish("mesh.events.x.y", b"{not json")
    await runtime.emit(Event(source="x", kind="y"))
    with anyio.fail_after(5):
        await arrived.wait()
    assert [e.source for e in got] == ["x"]


class Reactor(Agent[Any]):
    """A long-running agent: answers each ``ping`` event with a ``pong`` event."""

    name = "reactor"

    async def start(self, ctx: Context) -> None:
        async def on_ping(event: Event) -> None:
            await ctx.emit("pong", event.data)

        await ctx.subscribe("mesh.events.*.ping", on_ping)
        await anyio.sleep_forever()


async def test_long_running_agent_reacts_to_events(make_runtime: MakeRuntime) -> None:
    rt = make_runtime()
    rt.register(Reactor())
    pongs: list[Any] = []
    arrived = anyio.Event()

    async def on_pong(event: Event) -> None:
        pongs.append((event.source, event.data))
        arrived.set()

    async with rt:
        await rt.subscribe("mesh.events.reactor.pong", on_pong)
        with anyio.fail_after(5):
            while not arrived.is_set():
                # The reactor subscribes in its own task: ping until it answers.
                await rt.emit(Event(source="test", kind="ping", data=7))
                with anyio.move_on_after(0.05):
                    await arrived.wait()
    assert pongs[0] == ("reactor", 7)


async def test_register_twice_is_refused() -> None:
    rt = LocalRuntime()
    rt.register(EchoAgent())
    with pytest.raises(ValueError, match="registered already"):
        rt.register(EchoAgent())


async def test_register_after_start_is_refused() -> None:
    async with LocalRuntime() as rt:
        with pytest.raises(RuntimeError, match="before the runtime starts"):
            rt.register(EchoAgent())


async def test_bus_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="has not started"):
        _ = LocalRuntime().bus


class TimesOut(Agent[Any]):
    """Raises a mesh timeout of its own, well before its deadline."""

    name = "times_out"

    async def execute(self, task: Task, ctx: Context) -> Any:
        raise MeshTimeoutError("a sub-call gave up")


async def test_agents_own_timeout_is_not_its_deadline(make_runtime: MakeRuntime) -> None:
    rt = make_runtime()
    rt.register(TimesOut())
    async with rt:
        with anyio.fail_after(5), pytest.raises(MeshTimeoutError, match="a sub-call gave up"):
            await rt.call("times_out", None)


@pytest.mark.parametrize("via", ["patient", "relay"])
async def test_a_caller_giving_up_cancels_the_work_below(
    make_runtime: MakeRuntime, via: str
) -> None:
    patient = PatientAgent()
    server = make_runtime()
    server.register(patient)
    server.register(RelayAgent())
    async with server:
        payload = "x" if via == "patient" else {"to": "patient", "input": "x"}
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:
                group.start_soon(server.request, via, payload)
                await patient.started.wait()
                group.cancel_scope.cancel()
            await patient.cancelled.wait()


async def test_a_cancel_from_any_client_stops_the_task(make_runtime: MakeRuntime) -> None:
    patient = PatientAgent()
    server = make_runtime()
    server.register(patient)
    async with server:
        task = Task(input="x", id="cancel-me")
        with anyio.fail_after(5):
            async with anyio.create_task_group() as group:

                async def ask() -> None:
                    replies.append(await server.send("patient", task, timeout=10))

                replies: list[Reply] = []
                group.start_soon(ask)
                await patient.started.wait()
                await server.bus.publish("mesh.cancel.cancel-me", b"")
            await patient.cancelled.wait()
    assert replies[0].error is not None
    assert replies[0].error.code == "cancelled"


async def test_a_cancel_that_overtakes_its_task_refuses_it(make_runtime: MakeRuntime) -> None:
    server = make_runtime()
    server.register(EchoAgent())
    async with server:
        # The cancel arrives first (it travels on another subject than the task).
        await server._on_cancel(Message("mesh.cancel.early-bird", b""))
        with anyio.fail_after(5):
            reply = await server.send("echo", Task(input="x", id="early-bird"))
            again = await server.send("echo", Task(input="x", id="early-bird"))
    assert reply.error is not None
    assert (reply.error.code, reply.error.message) == (
        "cancelled",
        "the caller cancelled the task before it started",
    )
    assert again.output == "x"  # remembered once, then forgotten


async def test_a_call_cycle_is_stopped_by_the_depth_limit(make_runtime: MakeRuntime) -> None:
    rt = make_runtime(max_depth=5)
    rt.register(RecurseAgent())
    async with rt:
        with anyio.fail_after(10):
            reply = await rt.request("recurse", 0)
    assert reply.error is not None
    assert reply.error.code == "depth_exceeded"
    assert reply.error.message == (
        "call depth 6 exceeds max_depth 5 "
        "(the last callers: recurse -> recurse -> recurse -> recurse -> recurse): a cycle?"
    )


CYCLE = """
defaults: {max_depth: 6}
agents:
  ping: {kind: "tests.support:PeerAgent", peer: pong}
  pong: {kind: "tests.support:PeerAgent", peer: ping}
"""


async def test_a_cycle_across_processes_is_stopped_at_the_configured_depth(
    nats_url: str, tmp_path: Path
) -> None:
    config = tmp_path / "mesh.yaml"
    config.write_text(CYCLE)
    async with (
        run_node("ping", nats_url=nats_url, config=config, log_dir=tmp_path),
        run_node("pong", nats_url=nats_url, config=config, log_dir=tmp_path),
        DistributedRuntime(nats_url) as client,
    ):
        with anyio.fail_after(20):
            reply = await client.request("ping", 0)
    assert reply.error is not None
    assert reply.error.code == "depth_exceeded"
    assert reply.error.message == (
        "call depth 7 exceeds max_depth 6 (the last callers: pong -> ping -> pong -> ping -> "
        "pong): a cycle?"
    )


async def test_the_connection_carries_the_configured_bus_name(nats_url: str) -> None:
    config = MeshConfig.model_validate(
        {"bus": {"url": nats_url, "name": "billing"}, "agents": {"echo": {"kind": "echo"}}}
    )
    async with Runtime.from_config(config) as rt:
        assert isinstance(rt.bus, NatsBus)
        assert rt.bus.client.options["name"] == "billing"
    async with Runtime.from_config(config, connection_name="billing node echo") as rt:
        assert isinstance(rt.bus, NatsBus)
        assert rt.bus.client.options["name"] == "billing node echo"
