"""Where the time goes: cProfile of both ends of a mesh round trip, and of the in-memory path.

Three profiles, each under load for ``--seconds``:

- ``client``: this process calling ``runtime.call("echo", "hello")`` over NATS with
  ``--in-flight`` requests in flight (`DistributedRuntime`, the same as ``nats_mesh_N``);
- ``node``: the node answering them, ``python -m mesh.node --agent echo`` under cProfile
  (``bench/_profiled_node.py``, imports left out; it writes its profile when SIGTERM stops it);
- ``memory``: ``LocalRuntime.call`` one at a time (client, bus and host in this process).

The profiles count CPU time (`time.process_time`): on a busy machine wall time mostly shows a
process waiting for a core (in ``socket.send``, which wakes the other end). For each it prints
the functions with the most CPU time of their own (``tottime``) and, to see which mesh step
pays for it, the mesh functions by cumulative time. cProfile slows everything down several
times, evenly enough that the shares hold; ``bench/run.py`` measures without it.

Usage::

    python bench/hot_paths.py                       # 5 s each, 100 in flight, top 25
    python bench/hot_paths.py --seconds 10 --top 40 --save /tmp/profiles
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import bus
from _harness import HERE, measure
from _processes import Responder, spawn, started, stop_process

from agents.echo import EchoAgent
from mesh.node import READY as NODE_READY
from mesh.runtime import DistributedRuntime, LocalRuntime
from mesh.server import NatsServerProcess


def _table(profile: pstats.Stats, sort: str, top: int, *restrict: str) -> str:
    out = io.StringIO()
    profile.stream = out  # type: ignore[attr-defined]
    profile.sort_stats(sort).print_stats(*restrict, top)
    lines = out.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    return "\n".join(lines[start:]).rstrip()


def show(name: str, path: Path, *, top: int, requests: int) -> None:
    """Print one profile: own time, then the mesh's functions by cumulative time."""
    stats = pstats.Stats(str(path))
    total = stats.total_tt  # type: ignore[attr-defined]
    per_request = total / requests * 1e6 if requests else float("nan")
    print(
        f"\n== {name}: {requests:,} requests, {total:.2f} s of CPU profiled,"
        f" {per_request:.0f} us each"
    )
    print(f"-- by own time (tottime), top {top}")
    print(_table(stats, "tottime", top))
    print(f"-- mesh functions by cumulative time, top {top}")
    print(_table(stats, "cumulative", top, r"/(mesh|agents)/"))


async def profile(url: str, out: Path, *, seconds: float, in_flight: int) -> dict[str, int]:
    """Write ``client.prof``, ``node.prof`` and ``memory.prof`` into ``out``.

    Returns:
        The requests made in each profile.
    """
    stop = asyncio.Event()
    node_prof = out / "node.prof"
    command = [sys.executable, str(HERE / "_profiled_node.py"), str(node_prof)]
    node = Responder("node", [*command, "--agent", "echo", "--nats", url], NODE_READY)
    spawned = await spawn(node, log_dir=out)
    requests: dict[str, int] = {}
    try:
        async with started(DistributedRuntime(url, name="profile", discovery=False)) as remote:
            call = bus.mesh_call(remote)
            await measure(call, seconds=0.5, in_flight=in_flight, stop=stop)  # warm
            with cProfile.Profile(time.process_time) as client:
                run = await measure(call, seconds=seconds, in_flight=in_flight, stop=stop)
            client.dump_stats(out / "client.prof")
            requests["client"] = requests["node"] = run.requests
    finally:
        await stop_process(spawned.process)  # SIGTERM: the node exits and writes its profile
    local = LocalRuntime(name="profile", discovery=False)
    local.register(EchoAgent())
    async with started(local):
        call = bus.mesh_call(local)
        await measure(call, seconds=0.5, in_flight=1, stop=stop)
        with cProfile.Profile(time.process_time) as memory:
            run = await measure(call, seconds=seconds, in_flight=1, stop=stop)
        memory.dump_stats(out / "memory.prof")
        requests["memory"] = run.requests
    return requests


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python bench/hot_paths.py", description=__doc__)
    parser.add_argument("--seconds", type=float, default=5.0, help="profiled window (default 5)")
    parser.add_argument("--in-flight", type=int, default=100, help="over NATS (default 100)")
    parser.add_argument("--top", type=int, default=25, help="rows per table (default 25)")
    parser.add_argument("--save", type=Path, help="keep the .prof files in this directory")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mesh-profile-") as tmp:
        out = Path(tmp)
        with NatsServerProcess() as server:
            requests = asyncio.run(
                profile(server.url, out, seconds=args.seconds, in_flight=args.in_flight)
            )
        for name in ("client", "node", "memory"):
            show(name, out / f"{name}.prof", top=args.top, requests=requests[name])
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            for name in ("client", "node", "memory"):
                shutil.copy(out / f"{name}.prof", args.save / f"{name}.prof")
            print(f"\nprofiles: {args.save} (python -m pstats {args.save}/node.prof)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
