"""Bus benchmark: what the mesh costs on top of raw nats-py, and on top of bare asyncio.

One run starts one ``nats-server`` on loopback and two responder processes on it: a raw nats-py
echo (``bench/_echo_raw.py``) and a mesh node (``python -m mesh.node --agent echo``). This
process is the client. Every figure is an echo of the string ``"hello"``, measured for a fixed
time, ``--repeat`` times; the repetitions of all figures are interleaved so that background load
falls on every figure alike. See ``bench/README.md`` for what each figure means.

Usage::

    python bench/bus.py                # full run: results in bench/results/
    python bench/bus.py --quick        # smoke run: short windows, two rounds, nothing saved
    python bench/bus.py --repeat 7 --seconds 2
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import msgpack
import nats

# Beside this script, on its sys.path.
from _harness import ROOT, Call, Figure, Interrupted, Target, measure_all
from _processes import Responder, ignore_error, running, started
from _record import environment, write_results
from _traced_node import AGENT as TRACED_AGENT
from _traced_node import discarding_tracing
from nats.aio.client import Client

from agents.echo import EchoAgent
from mesh.bus import Bus, Message
from mesh.node import READY as NODE_READY
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from mesh.server import NatsServerProcess
from mesh.sidecar import READY as SIDECAR_READY
from mesh.subjects import task_subject

HERE = Path(__file__).resolve().parent

PAYLOAD = "hello"
"""The input of every request: a small string, so the figures are per-message overhead."""
IN_FLIGHT = 100
REQUEST_TIMEOUT = 5.0
"""Seconds one request may take before the run fails."""

RAW_SUBJECT = "bench.echo"
RAW_READY = "bench.echo ready"
JSON_HEADERS = {"Content-Type": "application/json"}
MSGPACK_HEADERS = {"Content-Type": "application/msgpack"}

TARGETS = (
    Target("mesh over NATS, one at a time", "nats_mesh_1", "nats_raw_1", 0.70),
    Target(
        f"mesh over NATS, {IN_FLIGHT} in flight",
        f"nats_mesh_{IN_FLIGHT}",
        f"nats_raw_{IN_FLIGHT}",
        0.50,
    ),
    Target("mesh in memory, one at a time", "memory_mesh_1", "memory_asyncio_1", 0.30),
    Target("traced, sidecar on, one at a time", "nats_traced_1", "nats_raw_1", 0.60),
)
"""This script's own targets (the earlier ones); ``bench/run.py`` judges issue 11's."""


def _check(output: object) -> None:
    if output != PAYLOAD:
        raise RuntimeError(f"the echo answered {output!r}, not {PAYLOAD!r}")


# -- scenarios: each returns the call of one round trip ----------------------------------------


def raw_nats_call(client: Client) -> Call:
    """Raw nats-py request to the raw responder: the bytes go out and come back unchanged."""
    data = PAYLOAD.encode()

    async def call() -> None:
        reply = await client.request(RAW_SUBJECT, data, timeout=REQUEST_TIMEOUT)
        _check(reply.data.decode())

    return call


def mesh_call(runtime: Runtime, agent: str = "echo") -> Call:
    """``runtime.call(agent, ...)``: to a node over NATS, or to the agent in this process."""

    async def call() -> None:
        _check(await runtime.call(agent, PAYLOAD, timeout=REQUEST_TIMEOUT))

    return call


def node_msgpack_call(client: Client) -> Call:
    """A raw nats-py client sending a msgpack task to the node: the node's cost alone."""
    subject = task_subject("echo")

    async def call() -> None:
        data = msgpack.packb({"input": PAYLOAD})
        reply = await client.request(
            subject, data, timeout=REQUEST_TIMEOUT, headers=MSGPACK_HEADERS
        )
        _check(msgpack.unpackb(reply.data)["output"])

    return call


def node_json_call(client: Client) -> Call:
    """A raw nats-py client sending a JSON task to the node, as a non-Python client would."""
    subject = task_subject("echo")

    async def call() -> None:
        data = json.dumps({"input": PAYLOAD}).encode()
        reply = await client.request(subject, data, timeout=REQUEST_TIMEOUT, headers=JSON_HEADERS)
        _check(json.loads(reply.data)["output"])

    return call


