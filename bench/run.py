"""The whole benchmark in one run (``make bench``): the mesh beside raw nats-py, raw asyncio and
the frameworks people would use instead, on one ``nats-server``.

Suites (see ``bench/README.md`` for every figure):

- request/reply over NATS at 1, 10, 100, 1,000 in flight: raw nats-py, the mesh (its client,
  and raw clients sending msgpack and JSON to a node), FastStream's NATS RPC;
- in process: bare asyncio, the mesh on the in-memory bus, AutoGen Core's runtime;
- observability: tracing off/on (a discarding batch exporter) x metrics sidecar off/on;
- scatter-gather: the ``parallel`` pattern over 4, 16, 64 branches of a 100 ms agent on both
  buses, and the same fan-out in LangGraph (``bench/scatter.py``);
- scale: 1,000 agents on one server and in memory, a node's cold start, one agent on 1, 2, 4
  node processes (``bench/scale.py``).

Every figure and probe is measured ``--repeat`` times, interleaved round by round. A full run
writes ``bench/results/run-<date>.json`` (and ``latest.json``) and the Markdown tables into
``bench/README.md``; ``--quick`` saves nothing unless ``--output`` is given.

Usage::

    python bench/run.py                  # full run, ~8 min on 2 cores
    python bench/run.py --quick          # smoke run, ~1 min
    python bench/run.py --quick --seconds 0.05 --repeat 1 --agents 50 --output /tmp/run.json
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import bus
import nats
import peers
import scale
import scatter
import yaml
from _harness import (
    HERE,
    ROOT,
    Call,
    Figure,
    Hook,
    Interrupted,
    LimitTarget,
    Probe,
    Results,
    SpeedupTarget,
    Target,
    measure_all,
    targets_json,
)
from _processes import Responder, Switch, ignore_error, interruptible, running, started
from _record import RESULTS, environment, write_results
from _report import markdown, update_readme
from _traced_node import AGENT as TRACED_AGENT
from _traced_node import discarding_tracing
from nats.aio.client import Client

from agents.echo import EchoAgent
from mesh.config import load_config
from mesh.node import READY as NODE_READY
from mesh.runtime import DistributedRuntime, LocalRuntime, Runtime
from mesh.server import NatsServerProcess
from mesh.sidecar import READY as SIDECAR_READY

LEVELS = (1, 10, 100, 1000)
"""Requests in flight of the request/reply figures."""
README = HERE / "README.md"

TARGETS = (
    Target("mesh over NATS, one at a time", "nats_mesh_1", "nats_raw_1", 0.80),
    Target("mesh over NATS, 100 in flight", "nats_mesh_100", "nats_raw_100", 0.60),
    Target("mesh over FastStream RPC, 100 in flight", "nats_mesh_100", "nats_faststream_100", 1.5),
    Target("in-memory bus over bare asyncio", "memory_mesh_1", "memory_asyncio_1", 0.40),
    Target("in-memory bus over AutoGen Core", "memory_mesh_1", "memory_autogen_1", 5.0),
    SpeedupTarget("scatter-gather 16 x 100 ms, in memory", "scatter_memory_16",
                  "scatter_memory_call", 16, 15.0),
    SpeedupTarget("scatter-gather 16 x 100 ms, NATS", "scatter_nats_16", "scatter_nats_call",
                  16, 15.0),
    LimitTarget("node cold start, seconds", "node_cold_start_s", 1.0),
    LimitTarget("memory per idle agent, fleet on NATS, KiB", "fleet_nats_per_agent_kb", None),
    LimitTarget("memory per idle agent, fleet in memory, KiB", "fleet_memory_per_agent_kb", None),
    Target("traced, sidecar on, one at a time", "nats_traced_1", "nats_raw_1", 0.60),
)  # fmt: skip
"""Issue 11's targets, and the tracing target of ``bench/bus.py``."""

BASELINES = {
    "fleet_nats_100": "nats_mesh_100",
    "fleet_memory_100": "memory_mesh_100",
    **{f"nodes_{count}_100": "nodes_1_100" for count in scale.NODES},
}
"""What each scale figure is compared with in the report."""


@dataclass(frozen=True)
class Settings:
    """How long and how much a run measures."""

    seconds: float
    warmup: float
    repeat: int
    quick: bool
    agents: int
    """Agents in a fleet."""
    levels: tuple[int, ...] = LEVELS


def _config(log_dir: Path) -> Path:
    """The YAML of the benchmark's mesh (scatter-gather and scale agents), for the nodes."""
    path = log_dir / "mesh.yaml"
    agents = {**scatter.agents_config(), **scale.agents_config()}
    path.write_text(yaml.safe_dump({"defaults": {"timeout": 30}, "agents": agents}))
    return path


