"""The metrics sidecar: a mesh's telemetry, counted into Prometheus metrics and scraped over
HTTP, on both buses; malformed records, a NATS restart, and ``python -m mesh.sidecar``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import httpx2
import msgpack
import pytest

from agents.llm import LLMAgent, LLMAgentConfig
from mesh._prometheus import Labels, MetricsServer, read_samples
from mesh.bus import Bus, open_bus
from mesh.llm.config import LLMConfig
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedModel
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from mesh.server import NatsServerProcess
from mesh.sidecar import READY, Sidecar, run_sidecar
from mesh.subjects import TELEMETRY_LLM, TELEMETRY_PATTERN, TELEMETRY_TASK
from mesh.task_stats import TaskStats
from mesh.telemetry import SECONDS, PatternRun
from patterns.parallel import ParallelConfig, ParallelPattern
from patterns.router import RouterConfig, RouterPattern
from tests.nodes import ROOT
from tests.support import free_port

pytestmark = pytest.mark.anyio

PRICES = {  # USD per million tokens
    "scripted:mini": Price(input=1.0, output=2.0),
    "scripted:large": Price(input=10.0, output=40.0),
}
# Every input is 39 characters: with the llm agent's prompt ("\n" + input) a call reads
# 40 characters, 10 tokens. mini answers 8 characters (2 tokens), large 40 (10 tokens).
HARD = "prove " + "x" * 33
EASY = "hello " + "y" * 33
BOTH = "z" * 39


@pytest.fixture(params=["memory", "nats"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    llm = LLMConfig(prices=PRICES)
    if request.param == "memory":
        return LocalRuntime(llm=llm)
    return DistributedRuntime(request.getfixturevalue("nats_url"), llm=llm)


def labels(**values: str) -> Labels:
    return frozenset(values.items())


async def scrape(server: MetricsServer) -> dict[str, dict[Labels, float]]:
    async with httpx2.AsyncClient(timeout=10) as client:
        response = await client.get(server.url)
    response.raise_for_status()
    return read_samples(response.text)


@asynccontextmanager
async def sidecar_for(runtime: Runtime) -> AsyncIterator[tuple[Sidecar, MetricsServer]]:
    """A sidecar counting ``runtime``'s mesh: on NATS as ``python -m mesh.sidecar`` runs it
    (its own connection), in memory attached to the runtime's bus."""
    sidecar = Sidecar()
    if runtime.url is None:
        server = MetricsServer(sidecar.registry, 0, addr="127.0.0.1")
        try:
            await sidecar.attach(runtime.bus)
            yield sidecar, server
        finally:
            await anyio.to_thread.run_sync(server.close)
        return
    started: list[MetricsServer] = []
    ready = anyio.Event()

    def on_ready(server: MetricsServer) -> None:
        started.append(server)
        ready.set()

    async with anyio.create_task_group() as group:
        group.start_soon(
            lambda: run_sidecar(
                runtime.url or "", port=0, addr="127.0.0.1", sidecar=sidecar, ready=on_ready
            )
        )
        with anyio.fail_after(10):
            await ready.wait()
        yield sidecar, started[0]
        group.cancel_scope.cancel()


def build(runtime: Runtime) -> None:
    runtime.models.register(ScriptedModel("mini", default="a" * 8))
    runtime.models.register(ScriptedModel("large", default="b" * 40))
    runtime.models.register(ScriptedModel("empty"))
    runtime.register(LLMAgent(name="cheap", config=LLMAgentConfig(model="scripted:mini")))
    runtime.register(LLMAgent(name="smart", config=LLMAgentConfig(model="scripted:large")))
    runtime.register(LLMAgent(name="broken", config=LLMAgentConfig(model="scripted:empty")))
    routes = RouterConfig.model_validate(
        {
            "rules": [{"match": "^prove", "label": "complex"}],
            "routes": {"complex": "smart", "simple": "cheap"},
            "default": "cheap",
        }
    )
    runtime.register(RouterPattern(name="ask", config=routes))
    panel = ParallelConfig.model_validate({"branches": ["cheap", "smart"]})
    runtime.register(ParallelPattern(name="panel", config=panel))


