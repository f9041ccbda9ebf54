"""What every pattern reports about itself, whatever pattern it is."""

from __future__ import annotations

import anyio
import msgpack
import pytest

from mesh.bus import Message
from mesh.runtime import Runtime
from mesh.subjects import TELEMETRY_PATTERN
from mesh.telemetry import PatternRun
from patterns.parallel import ParallelConfig, ParallelPattern
from tests.support import PatientAgent

pytestmark = pytest.mark.anyio


async def test_a_pattern_stopped_by_its_deadline_reports_a_cancelled_run(runtime: Runtime) -> None:
    runtime.register(PatientAgent())
    pattern = ParallelPattern(
        name="fan", config=ParallelConfig.model_validate({"branches": ["patient"]})
    )
    runtime.register(pattern)
    runs: list[PatternRun] = []
    reported = anyio.Event()

    async def collect(message: Message) -> None:
        runs.append(PatternRun.model_validate(msgpack.unpackb(message.data)))
        reported.set()

    async with runtime:
        await runtime.bus.subscribe(TELEMETRY_PATTERN, collect)
        with anyio.fail_after(10):
            reply = await runtime.request("fan", "x", timeout=0.3)
            await reported.wait()
    assert reply.error is not None
    assert reply.error.code == "deadline_exceeded"
    assert [(run.pattern, run.agent, run.outcome) for run in runs] == [
        ("parallel", "fan", "cancelled")
    ]