def _request_reply(
    client: Client,
    remote: Runtime,
    traced: Runtime,
    faststream: Call | None,
    *,
    levels: Sequence[int],
    on: Hook,
    off: Hook,
) -> tuple[list[Figure], list[Figure]]:
    """The request/reply figures over NATS with the sidecar on, and those with it off."""
    figures: list[Figure] = []
    scenarios = [
        ("nats_raw", "raw nats-py -> raw responder", bus.raw_nats_call(client)),
        ("nats_mesh", "runtime.call -> node (msgpack)", bus.mesh_call(remote)),
        ("nats_node_msgpack", "nats-py msgpack -> node", bus.node_msgpack_call(client)),
        ("nats_node_json", "nats-py JSON -> node", bus.node_json_call(client)),
    ]
    if faststream is not None:
        scenarios.append(("nats_faststream", "FastStream broker.request", faststream))
    for key, label, call in scenarios:
        figures += [Figure(f"{key}_{level}", label, level, call, before=on) for level in levels]
    traced_call = bus.mesh_call(traced, TRACED_AGENT)
    observed = [level for level in (1, 100) if level in levels]
    traced_label = "the same, both sides traced"
    figures += [
        Figure(f"nats_traced_{level}", traced_label, level, traced_call, before=on)
        for level in observed
    ]
    unobserved = [
        Figure(f"{key}_nosidecar_{level}", f"{label}, sidecar off", level, call, before=off)
        for key, label, call in [
            ("nats_mesh", "runtime.call -> node", bus.mesh_call(remote)),
            ("nats_traced", "traced runtime.call -> traced node", traced_call),
        ]
        for level in observed
    ]
    return figures, unobserved