async def test_counters_equal_the_known_totals_of_calls_tasks_and_patterns(
    runtime: Runtime,
) -> None:
    build(runtime)
    async with runtime, sidecar_for(runtime) as (sidecar, server):
        with anyio.fail_after(20):
            replies = [
                await runtime.request("ask", HARD),
                await runtime.request("ask", EASY),
                await runtime.request("panel", BOTH),
                await runtime.request("broken", "x"),
            ]
            await sidecar.wait_received(5 + 8 + 3)  # model calls, tasks, pattern runs
            found = await scrape(server)
    assert [reply.error is None for reply in replies] == [True, True, True, False]

    def family(name: str) -> dict[Labels, float]:
        return found.get(name, {})

    cheap, smart = labels(agent="cheap", model="scripted:mini"), {"agent": "smart"}
    smart_large = labels(**smart, model="scripted:large")
    broken = {"agent": "broken", "model": "scripted:empty"}
    assert family("mesh_llm_calls_total") == {
        labels(agent="cheap", model="scripted:mini", outcome="ok"): 2,
        labels(**smart, model="scripted:large", outcome="ok"): 2,
        labels(**broken, outcome="provider_error"): 1,
    }
    assert family("mesh_llm_tokens_total") == {
        labels(agent="cheap", model="scripted:mini", type="input"): 20,
        labels(agent="cheap", model="scripted:mini", type="output"): 4,
        labels(**smart, model="scripted:large", type="input"): 20,
        labels(**smart, model="scripted:large", type="output"): 20,
        labels(**broken, type="input"): 0,
        labels(**broken, type="output"): 0,
    }
    assert family("mesh_llm_cost_usd_total") == pytest.approx(
        {cheap: 28e-6, smart_large: 1000e-6, labels(**broken): 0.0}
    )
    assert family("mesh_llm_latency_seconds_count") == {
        labels(model="scripted:mini"): 2,
        labels(model="scripted:large"): 2,
    }
    assert family("mesh_tasks_total") == {
        labels(agent="ask", outcome="ok"): 2,
        labels(agent="panel", outcome="ok"): 1,
        labels(agent="cheap", outcome="ok"): 2,
        labels(agent="smart", outcome="ok"): 2,
        labels(agent="broken", outcome="provider_error"): 1,
    }
    assert family("mesh_task_duration_seconds_count") == {
        labels(agent=name): count
        for name, count in {"ask": 2, "panel": 1, "cheap": 2, "smart": 2, "broken": 1}.items()
    }
    router, parallel = (
        labels(pattern="router", agent="ask"),
        labels(pattern="parallel", agent="panel"),
    )
    assert family("mesh_pattern_runs_total") == {
        labels(pattern="router", agent="ask", outcome="ok"): 2,
        labels(pattern="parallel", agent="panel", outcome="ok"): 1,
    }
    assert family("mesh_pattern_calls_total") == {router: 2, parallel: 2}
    assert family("mesh_pattern_cost_usd_total") == pytest.approx(
        {router: 514e-6, parallel: 514e-6}
    )
    assert family("mesh_pattern_tokens_total") == {
        labels(pattern="router", agent="ask", type="input"): 20,
        labels(pattern="router", agent="ask", type="output"): 12,
        labels(pattern="parallel", agent="panel", type="input"): 20,
        labels(pattern="parallel", agent="panel", type="output"): 12,
    }
    assert family("mesh_pattern_router_decisions_total") == {
        labels(agent="ask", route="complex", labelled_by="rules"): 1,
        labels(agent="ask", route="default", labelled_by="unknown"): 1,
    }
    # The first run sets the costliest rate (smart's); the second is priced against it:
    # 12 tokens at 25e-6 USD a token, where it paid 14e-6.
    assert family("mesh_pattern_router_baseline_usd_total") == pytest.approx(
        {labels(agent="ask"): 500e-6 + 300e-6}
    )
    assert family("mesh_pattern_router_spent_usd_total") == pytest.approx(
        {labels(agent="ask"): 500e-6 + 14e-6}
    )
    assert family("mesh_pattern_branches_total") == {
        labels(pattern="parallel", agent="panel", status="ok"): 2
    }
    assert family("mesh_pattern_fanout_wait_seconds_count") == {parallel: 1}
    assert family("mesh_pattern_fanout_speedup_ratio_count") == {parallel: 1}
    assert family("mesh_sidecar_events_total") == {
        labels(kind="llm"): 5,
        labels(kind="task"): 8,
        labels(kind="pattern"): 3,
    }
    assert family("mesh_sidecar_malformed_events_total") == {}
    assert family("mesh_sidecar_connected") == {labels(): 1}


