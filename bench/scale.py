"""Scale: a fleet of 1,000 agents, a node's cold start, and one agent on 1, 2 and 4 nodes.

- ``fleet_*``: ``bench/_fleet.py`` hosts ``N`` echo agents in one runtime; over NATS it is a
  process this run calls with tasks spread over the agents (``runtime.call`` to the next name
  of a shuffled cycle, 100 in flight); in memory the fleet runs in this process. The probe
  ``fleet_*_per_agent_kb`` starts a fresh fleet process each round and reads its memory
  growth per agent, ``fleet_*_start_s`` the time its runtime took to start.
- ``node_cold_start_s``: from just before ``python -m mesh.node --agent cold`` is started to
  the first reply it sends (the request goes out as soon as the node prints its ready line);
  ``node_ready_s`` is the part up to the ready line. A fresh process every round; Python's
  bytecode cache is warm.
- ``nodes_<n>_100``: the agent ``scale<n>`` (an echo) served by ``n`` node processes of one
  queue group, driven by a raw nats-py client (msgpack, 100 in flight) so that the client is
  not the bottleneck; on two cores the nodes, the server and the client share the CPUs.
"""

from __future__ import annotations

import itertools
import json
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgpack
from _fleet import READY as FLEET_READY
from _fleet import agent_names
from _harness import HERE, Call, Figure, Hook, Probe, Quantity
from _processes import Responder, node, spawn, stop_process
from nats.aio.client import Client

from agents.echo import EchoAgent
from mesh.runtime import LocalRuntime, Runtime
from mesh.subjects import task_subject

SUITE = "scale"
FLEET = 1000
"""Agents in a fleet."""
NODES = (1, 2, 4)
"""Node processes serving one agent."""
IN_FLIGHT = 100
PAYLOAD = "hello"
REQUEST_TIMEOUT = 5.0
MSGPACK_HEADERS = {"Content-Type": "application/msgpack"}
COLD = "cold"


def scaled(nodes: int) -> str:
    """The agent served by ``nodes`` processes."""
    return f"scale{nodes}"


def agents_config(nodes: Sequence[int] = NODES) -> dict[str, Any]:
    """The YAML ``agents`` of this suite: the cold-started echo, and one echo per node count."""
    agents: dict[str, Any] = {COLD: {"kind": "echo"}}
    for count in nodes:
        agents[scaled(count)] = {"kind": "echo"}
    return agents


def node_responders(config: Path, url: str, nodes: Sequence[int] = NODES) -> list[Responder]:
    """``n`` node processes for each agent ``scale<n>``."""
    return [
        node(f"node-{scaled(count)}-{index}", agent=scaled(count), config=config, url=url)
        for count in nodes
        for index in range(count)
    ]


def fleet_responder(url: str, agents: int) -> Responder:
    """The fleet that serves over NATS for the whole run."""
    command = [sys.executable, str(HERE / "_fleet.py"), str(agents), "--nats", url]
    return Responder("fleet-nats", command, FLEET_READY)


def _check(output: object) -> None:
    if output != PAYLOAD:
        raise RuntimeError(f"the echo answered {output!r}, not {PAYLOAD!r}")


def spread_call(runtime: Runtime, agents: int) -> Call:
    """``runtime.call`` to the fleet's agents in turn (a shuffled cycle: every agent is used,
    none twice in a row, and picking one costs a ``next``)."""
    names = agent_names(agents)
    random.Random(0).shuffle(names)
    turns = itertools.cycle(names)

    async def call() -> None:
        _check(await runtime.call(next(turns), PAYLOAD, timeout=REQUEST_TIMEOUT))

    return call


def node_msgpack_call(client: Client, agent: str) -> Call:
    """A raw nats-py client sending a msgpack task to ``agent``'s nodes."""
    subject = task_subject(agent)
    data = msgpack.packb({"input": PAYLOAD})

    async def call() -> None:
        reply = await client.request(
            subject, data, timeout=REQUEST_TIMEOUT, headers=MSGPACK_HEADERS
        )
        _check(msgpack.unpackb(reply.data)["output"])

    return call