async def memory_bus_call(bus: Bus) -> Call:
    """The in-memory bus alone: request/reply of raw bytes to a handler that echoes them."""

    async def echo(message: Message) -> None:
        await bus.publish(message.reply, message.data)

    await bus.subscribe("bench.echo", echo)
    data = PAYLOAD.encode()

    async def call() -> None:
        reply = await bus.request("bench.echo", data, timeout=REQUEST_TIMEOUT)
        _check(reply.data.decode())

    return call


@asynccontextmanager
async def bare_asyncio_call() -> AsyncIterator[Call]:
    """The floor of any in-process round trip: a queue, a worker task, and a future per item."""
    queue: asyncio.Queue[tuple[str, asyncio.Future[str]]] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def worker() -> None:
        while True:
            item, future = await queue.get()
            future.set_result(item)

    async def call() -> None:
        future: asyncio.Future[str] = loop.create_future()
        queue.put_nowait((PAYLOAD, future))
        _check(await future)

    task = asyncio.create_task(worker())
    try:
        yield call
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def nats_figures(
    client: Client,
    runtime: DistributedRuntime,
    traced: DistributedRuntime,
    *,
    levels: Sequence[int] = (1, IN_FLIGHT),
) -> list[Figure]:
    """The figures over NATS, at each number of requests in flight."""
    scenarios = [
        ("nats_raw", "raw nats-py -> raw responder", raw_nats_call(client)),
        ("nats_mesh", "runtime.call -> node (msgpack)", mesh_call(runtime)),
        ("nats_traced", "the same, both sides traced", mesh_call(traced, TRACED_AGENT)),
        ("nats_node_msgpack", "nats-py msgpack -> node", node_msgpack_call(client)),
        ("nats_node_json", "nats-py JSON -> node", node_json_call(client)),
    ]
    return [
        Figure(f"{key}_{in_flight}", label, in_flight, call)
        for key, label, call in scenarios
        for in_flight in levels
    ]


# -- the run -----------------------------------------------------------------------------------


async def run(url: str, *, seconds: float, warmup: float, repeat: int) -> list[Figure]:
    """Start the responders on the server at ``url``, then measure every figure.

    Raises:
        Interrupted, asyncio.CancelledError: Ctrl-C.
    """
    # Ctrl-C cancels the run, and also sets `stop`: Python 3.11's wait_for (inside nats-py's
    # request) drops a cancellation that arrives as the reply does.
    stop = asyncio.Event()
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()

    def interrupt() -> None:
        if not stop.is_set():  # a second Ctrl-C must not cut the (bounded) cleanup short
            stop.set()
            main.cancel()

    loop.add_signal_handler(signal.SIGINT, interrupt)
    async with AsyncExitStack() as stack:
        stack.callback(loop.remove_signal_handler, signal.SIGINT)
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mesh-bench-")))
        raw = Responder(
            "raw-responder", [sys.executable, str(HERE / "_echo_raw.py"), url], RAW_READY
        )
        node = Responder(
            "mesh-node",
            [sys.executable, "-m", "mesh.node", "--agent", "echo", "--nats", url],
            NODE_READY,
        )
        traced_node = Responder(
            "traced-node", [sys.executable, str(HERE / "_traced_node.py"), url], NODE_READY
        )
        # The sidecar counts every task's telemetry through the whole run, as in production.
        sidecar = Responder(
            "sidecar",
            [sys.executable, "-m", "mesh.sidecar", "--nats", url, "--port", "0"],
            SIDECAR_READY,
        )
        responders = [raw, node, traced_node, sidecar]
        await stack.enter_async_context(running(responders, log_dir=log_dir))
        client = await nats.connect(
            url, connect_timeout=5, max_reconnect_attempts=0, error_cb=ignore_error
        )
        stack.push_async_callback(client.close)
        remote = await stack.enter_async_context(
            started(DistributedRuntime(url, name="bench", discovery=False))
        )
        traced = await stack.enter_async_context(
            started(
                DistributedRuntime(
                    url, name="bench-traced", discovery=False, tracing=discarding_tracing()
                )
            )
        )
        local = LocalRuntime(name="bench", discovery=False)
        local.register(EchoAgent())
        await stack.enter_async_context(started(local))
        bare = await stack.enter_async_context(bare_asyncio_call())
        memory_bus = await memory_bus_call(local.bus)

        figures = [
            *nats_figures(client, remote, traced),
            Figure("memory_asyncio_1", "bare asyncio queue + future", 1, bare),
            Figure("memory_mesh_1", "runtime.call, in-memory bus", 1, mesh_call(local)),
            Figure("memory_bus_1", "InMemoryBus request, no envelope", 1, memory_bus),
        ]
        await measure_all(figures, seconds=seconds, warmup=warmup, repeat=repeat, stop=stop)
        return figures


