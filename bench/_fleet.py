"""A fleet of echo agents in one runtime: what an idle agent costs in memory and at start-up.

It measures its resident memory three times: with a runtime hosting one echo agent (so every
import and lazy start-up cost is paid), with a second such runtime (the fixed cost of a
runtime: its connection, its buffers), and with a third one (default settings, discovery on,
as a node has) hosting ``AGENTS`` echo agents named ``fleet-0000``, ``fleet-0001``, ... The
memory per agent is the third growth less the fixed cost, divided by ``AGENTS``. It prints::

    fleet ready {"bus": "nats", "agents": 1000, "start_s": ..., "runtime_bytes": ...,
                 "fleet_bytes": ..., "per_agent_bytes": ...}

then, on NATS, serves the fleet until SIGTERM or SIGINT; with ``--once`` (always in memory,
where no other process could reach it) it exits.

Usage::

    python bench/_fleet.py 1000 --nats nats://127.0.0.1:4222
    python bench/_fleet.py 1000 --once
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import resource
import signal
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack

import anyio

from agents.echo import EchoAgent
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime

READY = "fleet ready"
PREFIX = "fleet-"


def agent_names(count: int) -> list[str]:
    """The names of a fleet of ``count`` agents."""
    return [f"{PREFIX}{index:04d}" for index in range(count)]


def resident_bytes() -> int:
    """This process's resident memory (``VmRSS``; the peak where /proc is missing)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _runtime(url: str | None, name: str) -> Runtime:
    return DistributedRuntime(url, name=name) if url else LocalRuntime(name=name)


async def serve(count: int, url: str | None, *, once: bool) -> None:
    """Start the fleet, print its figures, and serve until a signal (or return, ``once``)."""
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with AsyncExitStack() as stack:
            rss = []
            for index in range(2):
                single = _runtime(url, f"fleet-single-{index}")
                single.register(EchoAgent(name=f"fleet-single-{index}"))
                await stack.enter_async_context(single)
                gc.collect()
                rss.append(resident_bytes())
            fleet = _runtime(url, "fleet")
            for name in agent_names(count):
                fleet.register(EchoAgent(name=name))
            started = time.perf_counter()
            await stack.enter_async_context(fleet)
            start_s = time.perf_counter() - started
            gc.collect()
            runtime_bytes = rss[1] - rss[0]
            fleet_bytes = resident_bytes() - rss[1]
            figures = {
                "bus": "nats" if url else "memory",
                "agents": count,
                "start_s": start_s,
                "runtime_bytes": runtime_bytes,
                "fleet_bytes": fleet_bytes,
                "per_agent_bytes": (fleet_bytes - runtime_bytes) / count,
            }
            print(f"{READY} {json.dumps(figures)}", flush=True)
            if not once:
                async for _ in signals:
                    break


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python bench/_fleet.py", description=__doc__)
    parser.add_argument("agents", type=int, help="how many echo agents")
    parser.add_argument("--nats", help="NATS URL (default: the in-memory bus, with --once)")
    parser.add_argument("--once", action="store_true", help="print the figures and exit")
    args = parser.parse_args(argv)
    if args.agents < 1 or not (args.nats or args.once):
        parser.error("give a positive number of agents, and --nats URL unless --once")
    anyio.run(functools.partial(serve, args.agents, args.nats, once=args.once))
    return 0


if __name__ == "__main__":
    sys.exit(main())
