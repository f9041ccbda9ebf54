"""The ledger: a task claimed once, answered again from its stored reply, taken over when its
runner's lease runs out. On the in-memory store with a clock the tests move (the stores
themselves are held to one contract in ``test_kv.py``)."""

from __future__ import annotations

import anyio
import pytest

from mesh.bus.kv import InMemoryKeyValue
from mesh.envelope import ErrorInfo, Reply, Task
from mesh.errors import DeadlineExceededError, IdempotencyConflictError
from mesh.ledger import Attempt, Claim, Ledger, LedgerEntry, fingerprint, is_final

pytestmark = pytest.mark.anyio

KEY = Ledger.idempotency_key("agent", "order-42")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store() -> InMemoryKeyValue:
    return InMemoryKeyValue(ttl=3600)


def ledger(store: InMemoryKeyValue, clock: Clock, instance: str = "node-a") -> Ledger:
    return Ledger(store, instance=instance, lease=10, clock=clock)


def ok(task: Task, output: str) -> Reply:
    return Reply(id=task.id, output=output, meta={"agent": "agent", "instance": "node-a"})


async def test_the_first_try_claims_and_a_second_gets_the_stored_reply(
    store: InMemoryKeyValue, clock: Clock
) -> None:
    first, second = Task(input="x", id="t1"), Task(input="x", id="t2")
    claim = await ledger(store, clock).begin(KEY, first, until=clock.now + 5)
    assert isinstance(claim, Claim)
    stored = await ledger(store, clock).finish(claim, ok(first, "done"))
    again = await ledger(store, clock, "node-b").begin(KEY, second, until=clock.now + 5)
    assert again == stored == ok(first, "done")


async def test_the_same_key_with_another_input_is_a_conflict(
    store: InMemoryKeyValue, clock: Clock
) -> None:
    claim = await ledger(store, clock).begin(KEY, Task(input={"a": 1}), until=clock.now + 5)
    assert isinstance(claim, Claim)
    with pytest.raises(IdempotencyConflictError, match="another input"):
        await ledger(store, clock).begin(KEY, Task(input={"a": 2}), until=clock.now + 5)


async def test_a_duplicate_waits_while_the_first_runs_and_gets_its_reply(
    store: InMemoryKeyValue, clock: Clock
) -> None:
    first = Task(input="x", id="t1")
    claim = await ledger(store, clock).begin(KEY, first, until=clock.now + 5)
    assert isinstance(claim, Claim)
    got: list[Claim | Reply] = []

    async def duplicate() -> None:
        got.append(await ledger(store, clock, "node-b").begin(KEY, Task(input="x"), until=1e12))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as group:
            group.start_soon(duplicate)
            await anyio.wait_all_tasks_blocked()
            assert got == []  # waiting, not running it a second time
            await ledger(store, clock).finish(claim, ok(first, "done"))
    assert got == [ok(first, "done")]


async def test_a_claim_whose_lease_ran_out_is_taken_over(
    store: InMemoryKeyValue, clock: Clock
) -> None:
    task = Task(input="x")
    dead = await ledger(store, clock, "node-a").begin(KEY, task, until=clock.now + 60)
    assert isinstance(dead, Claim)
    clock.now += 10.5  # node-a stopped renewing
    taken = await ledger(store, clock, "node-b").begin(KEY, task, until=clock.now + 60)
    assert isinstance(taken, Claim)
    assert taken.entry == LedgerEntry(
        state="running",
        fingerprint=fingerprint("x"),
        owner="node-b",
        lease_until=clock.now + 10,
        attempts=[dead.entry.attempts[0], taken.entry.attempts[-1]],
    )
    assert [a.instance for a in taken.entry.attempts] == ["node-a", "node-b"]


async def test_the_late_runner_gets_the_reply_of_the_one_that_took_over(
    store: InMemoryKeyValue, clock: Clock
) -> None:
    task = Task(input="x", id="t1")
    late = await ledger(store, clock, "node-a").begin(KEY, task, until=clock.now + 60)
    clock.now += 11
    taken = await ledger(store, clock, "node-b").begin(KEY, task, until=clock.now + 60)
    assert isinstance(late, Claim)
    assert isinstance(taken, Claim)
    await ledger(store, clock, "node-b").finish(taken, ok(task, "from b"))
    assert await ledger(store, clock, "node-a").finish(late, ok(task, "from a")) == ok(
        task, "from b"
    )
    assert late.lost


async def test_a_released_claim_is_claimed_again_with_the_failed_try_kept(
    store: InMemoryKeyValue, clock: Clock
) -> None:
    task = Task(input="x")
    first = await ledger(store, clock).begin(KEY, task, until=clock.now + 5, delivery=1)
    assert isinstance(first, Claim)
    error = ErrorInfo(code="rate_limited", message="slow down", retryable=True)
    await ledger(store, clock).release(first, error)
    second = await ledger(store, clock, "node-b").begin(KEY, task, until=clock.now + 5, delivery=2)
    assert isinstance(second, Claim)
    assert second.entry.attempts == [
        Attempt(instance="node-a", delivery=1, error=error, time=first.entry.attempts[0].time),
        Attempt(instance="node-b", delivery=2, time=second.entry.attempts[1].time),
    ]


async def test_waiting_past_the_deadline_is_deadline_exceeded(
    store: InMemoryKeyValue, clock: Clock
) -> None:
    await ledger(store, clock).begin(KEY, Task(input="x"), until=clock.now + 5)
    with pytest.raises(DeadlineExceededError, match="node-a was running"):
        await ledger(store, clock, "node-b").begin(KEY, Task(input="x"), until=clock.now)


async def test_holding_a_claim_renews_its_lease(store: InMemoryKeyValue) -> None:
    owner = Ledger(store, instance="node-a", lease=0.3)
    claim = await owner.begin(KEY, Task(input="x"), until=1e12)
    assert isinstance(claim, Claim)
    first = claim.entry.lease_until
    with anyio.fail_after(5):
        async with owner.hold(claim):
            await store.wait(KEY, revision=claim.revision, timeout=30)
    entry = await owner.read(KEY)
    assert entry is not None
    assert entry.lease_until > first
    assert not claim.lost


def test_a_task_id_with_a_dot_cannot_be_a_key() -> None:
    assert Ledger.task_key("abc123") == "task.abc123"
    with pytest.raises(ValueError, match="dot"):
        Ledger.task_key("a.b")


def test_the_fingerprint_ignores_key_order_and_encoding() -> None:
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint(b"\x00") != fingerprint("\x00")


@pytest.mark.parametrize(
    ("error", "final"),
    [
        (None, True),
        (ErrorInfo(code="agent_error", message="bug"), True),
        (ErrorInfo(code="rate_limited", message="slow", retryable=True), False),
        (ErrorInfo(code="cancelled", message="stop"), False),
        (ErrorInfo(code="deadline_exceeded", message="late"), False),
    ],
)
def test_only_answers_another_try_would_not_change_are_final(
    error: ErrorInfo | None, final: bool
) -> None:
    assert is_final(Reply(id="t", error=error)) is final
