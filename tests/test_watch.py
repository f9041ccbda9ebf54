"""``mesh watch`` (the live telemetry, line by line) and ``mesh cost`` (the sidecar's cost
table), on both buses."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import msgpack
import pytest

from agents.llm import LLMAgent, LLMAgentConfig
from mesh._prometheus import MetricsServer
from mesh.bus import Bus, NatsBus
from mesh.llm.config import LLMConfig
from mesh.llm.instrument import LLMCall
from mesh.llm.pricing import Price
from mesh.llm.scripted import ScriptedModel
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from mesh.sidecar import Sidecar
from mesh.subjects import TELEMETRY_LLM, TELEMETRY_TASK
from mesh.task_stats import TaskStats
from mesh.telemetry import SECONDS, PatternRun, TaskRecord
from mesh.watch import (
    cost_main,
    fetch_cost,
    format_event,
    watch,
    watch_bus,
    watch_main,
)
from patterns.router import RouterConfig, RouterPattern
from tests.nodes import ROOT

pytestmark = pytest.mark.anyio

T = 1767225600.123
PRICES = {
    "scripted:mini": Price(input=1.0, output=2.0),
    "scripted:large": Price(input=10.0, output=40.0),
}
HARD = "prove " + "x" * 33  # 39 characters: 10 input tokens with the llm agent's prompt
EASY = "hello " + "y" * 33


def stamp(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at)) + ".123"


def test_a_model_call_line_shows_tokens_cost_latency_and_outcome() -> None:
    ok = LLMCall(
        model="scripted:mini",
        provider="scripted",
        agent="cheap",
        input_tokens=10,
        output_tokens=2,
        cost_usd=0.000014,
        latency_ms=3.25,
        time=T,
    )
    failed = LLMCall(
        model="openai:gpt-4o",
        provider="openai",
        cost_usd=None,
        ok=False,
        error_code="rate_limited",
        latency_ms=120,
        time=T,
    )
    assert [format_event(ok), format_event(failed)] == [
        f"{stamp(T)} llm     cheap          scripted:mini              10 in      2 out "
        "  $0.000014      3.2 ms  ok",
        f"{stamp(T)} llm     -              openai:gpt-4o               0 in      0 out "
        "         $?    120.0 ms  rate_limited",
    ]


def test_task_and_pattern_lines_show_outcome_timing_and_main_figures() -> None:
    task = TaskRecord(
        agent="ask",
        instance="i",
        task_id="t",
        outcome="no_route",
        duration_ms=12.34,
        queue_ms=0.5,
        time=T,
    )
    routed = PatternRun(
        pattern="router",
        agent="ask",
        duration_ms=25,
        calls=1,
        input_tokens=10,
        output_tokens=2,
        cost_usd=0.000014,
        figures={"label": "simple", "route": "simple", "agent": "cheap", "saved_usd": 0.000286},
        time=T,
    )
    other = PatternRun(pattern="mine", agent="x", outcome="timeout", cost_usd=None, time=T)
    assert [format_event(task), format_event(routed), format_event(other)] == [
        f"{stamp(T)} task    ask            no_route                   12.3 ms  queued 0.5 ms",
        f"{stamp(T)} pattern ask            router ok                  10 in      2 out "
        "  $0.000014     25.0 ms  1 calls  route=simple agent=cheap saved_usd=0.000286",
        f"{stamp(T)} pattern x              mine timeout                0 in      0 out "
        "         $?      0.0 ms  0 calls",
    ]


async def test_task_totals_show_what_each_adds_by_agent_then_each_failed_task(bus: Bus) -> None:
    failed = TaskRecord(
        agent="ask", instance="i", task_id="t", outcome="no_route", duration_ms=12.34, time=T
    )

    def totals(outcomes: dict[str, int], *records: TaskRecord) -> bytes:
        count = sum(outcomes.values())
        took = {"counts": [count] + [0] * len(SECONDS), "sum": count / 1000}
        agents = {"ask": {"outcomes": outcomes, "duration": took, "queue": took}}
        message = TaskStats(
            instance="i", bounds=list(SECONDS), agents=agents, failed=list(records), time=T
        )
        data: bytes = msgpack.packb(message.model_dump())
        return data

    out = io.StringIO()
    ready = anyio.Event()
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: watch_bus(bus, out, kinds=["task"], count=3, ready=ready))
            await ready.wait()
            await bus.publish(TELEMETRY_TASK, totals({"ok": 2}))
            await bus.publish(TELEMETRY_TASK, totals({"ok": 3, "no_route": 1}, failed))
    assert out.getvalue().splitlines() == [
        f"{stamp(T)} task    ask            2 ok                        1.0 ms  "
        "queued 1.0 ms (mean)",
        f"{stamp(T)} task    ask            1 ok, 1 no_route            1.0 ms  "
        "queued 1.0 ms (mean)",
        f"{stamp(T)} task    ask            no_route                   12.3 ms  queued 0.0 ms",
        "-- 0 model calls, 0 tokens in, 0 out, $0.000000; 4 tasks (1 failed); 0 pattern runs",
    ]


@pytest.fixture(params=["memory", "nats"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    llm = LLMConfig(prices=PRICES)
    if request.param == "memory":
        return LocalRuntime(llm=llm)
    return DistributedRuntime(request.getfixturevalue("nats_url"), llm=llm)


def build(runtime: Runtime) -> None:
    runtime.models.register(ScriptedModel("mini", default="a" * 8))
    runtime.models.register(ScriptedModel("large", default="b" * 40))
    runtime.register(LLMAgent(name="cheap", config=LLMAgentConfig(model="scripted:mini")))
    runtime.register(LLMAgent(name="smart", config=LLMAgentConfig(model="scripted:large")))
    routes = RouterConfig.model_validate(
        {
            "rules": [{"match": "^prove", "label": "complex"}],
            "routes": {"complex": "smart"},
            "default": "cheap",
        }
    )
    runtime.register(RouterPattern(name="ask", config=routes))


async def watching(runtime: Runtime, out: io.StringIO, **options: Any) -> None:
    """`watch` on NATS (as ``mesh watch`` runs it), `watch_bus` on the runtime's bus in memory."""
    if runtime.url is None:
        await watch_bus(runtime.bus, out, **options)
    else:
        await watch(runtime.url, out, **options)


