"""Every task a host answers is counted: given to the runtime's task listeners (a node's own
metrics) at once as a `TaskRecord`, and in the totals published on ``mesh.telemetry.task``
(`TaskStats`), failed tasks whole."""

from __future__ import annotations

from typing import Any

import anyio
import msgpack
import pytest
from pydantic import ValidationError

from agents.echo import EchoAgent
from agents.upper import UpperAgent
from mesh.bus import Message, NatsBus
from mesh.runtime import DistributedRuntime, Runtime
from mesh.subjects import TELEMETRY_TASK
from mesh.task_stats import TaskStats, TaskStatsDeltas, TaskTally, UnexpectedStatsError
from mesh.telemetry import SECONDS, TaskRecord
from tests.nodes import ROOT

pytestmark = pytest.mark.anyio


class Published:
    """What a `TaskTally` publishes, decoded; `arrived` is set at each message."""

    def __init__(self) -> None:
        self.messages: list[TaskStats] = []
        self.arrived = anyio.Event()

    async def __call__(self, data: bytes) -> None:
        self.messages.append(TaskStats.model_validate(msgpack.unpackb(data)))
        self.arrived.set()

    async def next(self) -> TaskStats:
        with anyio.fail_after(5):
            await self.arrived.wait()
        self.arrived = anyio.Event()
        return self.messages[-1]


def failure(task_id: str) -> dict[str, Any]:
    return TaskRecord(
        agent="a", instance="i", task_id=task_id, outcome="timeout", duration_ms=1.0
    ).model_dump()


def stats(instance: str = "i", final: bool = False, **outcomes: int) -> TaskStats:
    empty = {"counts": [0] * (len(SECONDS) + 1), "sum": 0.0}
    answered = sum(outcomes.values())
    took = {"counts": [answered] + [0] * len(SECONDS), "sum": 0.001 * answered}
    return TaskStats(
        instance=instance,
        bounds=list(SECONDS),
        agents={"a": {"outcomes": outcomes, "duration": took, "queue": empty}},
        final=final,
    )


async def test_each_answered_task_is_counted_and_given_to_the_listeners(runtime: Runtime) -> None:
    runtime.register(EchoAgent(name="echo"))
    runtime.register(UpperAgent(name="shout"))
    heard: list[TaskRecord] = []
    runtime.task_listeners.append(heard.append)
    published: list[TaskStats] = []
    arrived = anyio.Event()

    async def collect(message: Message) -> None:
        published.append(TaskStats.model_validate(msgpack.unpackb(message.data)))
        if published[-1].answered("echo") + published[-1].answered("shout") == 2:
            arrived.set()

    async with runtime:
        await runtime.bus.subscribe(TELEMETRY_TASK, collect)
        with anyio.fail_after(10):
            ok = await runtime.request("echo", "hi")
            failed = await runtime.request("shout", {"not": "text"})
            await arrived.wait()
    assert failed.error is not None
    assert [(r.agent, r.task_id, r.correlation_id, r.outcome) for r in heard] == [
        ("echo", ok.id, ok.correlation_id, "ok"),
        ("shout", failed.id, failed.correlation_id, failed.error.code),
    ]
    assert all(r.instance == runtime.instance for r in heard)
    assert all(r.duration_ms > 0 and r.queue_ms >= 0 for r in heard)
    last = published[-1]
    assert last.instance == runtime.instance
    assert last.agents["echo"].outcomes == {"ok": 1}
    assert last.agents["shout"].outcomes == {failed.error.code: 1}
    took = last.agents["echo"].duration
    assert sum(took.counts) == 1
    assert took.sum == pytest.approx(heard[0].duration_ms / 1000)
    # The failed task goes out whole, as its listeners heard it; the one that succeeded does not.
    assert [r for message in published for r in message.failed] == [heard[1]]


async def test_counts_wait_for_the_interval_then_go_as_one_message() -> None:
    published = Published()
    tally = TaskTally(published, "i", interval=0.05)
    for took in (0.001, 0.005, 0.0051, 500.0):
        tally.add("a", "ok", took, 0.0)
    assert published.messages == []
    message = await published.next()
    duration = message.agents["a"].duration
    # A duration goes in the first bucket whose bound it does not exceed, as Prometheus's `le`.
    assert duration.counts[:3] == [2, 1, 0]
    assert duration.counts[-1] == 1
    assert sum(duration.counts) == 4
    assert duration.sum == pytest.approx(500.0111)
    assert message.agents["a"].queue.counts[0] == 4
    assert not message.final
    assert message.failed == []


async def test_every_message_carries_the_totals_so_a_lost_one_loses_nothing() -> None:
    published = Published()
    lost = anyio.Event()

    async def publish(data: bytes) -> None:
        if not lost.is_set():
            lost.set()
            raise ConnectionError("gone")
        await published(data)

    tally = TaskTally(publish, "i", interval=0.01)
    tally.add("a", "ok", 0.001, 0.0)
    with anyio.fail_after(5):
        await lost.wait()
    tally.add("a", "timeout", 0.001, 0.0, replayed=True, failure=failure("t"))
    message = await published.next()
    assert message.agents["a"].outcomes == {"ok": 1, "timeout": 1}
    assert message.agents["a"].replayed == 1
    assert [r.task_id for r in message.failed] == ["t"]