# -- reporting ---------------------------------------------------------------------------------


def report(figures: list[Figure]) -> str:
    """The table of every figure, then the targets with PASS or FAIL."""
    lines = [
        f"{'figure':<23} {'what':<31} {'in flight':>9} {'req/s median [min-max]':>29}"
        f" {'p50 us':>8} {'p99 us':>8}",
    ]
    for figure in figures:
        rps, p50, p99 = figure.throughput(), figure.p50_us(), figure.p99_us()
        spread = f"{rps.median:,.0f} [{rps.min:,.0f}-{rps.max:,.0f}]"
        lines.append(
            f"{figure.key:<23} {figure.label:<31} {figure.in_flight:>9} {spread:>29}"
            f" {p50.median:>8,.1f} {p99.median:>8,.1f}"
        )
    by_key = {figure.key: figure for figure in figures}
    lines += ["", f"{'target':<36} {'mesh / baseline':>15} {'paired [min-max]':>17} {'need':>6}"]
    for target in TARGETS:
        verdict = target.judge(by_key)
        paired = f"[{verdict.paired.min:.3f}-{verdict.paired.max:.3f}]"
        lines.append(
            f"{target.label:<36} {verdict.ratio:>15.3f} {paired:>17}"
            f" {f'>={target.minimum:.2f}':>6}  {'PASS' if verdict.passed else 'FAIL'}"
        )
    return "\n".join(lines)


def save(
    figures: list[Figure], started: dt.datetime, about: dict[str, Any], settings: dict[str, Any]
) -> Path:
    """Write the results as JSON, and again as ``latest.json``."""
    by_key = {figure.key: figure for figure in figures}
    targets = [{**vars(t), **asdict(t.judge(by_key))} for t in TARGETS]
    document = {
        "date": started.isoformat(timespec="seconds"),
        **about,
        "settings": settings,
        "figures": {figure.key: figure.to_json() for figure in figures},
        "targets": targets,
    }
    return write_results(document, f"bus-{started:%Y-%m-%dT%H%M%S}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python bench/bus.py",
        description="Measure the mesh against raw nats-py and bare asyncio (echo of 'hello').",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: short windows, 2 rounds")
    parser.add_argument("--repeat", type=int, help="repetitions of each figure (default: 5)")
    parser.add_argument("--seconds", type=float, help="measurement window (default: 1.5)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the exit code is 0 whether the targets pass or not (1 if the run failed)."""
    parser = _parser()
    args = parser.parse_args(argv)
    repeat = args.repeat if args.repeat is not None else (2 if args.quick else 5)
    seconds = args.seconds if args.seconds is not None else (0.2 if args.quick else 1.5)
    if repeat < 1 or seconds <= 0:
        parser.error("--repeat and --seconds must be positive")
    warmup = min(seconds, 0.5)
    settings = {
        "payload": PAYLOAD,
        "seconds": seconds,
        "warmup_seconds": warmup,
        "repeat": repeat,
        "quick": args.quick,
    }
    started = dt.datetime.now().astimezone()
    about = environment()
    versions, machine = about["versions"], about["machine"]
    print(
        f"bus benchmark: {repeat} x {seconds:g} s per figure, payload {PAYLOAD!r}\n"
        f"agent-mesh {versions['agent-mesh']} ({versions['git']}), nats-py {versions['nats-py']},"
        f" {versions['nats-server']}, Python {machine['python']}, {machine['cpu_count']} CPUs",
        flush=True,
    )
    try:
        with NatsServerProcess() as server:
            print(f"nats-server at {server.url}", flush=True)
            figures = asyncio.run(run(server.url, seconds=seconds, warmup=warmup, repeat=repeat))
    except (KeyboardInterrupt, asyncio.CancelledError, Interrupted):
        print("bench: interrupted", file=sys.stderr)
        return 130
    about["machine"]["load_average_after"] = os.getloadavg()
    print()
    print(report(figures))
    if args.quick:
        print("\nquick run: results not saved")
    else:
        path = save(figures, started, about, settings)
        print(f"\nresults: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