def msgpack_of(record: Mapping[str, Any]) -> bytes:
    data: bytes = msgpack.packb(record)
    return data


VALID = {"model": "openai:gpt-4o-mini", "provider": "openai", "agent": "a", "input_tokens": 7}


def task_totals(instance: str = "i", **answered: int) -> dict[str, Any]:
    """A host's `TaskStats`: each agent's tasks all ok, each 1 ms."""

    def buckets(count: int) -> dict[str, Any]:
        return {"counts": [count] + [0] * len(SECONDS), "sum": count / 1000}

    agents = {
        agent: {"outcomes": {"ok": count}, "duration": buckets(count), "queue": buckets(count)}
        for agent, count in answered.items()
    }
    return {"instance": instance, "bounds": SECONDS, "agents": agents}


async def test_malformed_records_are_counted_and_the_next_one_is_not_lost(bus: Bus) -> None:
    sidecar = Sidecar()
    await sidecar.attach(bus)
    bad = [
        (TELEMETRY_LLM, b"\xc1\x00"),  # not msgpack
        (TELEMETRY_LLM, b'{"model": '),  # JSON cut short
        (TELEMETRY_LLM, msgpack_of({"model": "m"})),  # no provider
        (TELEMETRY_LLM, json.dumps({**VALID, "input_tokens": -5}).encode()),
        (TELEMETRY_TASK, b"plain words"),
        (TELEMETRY_TASK, msgpack_of({**task_totals(echo=1), "bounds": [1, 2]})),  # too few buckets
        (TELEMETRY_TASK, msgpack_of({**task_totals("j", echo=1), "bounds": list(range(2, 30, 2))})),
        (TELEMETRY_PATTERN, msgpack_of({"pattern": "parallel", "agent": "p", "figures": 3})),
        (
            TELEMETRY_PATTERN,
            msgpack_of(
                {
                    "pattern": "parallel",
                    "agent": "p",
                    "figures": {"speedup": "fast", "succeeded": 2},
                }
            ),
        ),
    ]
    for subject, data in bad:
        await bus.publish(subject, data)
    await bus.publish(TELEMETRY_LLM, json.dumps(VALID).encode())
    await bus.publish(TELEMETRY_TASK, msgpack_of(task_totals(echo=1)))
    with anyio.fail_after(10):
        await sidecar.wait_received(len(bad) + 2)  # a message each, the valid ones
    found = read_samples(_render(sidecar))
    await sidecar.detach()
    detached = read_samples(_render(sidecar))
    assert found["mesh_sidecar_malformed_events_total"] == {
        labels(kind="llm", reason="invalid_msgpack"): 1,
        labels(kind="llm", reason="invalid_json"): 1,
        labels(kind="llm", reason="bad_schema"): 1,
        labels(kind="llm", reason="bad_value"): 1,
        labels(kind="task", reason="bad_schema"): 2,
        labels(kind="task", reason="bad_value"): 1,  # other buckets than the mesh's
        labels(kind="pattern", reason="bad_schema"): 1,
        labels(kind="pattern", reason="bad_figure"): 1,
    }
    assert found["mesh_sidecar_events_total"] == {
        labels(kind="llm"): 1,
        labels(kind="task"): 1,  # the task the valid totals add
        labels(kind="pattern"): 1,
    }
    assert found["mesh_llm_tokens_total"] == {
        labels(agent="a", model="openai:gpt-4o-mini", type="input"): 7,
        labels(agent="a", model="openai:gpt-4o-mini", type="output"): 0,
    }
    assert found["mesh_llm_unpriced_calls_total"] == {
        labels(agent="a", model="openai:gpt-4o-mini"): 1
    }
    assert found["mesh_pattern_branches_total"] == {
        labels(pattern="parallel", agent="p", status="ok"): 2
    }
    assert (found["mesh_sidecar_connected"], detached["mesh_sidecar_connected"]) == (
        {labels(): 1},
        {labels(): 0},
    )


