"""A node's own metrics (`NodeMetrics`): fed by the task records real hosts publish, on both
buses; in-flight counts read at scrape time; served over HTTP and shut down."""

from __future__ import annotations

import anyio
import anyio.to_thread
import httpx2
import pytest

from mesh._prometheus import Labels, read_samples
from mesh.node_metrics import NodeMetrics
from mesh.runtime import Runtime
from mesh.telemetry import TaskRecord
from tests.support import FailAgent, PatientAgent

pytestmark = pytest.mark.anyio


def labels(**values: str) -> Labels:
    return frozenset(values.items())


def record(agent: str, outcome: str = "ok", duration_ms: float = 20.0) -> TaskRecord:
    return TaskRecord(
        agent=agent, instance="i", task_id="t", outcome=outcome, duration_ms=duration_ms
    )


async def test_tasks_real_hosts_answered_are_counted_by_agent_and_outcome(
    runtime: Runtime,
) -> None:
    metrics = NodeMetrics()
    runtime.register(FailAgent())
    seen = 0
    three = anyio.Event()

    def observe(record: TaskRecord) -> None:  # as `mesh.node` feeds its metrics
        nonlocal seen
        metrics.observe(record)
        seen += 1
        if seen == 3:
            three.set()

    runtime.task_listeners.append(observe)
    async with runtime:
        with anyio.fail_after(10):
            for value in ("x", "mesh", "y"):
                await runtime.request("fail", value)
            await three.wait()
    found = read_samples(metrics.render().decode())
    assert found["mesh_node_tasks_total"] == {
        labels(agent="fail", outcome="agent_error"): 2,
        labels(agent="fail", outcome="no_route"): 1,
    }
    assert found["mesh_node_task_duration_seconds_count"] == {labels(agent="fail"): 3}
    assert found["mesh_node_queue_wait_seconds_count"] == {labels(agent="fail"): 3}


async def test_in_flight_is_the_hosts_count_at_scrape_time(runtime: Runtime) -> None:
    metrics = NodeMetrics()
    patient = PatientAgent()
    runtime.register(patient)
    async with runtime:
        host = runtime.hosts[0]
        metrics.track_in_flight("patient", lambda: host.in_flight)
        before = read_samples(metrics.render().decode())
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: runtime.request("patient", None, timeout=30))
            with anyio.fail_after(10):
                await patient.started.wait()
            during = read_samples(metrics.render().decode())
            group.cancel_scope.cancel()
    assert before["mesh_node_tasks_in_flight"] == {labels(agent="patient"): 0}
    assert during["mesh_node_tasks_in_flight"] == {labels(agent="patient"): 1}


def test_durations_are_seconds_and_impossible_ones_are_left_out() -> None:
    metrics = NodeMetrics()
    metrics.observe(record("a", duration_ms=250.0))
    metrics.observe(record("a", outcome="timeout", duration_ms=float("nan")))
    found = read_samples(metrics.render().decode())
    assert found["mesh_node_tasks_total"] == {
        labels(agent="a", outcome="ok"): 1,
        labels(agent="a", outcome="timeout"): 1,
    }
    assert found["mesh_node_task_duration_seconds_sum"] == {labels(agent="a"): 0.25}
    assert found["mesh_node_task_duration_seconds_count"] == {labels(agent="a"): 1}


def test_two_instances_share_nothing() -> None:
    first, second = NodeMetrics(), NodeMetrics()
    first.observe(record("a"))
    assert read_samples(first.render().decode())["mesh_node_tasks_total"] == {
        labels(agent="a", outcome="ok"): 1
    }
    assert "mesh_node_tasks_total" not in read_samples(second.render().decode())


async def test_metrics_are_served_over_http_until_closed() -> None:
    metrics = NodeMetrics()
    metrics.observe(record("a"))
    server = metrics.serve(0, addr="127.0.0.1")
    try:
        async with httpx2.AsyncClient(timeout=10) as client:
            response = await client.get(server.url)
    finally:
        await anyio.to_thread.run_sync(server.close)
    assert (response.status_code, response.text) == (200, metrics.render().decode())
    with pytest.raises(httpx2.ConnectError):
        async with httpx2.AsyncClient(timeout=10) as client:
            await client.get(server.url)
