"""Scatter-gather: the mesh's ``parallel`` pattern over 4, 16 and 64 branches of a 100 ms agent.

Each branch calls ``sleeper``, a `FixedLatencyAgent` (``latency`` seconds, then its input back)
allowed to run all the branches at once. The coordinators ``fan4``, ``fan16``, ``fan64`` are
``parallel`` patterns whose branches all call it. In memory they all run in this process
(`Runtime.from_config`); over NATS each is a ``python -m mesh.node`` of the same YAML, and this
process calls the coordinator by name. LangGraph does the same fan-out with ``Send``.

Each figure is one run of the fan-out at a time (its p50 is the run's wall time). Beside them,
``*_call`` is one call of the branch alone (one task to ``sleeper``; for LangGraph a graph
of one branch). Sequential is N of those one after the other, so the speedup is
``N * call p50 / fan-out p50`` and the coordinator's overhead per branch is
``(fan-out p50 - call p50) / N``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _harness import Call, Figure, Hook, Results, Spread, speedup
from _processes import Responder, node

from mesh.runtime import Runtime

SIZES = (4, 16, 64)
LATENCY = 0.1
"""Seconds each branch takes."""
SLEEPER = "sleeper"
PAYLOAD = "hello"
TIMEOUT = 30.0
"""Seconds one fan-out may take before the run fails."""
SUITE = "scatter"


def coordinator(branches: int) -> str:
    """The name of the ``parallel`` agent with ``branches`` branches."""
    return f"fan{branches}"


def agents_config(sizes: Sequence[int] = SIZES, latency: float = LATENCY) -> dict[str, Any]:
    """The YAML ``agents`` of the scatter-gather mesh: the sleeper and a coordinator per size."""
    agents: dict[str, Any] = {
        SLEEPER: {
            "kind": "_agents:FixedLatencyAgent",
            "description": "Waits a fixed time, then replies with its input.",
            "latency": latency,
            "max_concurrency": max(sizes),
        }
    }
    for size in sizes:
        agents[coordinator(size)] = {"kind": "parallel", "branches": [SLEEPER] * size}
    return agents


def node_responders(config: Path, url: str, sizes: Sequence[int] = SIZES) -> list[Responder]:
    """One ``python -m mesh.node`` per agent of the scatter-gather mesh."""
    names = [SLEEPER, *(coordinator(size) for size in sizes)]
    return [node(f"node-{name}", agent=name, config=config, url=url) for name in names]


def fanout_call(runtime: Runtime, branches: int) -> Call:
    """One run of the ``parallel`` coordinator; every branch must have answered."""
    agent = coordinator(branches)

    async def call() -> None:
        output = await runtime.call(agent, PAYLOAD, timeout=TIMEOUT)
        succeeded = output["succeeded"] if isinstance(output, dict) else None
        if not isinstance(succeeded, list) or len(succeeded) != branches or output["failed"]:
            raise RuntimeError(f"{agent} did not gather {branches} branches: {output!r}")

    return call


def single_call(runtime: Runtime) -> Call:
    """One call of the sleeper: a branch on its own."""

    async def call() -> None:
        output = await runtime.call(SLEEPER, PAYLOAD, timeout=TIMEOUT)
        if output != PAYLOAD:
            raise RuntimeError(f"{SLEEPER} answered {output!r}")

    return call


def figures(
    runtimes: Mapping[str, Runtime],
    *,
    langgraph: Callable[[int], Call] | None,
    hooks: Mapping[str, Hook] | None = None,
    sizes: Sequence[int] = SIZES,
) -> list[Figure]:
    """The fan-outs on each bus (``memory``, ``nats``), and LangGraph's if it is installed.

    Args:
        runtimes: The runtime calling the coordinators, by bus.
        langgraph: `peers.langgraph_fanout`, or ``None`` without LangGraph.
        hooks: What the figures of a bus run before each window (see `Figure.before`).
        sizes: The numbers of branches.
    """
    hooks = hooks or {}
    built = []
    for bus, runtime in runtimes.items():
        before = hooks.get(bus)
        built.append(
            Figure(
                f"scatter_{bus}_call",
                f"one call to {SLEEPER}, {bus}",
                1,
                single_call(runtime),
                before=before,
            )
        )
        built += [
            Figure(
                f"scatter_{bus}_{size}",
                f"parallel of {size}, {bus}",
                1,
                fanout_call(runtime, size),
                before=before,
            )
            for size in sizes
        ]
    if langgraph is not None:
        built.append(Figure("scatter_langgraph_call", "LangGraph, one branch", 1, langgraph(1)))
        built += [
            Figure(f"scatter_langgraph_{size}", f"LangGraph Send x {size}", 1, langgraph(size))
            for size in sizes
        ]
    for figure in built:
        figure.suite = SUITE
    return built


@dataclass(frozen=True)
class FanOutRow:
    """The derived figures of one fan-out."""

    framework: str
    branches: int
    wall_ms: Spread
    call_ms: float
    speedup: Spread
    """Over N calls one after the other: the median, and the range of the rounds' own."""
    ideal_speedup: float
    """Over N times the branch latency itself (a sequential loop with no cost per call)."""
    overhead_per_branch_ms: float


def rows(results: Results, *, sizes: Sequence[int] = SIZES) -> list[FanOutRow]:
    """The derived figures of every fan-out measured."""
    found = []
    for framework in ("memory", "nats", "langgraph"):
        single = results.figures.get(f"scatter_{framework}_call")
        if single is None:
            continue
        call_us = single.p50_us().median
        for size in sizes:
            fanout = results.figures[f"scatter_{framework}_{size}"]
            wall = fanout.p50_us()
            paired = [
                speedup(size, s.p50_us, f.p50_us)
                for f, s in zip(fanout.runs, single.runs, strict=True)
            ]
            found.append(
                FanOutRow(
                    framework=framework,
                    branches=size,
                    wall_ms=Spread(wall.median / 1e3, wall.min / 1e3, wall.max / 1e3),
                    call_ms=call_us / 1e3,
                    speedup=Spread(speedup(size, call_us, wall.median), min(paired), max(paired)),
                    ideal_speedup=size * LATENCY * 1e6 / wall.median,
                    overhead_per_branch_ms=(wall.median - call_us) / size / 1e3,
                )
            )
    return found