async def test_watch_prints_a_line_per_record_then_the_totals(runtime: Runtime) -> None:
    build(runtime)
    out = io.StringIO()
    ready = anyio.Event()
    async with runtime, anyio.create_task_group() as group:
        group.start_soon(lambda: watching(runtime, out, count=4, ready=ready))
        with anyio.fail_after(20):
            await ready.wait()
            reply = await runtime.request("ask", EASY)
    assert reply.error is None
    lines = out.getvalue().splitlines()
    kinds_and_agents = sorted(tuple(line.split()[1:3]) for line in lines[:-1])
    assert kinds_and_agents == [
        ("llm", "cheap"),
        ("pattern", "ask"),
        ("task", "ask"),
        ("task", "cheap"),
    ]
    assert lines[-1] == (
        "-- 1 model calls, 10 tokens in, 2 out, $0.000014; 2 tasks (0 failed); 1 pattern runs"
    )


async def test_watch_shows_only_the_kinds_asked_for_and_says_what_it_could_not_read(
    bus: Bus,
) -> None:
    out = io.StringIO()
    ready = anyio.Event()
    async with anyio.create_task_group() as group:
        group.start_soon(lambda: watch_bus(bus, out, kinds=["llm"], count=2, ready=ready))
        with anyio.fail_after(10):
            await ready.wait()
        await bus.publish("mesh.telemetry.task", b"ignored: not watched")
        await bus.publish(TELEMETRY_LLM, b"\xc1")
        call = {"model": "scripted:mini", "provider": "scripted", "agent": "a", "time": T}
        await bus.publish(TELEMETRY_LLM, msgpack.packb(call))
    assert out.getvalue().splitlines() == [
        "malformed record on mesh.telemetry.llm: invalid_msgpack",
        f"{stamp(T)} llm     a              scripted:mini               0 in      0 out "
        "         $?      0.0 ms  ok",
        "-- 1 model calls, 0 tokens in, 0 out, $0.000000 (+1 calls of unknown price); "
        "0 tasks (0 failed); 0 pattern runs; 1 malformed records skipped",
    ]