def memory_fleet(agents: int) -> LocalRuntime:
    """A runtime (not started) on the in-memory bus with a fleet of echo agents."""
    runtime = LocalRuntime(name="bench-fleet")
    for name in agent_names(agents):
        runtime.register(EchoAgent(name=name))
    return runtime


def figures(
    *,
    remote: Runtime,
    memory: Runtime,
    client: Client,
    agents: int,
    nodes: Sequence[int] = NODES,
    before: Hook | None = None,
) -> list[Figure]:
    """The fleets with tasks spread over them, and the agent on 1, 2, 4 nodes."""
    built = [
        Figure(
            f"fleet_nats_{IN_FLIGHT}",
            f"runtime.call over {agents} agents, NATS",
            IN_FLIGHT,
            spread_call(remote, agents),
            suite=SUITE,
            before=before,
        ),
        Figure(
            f"fleet_memory_{IN_FLIGHT}",
            f"runtime.call over {agents} agents, memory",
            IN_FLIGHT,
            spread_call(memory, agents),
            suite=SUITE,
        ),
    ]
    built += [
        Figure(
            f"nodes_{count}_{IN_FLIGHT}",
            f"nats-py msgpack -> {count} node(s)",
            IN_FLIGHT,
            node_msgpack_call(client, scaled(count)),
            suite=SUITE,
            before=before,
        )
        for count in nodes
    ]
    return built


def fleet_probe(url: str, agents: int, *, log_dir: Path, before: Hook | None = None) -> Probe:
    """A fresh fleet process per bus each round: memory per idle agent, and start-up time."""

    async def sample() -> Mapping[str, float]:
        sampled: dict[str, float] = {}
        for bus, extra in (("nats", ["--nats", url]), ("memory", [])):
            command = [sys.executable, str(HERE / "_fleet.py"), str(agents), "--once", *extra]
            spawned = await spawn(
                Responder(f"fleet-{bus}-once", command, FLEET_READY), log_dir=log_dir
            )
            await stop_process(spawned.process)
            figures = json.loads(spawned.line.removeprefix(FLEET_READY))
            sampled[f"fleet_{bus}_per_agent_kb"] = figures["per_agent_bytes"] / 1024
            sampled[f"fleet_{bus}_start_s"] = figures["start_s"]
        return sampled

    quantities = tuple(
        quantity
        for bus, name in (("nats", "NATS"), ("memory", "in memory"))
        for quantity in (
            Quantity(f"fleet_{bus}_per_agent_kb", f"memory per idle agent, {name}", "KiB"),
            Quantity(
                f"fleet_{bus}_start_s", f"start of a runtime with {agents} agents, {name}", "s"
            ),
        )
    )
    return Probe(quantities, sample, suite=SUITE, before=before)


def cold_start_probe(
    url: str, config: Path, client: Client, *, log_dir: Path, before: Hook | None = None
) -> Probe:
    """A fresh node each round: process start to ready line, and to its first reply."""
    responder = node("node-cold", agent=COLD, config=config, url=url)
    first = node_msgpack_call(client, COLD)

    async def sample() -> Mapping[str, float]:
        # The same clock as `spawn`'s: both start just before the process does.
        started = time.perf_counter()
        spawned = await spawn(responder, log_dir=log_dir)
        try:
            await first()
            replied = time.perf_counter() - started
        finally:
            await stop_process(spawned.process)
        return {"node_ready_s": spawned.seconds, "node_cold_start_s": replied}

    quantities = (
        Quantity("node_cold_start_s", "node cold start: process start to first reply", "s"),
        Quantity("node_ready_s", "node start: process start to ready line", "s"),
    )
    return Probe(quantities, sample, suite=SUITE, before=before)
