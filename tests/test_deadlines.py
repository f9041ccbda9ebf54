"""`Deadlines`: one timer serves many deadlines (a host's tasks, a bus's requests), each met
at its own time whatever the order in which they are added and discarded."""

from __future__ import annotations

import asyncio

import anyio
import pytest

from mesh._deadlines import Deadlines
from mesh._stops import CANCELLED, DEADLINE, Stop, stop_at_deadline

pytestmark = pytest.mark.anyio


async def _stoppable(deadlines: Deadlines[Stop], seconds: float, ended: list[str]) -> Stop:
    """A task waiting forever, given to ``deadlines``; its name goes to ``ended`` once
    stopped."""

    async def wait() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            ended.append(f"{seconds:g}")
            raise

    stop = Stop(asyncio.create_task(wait()))
    deadlines.add(stop, seconds)
    await asyncio.sleep(0)  # let it start waiting
    return stop


async def test_each_task_stops_at_its_own_deadline_in_deadline_order() -> None:
    deadlines = Deadlines(stop_at_deadline)
    ended: list[str] = []
    # A later arrival with an earlier deadline must not wait for the first one's.
    late = await _stoppable(deadlines, 0.3, ended)
    soon = await _stoppable(deadlines, 0.05, ended)
    middle = await _stoppable(deadlines, 0.15, ended)
    with anyio.fail_after(5):
        await asyncio.wait([late.task, soon.task, middle.task])
    assert ended == ["0.05", "0.15", "0.3"]
    assert [s.reason for s in (soon, middle, late)] == [DEADLINE] * 3


async def test_a_discarded_stop_is_never_fired() -> None:
    deadlines = Deadlines(stop_at_deadline)
    ended: list[str] = []
    finished = await _stoppable(deadlines, 0.05, ended)
    deadlines.discard(finished)
    later = await _stoppable(deadlines, 0.1, ended)
    with anyio.fail_after(5):
        await asyncio.wait([later.task])
    assert ended == ["0.1"]
    assert finished.reason is None
    assert not finished.task.done()
    finished.task.cancel()
    await asyncio.wait([finished.task])


async def test_a_stop_fires_once_with_its_first_reason() -> None:
    deadlines = Deadlines(stop_at_deadline)
    ended: list[str] = []
    stop = await _stoppable(deadlines, 0.05, ended)
    stop.fire(CANCELLED)
    with anyio.fail_after(5):
        await asyncio.wait([stop.task])
    stop.fire(DEADLINE)
    assert stop.reason == CANCELLED
    assert ended == ["0.05"]


async def test_many_items_at_once_each_fire_once_and_the_table_empties() -> None:
    fired: list[int] = []
    done = asyncio.Event()

    def due(item: int) -> None:
        fired.append(item)
        if item == 99:
            done.set()

    deadlines: Deadlines[int] = Deadlines(due)
    for n in range(50):
        deadlines.add(n, 0.01 * (n % 5))
    for n in range(0, 50, 2):
        deadlines.discard(n)
    deadlines.add(-1, 0.1)
    deadlines.discard(-1)
    deadlines.add(99, 0.06)  # the last to fire
    with anyio.fail_after(5):
        await done.wait()
    assert sorted(fired) == [*range(1, 50, 2), 99]
    assert len(deadlines) == 0