async def test_the_command_says_on_stderr_once_it_is_subscribed(nats_url: str) -> None:
    command = [sys.executable, "-m", "mesh", "watch", "--nats", nats_url, "--kind", "llm"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("NATS_URL", None)
    process = await anyio.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT
    )
    assert process.stdout is not None
    assert process.stderr is not None
    err = b""
    try:
        with anyio.fail_after(20):
            while b"\n" not in err:
                err += await process.stderr.receive()
            # Published only once the line is out: nothing is lost to a subscription not made.
            async with await NatsBus.connect(nats_url) as bus:
                call = {"model": "scripted:mini", "provider": "scripted", "agent": "a", "time": T}
                await bus.publish(TELEMETRY_LLM, msgpack.packb(call))
            out = b""
            while b"\n" not in out:
                out += await process.stdout.receive()
            process.send_signal(signal.SIGINT)
            rest = b"".join([chunk async for chunk in process.stdout])
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.aclose()
    assert err.decode() == f"watching mesh.telemetry.llm on {nats_url} (Ctrl-C to stop)\n"
    assert (out + rest).decode().splitlines() == [
        f"{stamp(T)} llm     a              scripted:mini               0 in      0 out "
        "         $?      0.0 ms  ok",
        "-- 1 model calls, 0 tokens in, 0 out, $0.000000 (+1 calls of unknown price); "
        "0 tasks (0 failed); 0 pattern runs",
    ]
    assert code == 0


def test_watch_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]) -> None:
    assert watch_main(["--nats", "nats://127.0.0.1:1", "--count", "1"]) == 1
    assert "mesh watch: cannot connect to NATS at nats://127.0.0.1:1" in capsys.readouterr().err


@asynccontextmanager
async def sidecar_of(runtime: Runtime) -> AsyncIterator[tuple[Sidecar, MetricsServer]]:
    sidecar = Sidecar()
    server = MetricsServer(sidecar.registry, 0, addr="127.0.0.1")
    try:
        await sidecar.attach(runtime.bus)
        await runtime.bus.flush()
        yield sidecar, server
    finally:
        await sidecar.detach()
        await anyio.to_thread.run_sync(server.close)


async def test_cost_reads_the_sidecar_and_sums_by_agent_model_and_pattern(
    runtime: Runtime, capsys: pytest.CaptureFixture[str]
) -> None:
    build(runtime)
    async with runtime, sidecar_of(runtime) as (sidecar, server):
        with anyio.fail_after(20):
            await runtime.request("ask", HARD)
            await runtime.request("ask", EASY)
            await sidecar.wait_received(2 + 4 + 2)
            report = await fetch_cost(server.url)
            by_model = await fetch_cost(server.url, by="model")
            code = await anyio.to_thread.run_sync(cost_main, ["--url", server.url])
    assert report.model_dump() == (
        {
            "source": server.url,
            "by": "agent-model",
            "llm": [
                {
                    "agent": "smart",
                    "model": "scripted:large",
                    "calls": 1,
                    "input_tokens": 10,
                    "output_tokens": 10,
                    "cost_usd": pytest.approx(500e-6),
                    "unpriced_calls": 0,
                },
                {
                    "agent": "cheap",
                    "model": "scripted:mini",
                    "calls": 1,
                    "input_tokens": 10,
                    "output_tokens": 2,
                    "cost_usd": pytest.approx(14e-6),
                    "unpriced_calls": 0,
                },
            ],
            "total": {
                "agent": None,
                "model": None,
                "unpriced_calls": 0,
                "calls": 2,
                "input_tokens": 20,
                "output_tokens": 12,
                "cost_usd": pytest.approx(514e-6),
            },
            "patterns": [
                {
                    "pattern": "router",
                    "agent": "ask",
                    "runs": 2,
                    "failed": 0,
                    "input_tokens": 20,
                    "output_tokens": 12,
                    "cost_usd": pytest.approx(514e-6),
                    "saved_usd": pytest.approx(286e-6),
                },
            ],
        }
    )
    assert [(row.agent, row.model) for row in by_model.llm] == [
        (None, "scripted:large"),
        (None, "scripted:mini"),
    ]
    assert code == 0
    assert capsys.readouterr().out.splitlines() == [
        f"LLM cost (from {server.url})",
        "agent  model            calls   tokens in  tokens out      cost USD",
        "smart  scripted:large       1          10          10      0.000500",
        "cheap  scripted:mini        1          10           2      0.000014",
        "total                       2          20          12      0.000514",
        "",
        "Patterns (each run's cost includes everything below it)",
        "pattern  agent    runs  failed      cost USD     saved USD",
        "router   ask         2       0      0.000514     +0.000286",
    ]


def test_cost_reports_an_unreachable_sidecar(capsys: pytest.CaptureFixture[str]) -> None:
    assert cost_main(["--url", "http://127.0.0.1:1/metrics"]) == 1
    assert capsys.readouterr().err.startswith(
        "mesh cost: cannot read the sidecar at http://127.0.0.1:1/metrics: "
    )
