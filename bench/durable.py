"""Durable load test: 10,000 tasks through a 4-node mesh, one node killed and restarted.

One ``nats-server -js`` on loopback, four ``python -m mesh.node --agent ledger`` processes
(durable delivery), and this process as the client. Every task carries an idempotency key;
the agent (``tests.durable_agents:LedgerAgent``) logs each run and applies a side effect once
per key (an exclusive file create). When a third of the tasks are answered, one node is
killed with SIGKILL and a new one started in its place.

Reported: throughput, p50/p99 latency (send to reply, with ``--in-flight`` tasks in flight),
and the counts that must be 0: lost (a task with no successful reply, or left in the stream),
duplicated side effects, and tasks run again that the killed node was not running. Tasks the
killed node was running when it died run again elsewhere; they are counted, not failed.

It is a measurement, not a test (not in ``make test``): it prints PASS or FAIL and exits 0,
1 only if the run itself broke.

Usage::

    python bench/durable.py                    # 10,000 tasks
    python bench/durable.py --tasks 2000 --in-flight 200 --output run.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import nats

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mesh.config import load_config  # noqa: E402 - after the path is set
from mesh.envelope import Reply  # noqa: E402
from mesh.node import READY  # noqa: E402
from mesh.runtime import Runtime  # noqa: E402
from mesh.server import NatsServerProcess  # noqa: E402

CONFIG = """
defaults:
  max_concurrency: {concurrency}
  timeout: 300
  durable: {{ack_wait: {ack_wait}, max_deliver: 5}}
agents:
  ledger:
    kind: "tests.durable_agents:LedgerAgent"
    delivery: durable
    directory: "{directory}"
    delay: {delay}
"""


class Node:
    """A ``python -m mesh.node`` process."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 10)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


@asynccontextmanager
async def node(config: Path, url: str, log: Path) -> AsyncIterator[Node]:
    """Start a node and wait for its ready line; stop it on exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MESH_LOG_LEVEL": "WARNING"}
    env.pop("NATS_URL", None)
    with log.open("ab") as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "mesh.node",
            "--agent",
            "ledger",
            "--config",
            str(config),
            "--nats",
            url,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            env=env,
            cwd=ROOT,
        )
    started = Node(process)
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
        if not line.decode().startswith(READY):
            raise RuntimeError(f"node did not start: {line!r} (see {log})")
        yield started
    finally:
        await started.stop()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    (workdir / "effects").mkdir()
    config = workdir / "mesh.yaml"
    config.write_text(
        CONFIG.format(
            concurrency=args.concurrency,
            ack_wait=args.ack_wait,
            directory=workdir,
            delay=args.delay,
        ),
        encoding="utf-8",
    )
    keys = [f"k{n}" for n in range(args.tasks)]
    replies: dict[str, Reply] = {}
    latencies: list[float] = []
    with NatsServerProcess(jetstream=True) as server:
        async with AsyncExitStack() as stack:
            log = workdir / "nodes.log"
            nodes = list(
                await asyncio.gather(
                    *(stack.enter_async_context(node(config, server.url, log)) for _ in range(4))
                )
            )
            loaded = load_config(config, overrides={"bus": {"url": server.url}}, environ={})
            client = await stack.enter_async_context(Runtime.from_config(loaded, agents=[]))
            slots = asyncio.Semaphore(args.in_flight)
            third = asyncio.Event()

            async def send(key: str) -> None:
                async with slots:
                    sent = time.perf_counter()
                    reply = await client.request("ledger", key, idempotency_key=key)
                    latencies.append(time.perf_counter() - sent)
                replies[key] = reply
                if len(replies) >= len(keys) // 3:
                    third.set()

            async def kill_and_restart() -> int:
                await third.wait()
                victim = nodes[0]
                victim.process.kill()
                await victim.process.wait()
                print(f"killed node {victim.pid} at {len(replies)} answered", flush=True)
                await stack.enter_async_context(node(config, server.url, log))
                print(f"a new node serves at {len(replies)} answered", flush=True)
                return victim.pid

            started = time.perf_counter()
            killer = asyncio.create_task(kill_and_restart())
            await asyncio.gather(*(send(key) for key in keys))
            elapsed = time.perf_counter() - started
            killed = await killer
            raw = await nats.connect(server.url)
            left = (await raw.jetstream().stream_info("MESH_TASKS")).state.messages
            await raw.close()

    runs: dict[str, list[int]] = {}
    for line in (workdir / "runs.log").read_text().splitlines():
        key, pid = line.split()
        runs.setdefault(key, []).append(int(pid))
    effects = set(os.listdir(workdir / "effects"))
    ok = {key for key, reply in replies.items() if reply.error is None}
    again = {key: pids for key, pids in runs.items() if len(pids) > 1}
    unexplained = [key for key, pids in again.items() if killed not in pids[:-1]]
    return {
        "tasks": args.tasks,
        "nodes": 4,
        "in_flight": args.in_flight,
        "agent_delay_s": args.delay,
        "ack_wait_s": args.ack_wait,
        "seconds": round(elapsed, 3),
        "throughput_per_s": round(args.tasks / elapsed, 1),
        "latency_p50_ms": round(statistics.median(latencies) * 1000, 2),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 2),
        "lost": len(set(keys) - ok) + left,
        "duplicated_side_effects": len(keys) - len(effects & set(keys)) + len(effects - set(keys)),
        "rerun_after_kill": len(again) - len(unexplained),
        "rerun_unexplained": len(unexplained),
        "errors": sorted({reply.error.code for reply in replies.values() if reply.error}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--in-flight", type=int, default=500, help="tasks sent at once")
    parser.add_argument("--concurrency", type=int, default=32, help="max_concurrency per node")
    parser.add_argument("--delay", type=float, default=0.01, help="seconds each task takes")
    parser.add_argument("--ack-wait", type=float, default=2.0, help="durable ack_wait (s)")
    parser.add_argument("--output", type=Path, help="also write the results here (JSON)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mesh-durable-") as workdir:
        try:
            results = asyncio.run(run(args, Path(workdir)))
        except (RuntimeError, OSError, TimeoutError) as exc:
            print(f"the run broke: {exc}", file=sys.stderr)
            return 1
    passed = not (results["lost"] or results["duplicated_side_effects"])
    passed = passed and not results["rerun_unexplained"]
    results["verdict"] = "PASS" if passed else "FAIL"
    text = json.dumps(results, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