def _render(sidecar: Sidecar) -> str:
    from prometheus_client import generate_latest

    return generate_latest(sidecar.registry).decode()


def call_record(tokens: int) -> bytes:
    return msgpack_of({**VALID, "input_tokens": tokens})


async def test_counting_goes_on_after_the_nats_server_restarts() -> None:
    port = free_port()
    first = NatsServerProcess(args=["-p", str(port)])
    await anyio.to_thread.run_sync(first.start)
    url = first.url
    sidecar = Sidecar()
    ready = anyio.Event()
    second: NatsServerProcess | None = None
    try:
        async with anyio.create_task_group() as group:
            group.start_soon(
                lambda: run_sidecar(
                    url, port=0, addr="127.0.0.1", sidecar=sidecar, ready=lambda _: ready.set()
                )
            )
            with anyio.fail_after(30):
                await ready.wait()
                async with open_bus(url) as publisher:
                    await publisher.publish(TELEMETRY_LLM, call_record(1))
                    await sidecar.wait_received(1)
                await anyio.to_thread.run_sync(first.stop)
                second = NatsServerProcess(args=["-p", str(port)])
                await anyio.to_thread.run_sync(second.start)
                async with open_bus(url) as publisher:
                    # Records published before the sidecar has resubscribed are dropped by
                    # the server (telemetry is fire-and-forget): publish until one arrives.
                    while sidecar.received < 2:
                        await publisher.publish(TELEMETRY_LLM, call_record(1))
                        await publisher.flush()
                        with anyio.move_on_after(1):
                            await sidecar.wait_received(2)
            found = read_samples(_render(sidecar))
            group.cancel_scope.cancel()
    finally:
        for server in (first, second):
            if server is not None:
                await anyio.to_thread.run_sync(server.stop)
    received = sidecar.received
    assert received >= 2
    assert found["mesh_llm_calls_total"] == {
        labels(agent="a", model="openai:gpt-4o-mini", outcome="ok"): received
    }
    assert (
        found["mesh_llm_tokens_total"][labels(agent="a", model="openai:gpt-4o-mini", type="input")]
        == received
    )
    assert found["mesh_sidecar_connected"] == {labels(): 1}


async def test_a_sidecar_started_before_nats_connects_once_it_is_up() -> None:
    port = free_port()
    server = NatsServerProcess(args=["-p", str(port)])
    sidecar = Sidecar()
    ready = anyio.Event()
    try:
        async with anyio.create_task_group() as group:
            url = f"nats://127.0.0.1:{port}"
            group.start_soon(
                lambda: run_sidecar(
                    url, port=0, addr="127.0.0.1", sidecar=sidecar, ready=lambda _: ready.set()
                )
            )
            await anyio.to_thread.run_sync(server.start)
            with anyio.fail_after(30):
                await ready.wait()
                async with open_bus(url) as publisher:
                    await publisher.publish(TELEMETRY_LLM, call_record(3))
                    await sidecar.wait_received(1)
            found = read_samples(_render(sidecar))
            group.cancel_scope.cancel()
    finally:
        await anyio.to_thread.run_sync(server.stop)
    assert (
        found["mesh_llm_tokens_total"][labels(agent="a", model="openai:gpt-4o-mini", type="input")]
        == 3
    )