async def run(url: str, settings: Settings) -> tuple[list[Figure], list[Probe]]:
    """Start every process and runtime on the server at ``url``, then measure everything.

    Raises:
        Interrupted, asyncio.CancelledError: Ctrl-C.
    """
    async with AsyncExitStack() as stack:
        stop = await stack.enter_async_context(interruptible())
        log_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mesh-bench-")))
        config = _config(log_dir)
        python = sys.executable
        responders = [
            Responder("raw-responder", [python, str(HERE / "_echo_raw.py"), url], bus.RAW_READY),
            Responder(
                "mesh-node", [python, "-m", "mesh.node", "--agent", "echo", "--nats", url],
                NODE_READY,
            ),
            Responder("traced-node", [python, str(HERE / "_traced_node.py"), url], NODE_READY),
            *scatter.node_responders(config, url),
            *scale.node_responders(config, url),
            scale.fleet_responder(url, settings.agents),
        ]  # fmt: skip
        faststream = peers.installed("faststream")
        if faststream:
            command = [python, str(HERE / "_faststream_echo.py"), url]
            responders.append(Responder("faststream", command, peers.FASTSTREAM_READY))
        begun = time.perf_counter()
        await stack.enter_async_context(running(responders, log_dir=log_dir))
        print(
            f"{len(responders)} processes ready in {time.perf_counter() - begun:.1f} s", flush=True
        )
        # The sidecar counts every task's telemetry, as in production, except for the
        # figures measuring what it costs.
        sidecar = Switch(
            Responder(
                "sidecar",
                [python, "-m", "mesh.sidecar", "--nats", url, "--port", "0"],
                SIDECAR_READY,
            ),
            log_dir=log_dir,
        )
        stack.push_async_callback(sidecar.off)
        await sidecar.on()

        client = await nats.connect(
            url, connect_timeout=5, max_reconnect_attempts=0, error_cb=ignore_error
        )
        stack.push_async_callback(client.close)
        remote = await stack.enter_async_context(
            started(DistributedRuntime(url, name="bench", discovery=False))
        )
        tracing = discarding_tracing()
        traced = await stack.enter_async_context(
            started(DistributedRuntime(url, name="bench-traced", discovery=False, tracing=tracing))
        )
        local = LocalRuntime(name="bench", discovery=False)
        local.register(EchoAgent())
        await stack.enter_async_context(started(local))
        mesh_config = load_config(config, environ={})
        in_memory = Runtime.from_config(
            mesh_config, agents=[scatter.SLEEPER, *map(scatter.coordinator, scatter.SIZES)]
        )
        await stack.enter_async_context(started(in_memory))
        fleet = await stack.enter_async_context(started(scale.memory_fleet(settings.agents)))

        on, off = sidecar.on, sidecar.off
        faststream_call = None
        if faststream:
            faststream_call = await stack.enter_async_context(
                peers.faststream_call(url, bus.PAYLOAD)
            )
        nats_figures, unobserved = _request_reply(
            client, remote, traced, faststream_call, levels=settings.levels, on=on, off=off
        )

        bare = await stack.enter_async_context(bus.bare_asyncio_call())
        memory_figures = [
            Figure("memory_asyncio_1", "bare asyncio queue + future", 1, bare),
            Figure("memory_mesh_1", "runtime.call, in-memory bus", 1, bus.mesh_call(local)),
            Figure("memory_mesh_100", "runtime.call, in-memory bus", 100, bus.mesh_call(local)),
            Figure("memory_bus_1", "InMemoryBus request, no envelope", 1,
                   await bus.memory_bus_call(local.bus)),
        ]  # fmt: skip
        if peers.installed("autogen-core"):
            call = await stack.enter_async_context(peers.autogen_call(bus.PAYLOAD))
            memory_figures.append(Figure("memory_autogen_1", "AutoGen Core send_message", 1, call))

        langgraph = (
            peers.langgraph_fanout(scatter.LATENCY) if peers.installed("langgraph") else None
        )
        scatter_figures = scatter.figures(
            {"memory": in_memory, "nats": remote}, langgraph=langgraph, hooks={"nats": on}
        )
        scale_figures = scale.figures(
            remote=remote, memory=fleet, client=client, agents=settings.agents, before=on
        )
        probes = [
            scale.cold_start_probe(url, config, client, log_dir=log_dir, before=on),
            scale.fleet_probe(url, settings.agents, log_dir=log_dir, before=on),
        ]
        # In each round: sidecar on, in memory, sidecar off, then the probes (sidecar on).
        figures = [*nats_figures, *scatter_figures, *scale_figures, *memory_figures, *unobserved]
        await measure_all(
            figures,
            seconds=settings.seconds,
            warmup=settings.warmup,
            repeat=settings.repeat,
            stop=stop,
            probes=probes,
        )
        return figures, probes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="Measure the mesh beside raw NATS, raw asyncio and peer frameworks.",
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: short windows, 2 rounds")
    parser.add_argument("--repeat", type=int, help="repetitions of each figure (default: 5)")
    parser.add_argument("--seconds", type=float, help="measurement window (default: 1.5)")
    parser.add_argument(
        "--agents", type=int, help=f"agents in a fleet (default: {scale.FLEET}; quick: 100)"
    )
    parser.add_argument("--output", type=Path, help="also write the results (JSON) here")
    parser.add_argument(
        "--readme",
        type=Path,
        help="write the tables into this Markdown file, between its markers (default:"
        " bench/README.md in a full run, none in a quick one)",
    )
    parser.add_argument("--no-readme", action="store_true", help="write the tables nowhere")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; the exit code is 0 whether the targets pass or not (1 if the run failed)."""
    parser = _parser()
    args = parser.parse_args(argv)
    quick = args.quick
    repeat = args.repeat if args.repeat is not None else (2 if quick else 5)
    seconds = args.seconds if args.seconds is not None else (0.2 if quick else 1.5)
    agents = args.agents if args.agents is not None else (100 if quick else scale.FLEET)
    if repeat < 1 or seconds <= 0 or agents < 1:
        parser.error("--repeat, --seconds and --agents must be positive")
    settings = Settings(seconds, min(seconds, 0.5), repeat, quick, agents)
    command = "python bench/run.py" + (" " + " ".join(argv or sys.argv[1:])).rstrip()
    begun = dt.datetime.now().astimezone()
    about: dict[str, Any] = {"date": begun.isoformat(timespec="seconds"), **environment()}
    versions = about["versions"]
    print(
        f"benchmark: {repeat} x {seconds:g} s per figure; agent-mesh {versions['agent-mesh']}"
        f" ({versions['git']}), {versions['nats-server']}, Python"
        f" {about['machine']['python']}, {about['machine']['cpu_count']} CPUs",
        flush=True,
    )
    try:
        with NatsServerProcess() as server:
            print(f"nats-server at {server.url}", flush=True)
            figures, probes = asyncio.run(run(server.url, settings))
    except (KeyboardInterrupt, asyncio.CancelledError, Interrupted):
        print("bench: interrupted", file=sys.stderr)
        return 130
    about["machine"]["load_average_after"] = os.getloadavg()
    results = Results.of(figures, probes)
    name = f"run-{begun:%Y-%m-%dT%H%M%S}"
    saved = args.output if quick else RESULTS / f"{name}.json"
    table = markdown(
        results,
        TARGETS,
        about=about,
        settings=asdict(settings),
        levels=settings.levels,
        baselines=BASELINES,
        source=_shown(saved) if saved else "quick run, not saved",
    )
    print()
    print(table)
    judged = [target for target in TARGETS if _measured(target, results)]
    document = {
        **about,
        "command": command,
        "settings": asdict(settings),
        "figures": {figure.key: figure.to_json() | {"suite": figure.suite} for figure in figures},
        "probes": results.probes_json(),
        "targets": targets_json(judged, results),
    }
    if args.output is not None:
        args.output.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nresults: {args.output}")
    if not quick:
        path = write_results(document, name)
        print(f"\nresults: {_shown(path)}")
    readme = args.readme or (None if quick else README)
    if readme is not None and not args.no_readme:
        update_readme(readme, table, command)
        print(f"table: {_shown(readme)}")
    if quick and args.output is None:
        print("\nquick run: results not saved")
    return 0


def _measured(target: Any, results: Results) -> bool:
    try:
        target.judge(results)
    except KeyError:  # a peer framework that is not installed
        return False
    return True


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it is inside it."""
    resolved = path.resolve()
    return str(resolved.relative_to(ROOT)) if resolved.is_relative_to(ROOT) else str(path)


if __name__ == "__main__":
    sys.exit(main())