async def test_failed_tasks_go_whole_up_to_a_limit_and_the_rest_are_counted() -> None:
    published = Published()
    tally = TaskTally(published, "i", interval=3600, max_failed=2)
    for n in range(3):
        tally.add("a", "timeout", 0.001, 0.0, failure=failure(str(n)))
    await tally.flush()
    message = await published.next()
    assert [r.task_id for r in message.failed] == ["0", "1"]
    assert message.failed_dropped == 1
    assert message.agents["a"].outcomes == {"timeout": 3}
    assert message.final


async def test_after_the_final_totals_counting_starts_again_from_zero() -> None:
    published = Published()
    tally = TaskTally(published, "i", interval=3600)
    tally.add("a", "ok", 0.001, 0.0)
    await tally.flush()
    tally.add("a", "ok", 0.001, 0.0)
    await tally.flush()
    # A reader forgot the instance at its first final totals: the second run adds one task.
    assert [(m.answered("a"), m.final) for m in published.messages] == [(1, True), (1, True)]


async def test_nothing_is_published_while_no_task_is_answered() -> None:
    published = Published()
    tally = TaskTally(published, "i", interval=0.01)
    await tally.flush()
    await anyio.sleep(0.05)
    assert published.messages == []


async def test_stopping_publishes_the_final_totals(nats_url: str) -> None:
    published = Published()

    async def collect(message: Message) -> None:
        await published(message.data)

    async with await NatsBus.connect(nats_url) as observer:
        await observer.subscribe(TELEMETRY_TASK, collect)
        await observer.flush()
        runtime = DistributedRuntime(nats_url)
        runtime.register(EchoAgent(name="echo"))
        async with runtime:
            await runtime.request("echo", "hi")
        # The interval has not passed: the totals went out while stopping.
        message = await published.next()
    assert message.final
    assert message.answered("echo") == 1


def test_deltas_are_what_each_message_adds_to_its_instance() -> None:
    deltas = TaskStatsDeltas()
    assert deltas(stats(ok=2))["a"].outcomes == {"ok": 2}
    added = deltas(stats(ok=3, timeout=1))["a"]
    assert added.outcomes == {"ok": 1, "timeout": 1}
    assert added.duration.counts[0] == 2
    assert added.duration.sum == pytest.approx(0.002)
    assert deltas(stats(ok=3, timeout=1)) == {}  # nothing new
    assert deltas(stats("j", ok=1))["a"].outcomes == {"ok": 1}  # another instance, apart


def test_a_final_message_ends_its_instance() -> None:
    deltas = TaskStatsDeltas()
    deltas(stats(ok=2))
    assert deltas(stats(ok=3, final=True))["a"].outcomes == {"ok": 1}
    # Forgotten: the same id again would be a new runtime, counted from zero.
    assert deltas(stats(ok=1))["a"].outcomes == {"ok": 1}


def test_totals_that_go_down_are_refused_and_the_earlier_ones_kept() -> None:
    deltas = TaskStatsDeltas()
    deltas(stats(ok=5))
    with pytest.raises(UnexpectedStatsError, match="went down"):
        deltas(stats(ok=4))
    with pytest.raises(UnexpectedStatsError, match="went down"):
        deltas(stats(timeout=6))  # an outcome gone is a count gone down
    assert deltas(stats(ok=6))["a"].outcomes == {"ok": 1}


def test_other_buckets_are_refused() -> None:
    other = stats(ok=1).model_copy(update={"bounds": [bound * 2 for bound in SECONDS]})
    with pytest.raises(UnexpectedStatsError, match="buckets"):
        TaskStatsDeltas()(other)


def test_the_instance_heard_from_least_recently_is_forgotten_past_the_limit() -> None:
    deltas = TaskStatsDeltas(max_instances=2)
    deltas(stats("x", ok=1))
    deltas(stats("y", ok=1))
    deltas(stats("x", ok=2))
    deltas(stats("z", ok=1))  # y goes
    assert deltas(stats("x", ok=3))["a"].outcomes == {"ok": 1}
    assert deltas(stats("y", ok=1))["a"].outcomes == {"ok": 1}


@pytest.mark.parametrize(
    "change",
    [
        {"bounds": [0.5, 0.1]},
        {"agents": {"a": {"outcomes": {"ok": 1}, "duration": {"counts": [1], "sum": 0.1}}}},
        {"agents": {"a": {"outcomes": {"ok": -1}}}},
        {"agents": {"a": {"duration": {"sum": float("nan")}}}},
    ],
    ids=["bounds-decreasing", "too-few-buckets", "negative-count", "nan-sum"],
)
def test_impossible_totals_do_not_validate(change: dict[str, Any]) -> None:
    fields = stats(ok=1).model_dump()
    for key, value in change.items():
        if key == "agents":
            for part, override in value["a"].items():
                current = fields["agents"]["a"][part]
                fields["agents"]["a"][part] = (
                    {**current, **override} if isinstance(current, dict) else override
                )
        else:
            fields[key] = value
    with pytest.raises(ValidationError):
        TaskStats.model_validate(fields)


def test_the_example_in_subjects_md_is_valid() -> None:
    text = (ROOT / "subjects.md").read_text(encoding="utf-8")
    section = text[text.index("## TaskStats") :]
    start = section.index("```json") + len("```json")
    example = section[start : section.index("```", start)]
    totals = TaskStats.model_validate_json(example)
    assert totals.answered("echo") == 1522
    assert TaskStatsDeltas()(totals)["echo"].outcomes == {"ok": 1520, "timeout": 2}