@asynccontextmanager
async def sidecar_process(*args: str) -> AsyncIterator[anyio.abc.Process]:
    process = await anyio.open_process(
        [sys.executable, "-m", "mesh.sidecar", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.aclose()


async def first_line(stream: anyio.abc.ByteReceiveStream) -> str:
    buffer = b""
    while b"\n" not in buffer:
        try:
            buffer += await stream.receive()
        except anyio.EndOfStream:
            break
    return buffer.decode().partition("\n")[0]


async def test_the_sidecar_process_serves_metrics_and_stops_on_sigterm(nats_url: str) -> None:
    async with sidecar_process("--nats", nats_url, "--port", "0", "--addr", "127.0.0.1") as process:
        assert process.stdout is not None
        with anyio.fail_after(20):
            line = await first_line(process.stdout)
            assert line.startswith(READY), line
            port = int(line.rpartition("port=")[2])
            async with httpx2.AsyncClient(timeout=10) as client:
                response = await client.get(f"http://127.0.0.1:{port}/metrics")
            process.send_signal(signal.SIGTERM)
            code = await process.wait()
    found = read_samples(response.text)
    assert found["mesh_sidecar_connected"] == {labels(): 1}
    assert "mesh_llm_calls_total" not in found  # families without samples yet
    assert code == 0


async def test_the_sidecar_process_reports_a_port_it_cannot_bind(nats_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with sidecar_process(
            "--nats", nats_url, "--port", str(port), "--addr", "127.0.0.1"
        ) as process:
            assert process.stderr is not None
            with anyio.fail_after(20):
                code = await process.wait()
                error = await first_line(process.stderr)
    assert code == 1
    assert error.startswith(f"mesh.sidecar: cannot serve /metrics on 127.0.0.1:{port}: ")


FIGURES: dict[str, dict[str, Any]] = {
    "parallel": {
        "mode": "all",
        "wall_ms": 100.0,
        "sum_ms": 250.0,
        "speedup": 2.5,
        "succeeded": 2,
        "failures": 1,
        "cancelled": 0,
    },
    "hierarchical": {
        "assignments": 2,
        "teams": {"research": {"status": "ok"}, "writing": {"status": "failed"}},
        "wall_ms": 50.0,
        "speedup": 1.5,
    },
    "map_reduce": {
        "pieces": 3,
        "mapped": 3,
        "failed": 0,
        "map_wall_ms": 40.0,
        "map_sum_ms": 80.0,
        "reduce_levels": 2,
        "reduce_calls": [2, 1],
    },
    "ensemble": {"answered": 3, "failed": 0, "cancelled": 1, "agreement": 0.75},
    "router": {
        "label": "complex",
        "labelled_by": "classifier",
        "route": "complex",
        "agent": "smart",
        "classifier_cost_usd": 0.25,
        "route_cost_usd": 2.0,
        "baseline_cost_usd": 2.0,
        "saved_usd": -0.25,
    },
    "reflection": {"iterations": 2, "scores": [0.5, 0.9], "stopped": "threshold"},
    "supervisor": {"rounds": 3, "workers_used": {"researcher": 2, "writer": 1}, "stopped": "done"},
    "debate": {"rounds": 2, "converged": False, "decided_by": "judge", "arguments": 4},
    "swarm": {"handoffs": 2, "path": ["triage", "billing", "triage"]},
    "sequential": {
        "steps": [{"agent": "a", "outcome": "ok"}, {"agent": "b", "outcome": "provider_error"}],
        "failures": 1,
    },
    "plan_execute": {"steps_run": 4, "failures": 1, "parallel_width": 2, "replans": 1},
    "rag": {"queries": ["q", "q2"], "passages_retrieved": 5, "top_score": 0.5, "passages_used": 3},
    "my_kind": {"anything": 1},
}


def test_each_pattern_kinds_figures_become_its_metrics() -> None:
    sidecar = Sidecar()
    for kind, figures in FIGURES.items():
        run = PatternRun(pattern=kind, agent=kind, duration_ms=10, calls=1, figures=figures)
        assert sidecar.metrics.observe_pattern(run) == 0
    found = read_samples(_render(sidecar))

    def one(kind: str, **more: str) -> Labels:
        return labels(pattern=kind, agent=kind, **more)

    assert found["mesh_pattern_runs_total"] == {one(k, outcome="ok"): 1 for k in FIGURES}
    assert found["mesh_pattern_fanout_wait_seconds_sum"] == pytest.approx(
        {one("parallel"): 0.1, one("hierarchical"): 0.05, one("map_reduce"): 0.04}
    )
    assert found["mesh_pattern_fanout_speedup_ratio_sum"] == pytest.approx(
        {one("parallel"): 2.5, one("hierarchical"): 1.5, one("map_reduce"): 2.0}
    )
    assert found["mesh_pattern_branches_total"] == {
        one("parallel", status="ok"): 2,
        one("parallel", status="failed"): 1,
        one("hierarchical", status="ok"): 1,
        one("hierarchical", status="failed"): 1,
        one("map_reduce", status="ok"): 3,
        one("ensemble", status="ok"): 3,
        one("ensemble", status="cancelled"): 1,
    }
    assert found["mesh_pattern_map_reduce_reduce_calls_total"] == {labels(agent="map_reduce"): 3}
    assert found["mesh_pattern_ensemble_agreement_ratio_sum"] == {labels(agent="ensemble"): 0.75}
    assert found["mesh_pattern_router_decisions_total"] == {
        labels(agent="router", route="complex", labelled_by="classifier"): 1
    }
    assert found["mesh_pattern_router_baseline_usd_total"] == {labels(agent="router"): 2.0}
    assert found["mesh_pattern_router_spent_usd_total"] == {labels(agent="router"): 2.25}
    assert found["mesh_pattern_reflection_iterations_sum"] == {labels(agent="reflection"): 2}
    assert found["mesh_pattern_rounds_sum"] == {one("supervisor"): 3, one("debate"): 2}
    assert found["mesh_pattern_stops_total"] == {
        one("reflection", reason="threshold"): 1,
        one("supervisor", reason="done"): 1,
    }
    assert found["mesh_pattern_debate_decisions_total"] == {
        labels(agent="debate", decided_by="judge"): 1
    }
    assert found["mesh_pattern_swarm_handoffs_sum"] == {labels(agent="swarm"): 2}
    assert found["mesh_pattern_member_turns_total"] == {
        one("swarm", member="triage"): 2,
        one("swarm", member="billing"): 1,
        one("supervisor", member="researcher"): 2,
        one("supervisor", member="writer"): 1,
    }
    assert found["mesh_pattern_steps_total"] == {
        one("sequential", outcome="ok"): 1,
        one("sequential", outcome="failed"): 1,
        one("plan_execute", outcome="ok"): 3,
        one("plan_execute", outcome="failed"): 1,
    }
    assert found["mesh_pattern_plan_execute_replans_total"] == {labels(agent="plan_execute"): 1}
    assert found["mesh_pattern_plan_execute_parallel_width_sum"] == {
        labels(agent="plan_execute"): 2
    }
    assert found["mesh_pattern_rag_queries_total"] == {labels(agent="rag"): 2}
    assert found["mesh_pattern_rag_passages_total"] == {
        labels(agent="rag", stage="retrieved"): 5,
        labels(agent="rag", stage="used"): 3,
    }
    assert found["mesh_pattern_rag_top_score_sum"] == {labels(agent="rag"): 0.5}


def test_a_restarted_sidecar_counts_every_task_since_each_host_started() -> None:
    before, after = Sidecar(), Sidecar()
    assert before.metrics.observe_tasks(TaskStats.model_validate(task_totals(echo=2))) == 2
    # It restarts: the host's next totals still hold the tasks the first one counted.
    assert after.metrics.observe_tasks(TaskStats.model_validate(task_totals(echo=3))) == 3
    found = read_samples(_render(after))
    assert found["mesh_tasks_total"] == {labels(agent="echo", outcome="ok"): 3}
    # Buckets are cumulative, as Prometheus reads them: all three tasks took 1 ms.
    buckets = found["mesh_task_duration_seconds_bucket"]
    assert buckets[labels(agent="echo", le="0.005")] == 3
    assert buckets[labels(agent="echo", le="+Inf")] == 3
    assert len(buckets) == len(SECONDS) + 1
    assert found["mesh_task_queue_seconds_count"] == {labels(agent="echo"): 3}
    assert found["mesh_task_duration_seconds_sum"] == {labels(agent="echo"): pytest.approx(0.003)}


def test_label_values_past_the_limit_are_counted_as_other() -> None:
    sidecar = Sidecar(label_limit=2)
    totals = TaskStats.model_validate(task_totals(a=2, b=1, c=1, d=1))
    assert sidecar.metrics.observe_tasks(totals) == 5
    found = read_samples(_render(sidecar))
    assert found["mesh_tasks_total"] == {
        labels(agent="a", outcome="ok"): 2,
        labels(agent="b", outcome="ok"): 1,
        labels(agent="other", outcome="ok"): 2,
    }
